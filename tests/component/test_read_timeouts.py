"""Issue 22 item 10: half-sent requests are closed after SMARTLOGS_READ_TIMEOUT, and a client
that drops mid-body is an INFO line at most (a real uvicorn server, as `smartlogs up` runs it)."""

from __future__ import annotations

import asyncio
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


def _through_read_timeout(receive, timeout: float = 5.0):
    """The message an app behind ``ReadTimeoutMiddleware`` gets from its first receive."""
    from ingest_api.timeouts import ReadTimeoutMiddleware

    got = []

    async def app(scope, receive, send):
        got.append(await receive())

    async def main():
        mw = ReadTimeoutMiddleware(app, timeout=timeout)
        await mw({"type": "http", "method": "POST", "path": "/ingest"}, receive, None)

    asyncio.run(main())
    return got[0]


def test_a_body_already_here_is_taken_without_a_timer():
    """A one-line POST's body arrives with its headers: the receive does not wait, and no
    timer is set and cancelled for it (before: an ``asyncio.timeout`` around every first
    receive); a receive that has to wait is still bounded (the 408 tests above)."""
    import sys

    message = {"type": "http.request", "body": b"a line\n", "more_body": False}
    timers = []

    async def receive():
        return message

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith("asyncio/timeouts.py"):
            timers.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        got = _through_read_timeout(receive)
    finally:
        sys.setprofile(None)
    assert got is message
    assert timers == []


def test_a_receive_that_waits_gets_its_message_and_its_cancellation_through():
    """The receive that suspends is resumed with what it waited for, under the bound; a
    cancellation reaches it (it can clean up) and ends the request as before."""
    message = {"type": "http.request", "body": b"late\n", "more_body": False}
    cleaned = []

    async def late_receive():
        await asyncio.sleep(0.01)
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, message)
        return await fut

    assert _through_read_timeout(late_receive) is message

    async def endless_receive():
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    async def cancel_it():
        from ingest_api.timeouts import ReadTimeoutMiddleware

        async def app(scope, receive, send):
            await receive()

        task = asyncio.create_task(ReadTimeoutMiddleware(app, timeout=60)(
            {"type": "http", "method": "POST", "path": "/ingest"}, endless_receive, None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    assert cleaned == [True]
