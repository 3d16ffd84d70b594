"""Issue 22 item 10: half-sent requests are closed after SMARTLOGS_READ_TIMEOUT, and a client
that drops mid-body is an INFO line at most (a real uvicorn server, as `smartlogs up` runs it)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from ingest_api.app import create_app
from ingest_api.timeouts import http_protocol
from smartlogs.settings import Settings

TIMEOUT = 1.0


@pytest.fixture
def server(tmp_path):
    import uvicorn

    settings = Settings(data_dir=tmp_path, syslog_port=0, read_timeout=TIMEOUT)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False,
                            http=http_protocol(settings.read_timeout), lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield sock.getsockname()
    srv.should_exit = True
    thread.join(15)


def _closed_within(conn: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(the server closed the connection within ``seconds``, what it sent before)."""
    conn.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return True, got
            got += chunk
    except (socket.timeout, TimeoutError):
        return False, got
    except ConnectionResetError:
        return True, got


def test_half_sent_headers_are_closed_after_the_read_timeout(server):
    conns = []
    for _ in range(5):
        c = socket.create_connection(server)
        c.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: text/pl")
        conns.append(c)
    idle = socket.create_connection(server)  # nothing at all: also bounded
    conns.append(idle)
    t0 = time.monotonic()
    for c in conns:
        closed, _ = _closed_within(c, TIMEOUT + 10)
        assert closed, "a connection with half-sent headers was never closed"
        c.close()
    assert time.monotonic() - t0 < TIMEOUT + 10


def test_a_dribbling_client_cannot_reset_the_header_timer(server):
    c = socket.create_connection(server)
    start = time.monotonic()
    closed = False
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
        try:
            c.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.1)  # each byte within the keep-alive time, the whole far beyond the bound
        if time.monotonic() - start > TIMEOUT + 10:
            break
    if not closed:
        closed, _ = _closed_within(c, 0.5)
    c.close()
    assert closed and time.monotonic() - start < TIMEOUT + 10


def test_a_stalled_body_is_answered_408_and_closed(server):
    c = socket.create_connection(server)
    c.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 100\r\n\r\nfirst line\n")
    closed, got = _closed_within(c, TIMEOUT + 10)
    c.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b'"request_timeout"' in got and b"SMARTLOGS_READ_TIMEOUT" in got
    assert closed


def test_a_client_that_drops_mid_body_is_an_info_line_not_an_error(server, caplog):
    caplog.set_level(logging.DEBUG)
    for path, ctype in (("/ingest", "text/plain"), ("/idx/_bulk", "application/x-ndjson"),
                        ("/loki/api/v1/push", "application/json"), ("/v1/logs", "application/json")):
        c = socket.create_connection(server)
        c.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                  "Content-Length: 100000\r\n\r\n".encode() + b"x" * 1000)
        time.sleep(0.2)
        c.close()
    deadline = time.monotonic() + 10
    while sum("went away" in r.getMessage() for r in caplog.records) < 4:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    time.sleep(0.3)
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [(r.levelname, r.name, r.getMessage()) for r in bad]
    # and the server goes on answering
    c = socket.create_connection(server)
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, got = _closed_within(c, 10)
    c.close()
    assert got.startswith(b"HTTP/1.1 200")
