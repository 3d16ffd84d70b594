"""The syslog receiver with real clients: util-linux ``logger`` and a private rsyslog.

The embedded platform runs in-process (TestClient: API + runner + SQLite) and the receiver is
started on a free port against its transport, as the API's lifespan does. Events are checked
in the store through ``GET /api/events``: each line sent is stored once, with the fields its
protocol carried (RFC 5424 structured data as ``sd.<id>.<name>``).

``logger`` and ``rsyslogd`` come from Debian (``scripts/install-shippers.sh``); without them these
tests skip on a laptop and FAIL in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from ingest_api.receivers.syslog import SyslogReceiver
from smartlogs.settings import Settings
from tests.ci import missing

HOST = socket.gethostname()


def _need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        missing(f"{binary} is not installed (scripts/install-shippers.sh installs it)")
    return path


@pytest.fixture
def platform(tmp_path):
    """(client, receiver, settings): the embedded API with a syslog receiver on a free port."""
    settings = Settings(data_dir=tmp_path / "var", checkpoint_seconds=0.5, syslog_port=0)
    app = create_app(settings)
    with TestClient(app) as client:
        receiver = SyslogReceiver("127.0.0.1", 0)
        client.portal.call(receiver.start, app.state.transport)
        try:
            yield client, receiver, settings
        finally:
            client.portal.call(receiver.stop)


def all_events(client) -> list[dict]:
    """Every stored event, oldest first (paged with the tail cursor)."""
    out, after = [], 0
    while True:
        page = client.get("/api/events", params={"after": after, "limit": 1000}).json()["events"]
        out += page
        if len(page) < 1000:
            return out
        after = page[-1]["seq"]


def stored(client, token: str, n: int, timeout: float = 15.0) -> list[dict]:
    """Events whose message contains ``token``, once at least ``n`` are stored (and a moment
    later, so that a duplicate arriving late would be seen)."""
    deadline = time.monotonic() + timeout
    while True:
        mine = [e for e in all_events(client) if token in e["message"]]
        if len(mine) >= n or time.monotonic() > deadline:
            time.sleep(0.3)
            return [e for e in all_events(client) if token in e["message"]]
        time.sleep(0.1)


def logger(*args: str, port: int, stdin: str | None = None) -> None:
    cmd = [_need("logger"), "-n", "127.0.0.1", "-P", str(port), *args]
    subprocess.run(cmd, check=True, timeout=10, input=stdin, text=True)


def test_logger_over_tcp_both_framings_and_udp(platform):
    client, rcv, _ = platform
    tok = uuid.uuid4().hex[:10]
    logger("-T", "-p", "user.err", "-t", "app_lf", "--msgid", "M1", "--sd-id", "ex@32473",
           "--sd-param", 'k="lf v"', f"lf {tok}", port=rcv.port)
    logger("-T", "--octet-count", "-t", "app_oc", "--sd-id", "ex@32473", "--sd-param", 'k="oc"',
           f"octet {tok}", port=rcv.port)
    logger("-T", "--rfc3164", "-p", "auth.warning", "-t", "app_bsd", f"bsd {tok}", port=rcv.port)
    logger("-d", "-t", "app_udp", "--sd-id", "ex@32473", "--sd-param", 'k="udp"', f"udp {tok}",
           port=rcv.port)
    events = stored(client, tok, 4)
    by = {e["message"].split()[0]: e for e in events}
    assert sorted(by) == ["bsd", "lf", "octet", "udp"] and len(events) == 4

    lf, oc, bsd, udp = by["lf"], by["octet"], by["bsd"], by["udp"]
    assert lf["message"] == f"lf {tok}" and lf["receiver"] == "syslog_tcp"
    assert lf["source"] == HOST  # a line with a host: the host is its source
    assert (lf["format"], lf["host"], lf["component"], lf["level"]) == ("rfc5424", HOST, "app_lf", "ERROR")
    assert lf["fields"]["sd.ex@32473.k"] == "lf v" and lf["fields"]["msgid"] == "M1"
    assert lf["fields"]["sd.timeQuality.tzKnown"] == "1"
    assert oc["receiver"] == "syslog_tcp" and oc["fields"]["sd.ex@32473.k"] == "oc"
    assert oc["message"] == f"octet {tok}" and oc["component"] == "app_oc"
    assert (bsd["format"], bsd["host"], bsd["component"], bsd["level"]) == ("syslog", HOST, "app_bsd", "WARNING")
    assert bsd["fields"] == {"facility": "4", "severity": "4"}
    assert udp["receiver"] == "syslog_udp" and udp["fields"]["sd.ex@32473.k"] == "udp"

    metrics = client.get("/metrics").text
    assert 'smartlogs_events_accepted_total{source="syslog_tcp"}' in metrics
    assert 'smartlogs_events_accepted_total{source="syslog_udp"}' in metrics


@pytest.mark.parametrize("framing", [(), ("--octet-count",)], ids=["lf", "octet"])
def test_logger_many_lines_on_one_connection_are_stored_once_in_order(platform, framing):
    client, rcv, _ = platform
    tok = uuid.uuid4().hex[:10]
    lines = "".join(f"{tok} line {i:04d}\n" for i in range(500))
    logger("-T", *framing, "-t", "bulk", port=rcv.port, stdin=lines)
    events = stored(client, tok, 500)
    assert [e["message"] for e in events] == [f"{tok} line {i:04d}" for i in range(500)]


# -- rsyslog ------------------------------------------------------------------------------

RSYSLOG_CONF = """
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" UseSpecialParser="off" ParseHostname="on"
      RateLimit.Interval="0")
if $programname == "rs_octet" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
  stop
}}
if $programname == "rs_lf" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         TCP_Framing="traditional" template="RSYSLOG_TraditionalForwardFormat")
  stop
}}
if $programname == "rs_udp" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="udp"
         template="RSYSLOG_SyslogProtocol23Format")
  stop
}}
"""


@pytest.fixture
def rsyslog(platform, tmp_path):
    """A private rsyslogd: reads a private unix socket, forwards to the receiver (omfwd)."""
    binary = _need("rsyslogd")
    _, rcv, _ = platform
    work = tmp_path / "rsyslog"
    work.mkdir()
    sock, pidfile = work / "log.sock", work / "rsyslogd.pid"
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, sock=sock, port=rcv.port))
    proc = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(pidfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"rsyslogd did not start: {proc.stdout.read()}")
        time.sleep(0.05)
    try:
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()



def test_a_line_without_a_host_is_named_by_its_syslog_peer(platform):
    """Issue 19: every event has a source; a syslog line whose header names no host has the
    address of the peer that sent it (over TCP and over UDP)."""
    client, rcv, _ = platform
    tok = uuid.uuid4().hex[:10]
    with socket.create_connection(("127.0.0.1", rcv.port), timeout=5) as s:
        s.sendall(f"no header at all, tcp {tok}\n".encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(f"no header at all, udp {tok}".encode(), ("127.0.0.1", rcv.port))
    events = stored(client, tok, 2)
    assert sorted((e["receiver"], e["host"], e["source"]) for e in events) == [
        ("syslog_tcp", None, "127.0.0.1"), ("syslog_udp", None, "127.0.0.1")]
    got = client.get("/api/events", params={"source": "127.0.0.1", "q": tok}).json()
    assert got["total"] == 2

def test_rsyslog_forwards_over_tcp_octet_counted_lf_and_udp(platform, rsyslog):
    client = platform[0]
    tok = uuid.uuid4().hex[:10]
    log = _need("logger")

    def send(tag: str, n: int, *extra: str) -> None:
        lines = "".join(f"{tag} {tok} {i:03d}\n" for i in range(n))
        subprocess.run([log, "-u", str(rsyslog), "-t", tag, *extra], input=lines,
                       text=True, check=True, timeout=10)

    # RFC 5424 in, forwarded as RFC 5424 (structured data kept) over octet-counted TCP and UDP;
    # a local BSD-style message forwarded in the traditional format over LF-framed TCP.
    send("rs_octet", 100, "--rfc5424", "--sd-id", "ex@32473", "--sd-param", 'k="octet"')
    send("rs_lf", 100, "-i")
    send("rs_udp", 20, "--rfc5424", "--sd-id", "ex@32473", "--sd-param", 'k="udp"')
    events = stored(client, tok, 220)
    groups: dict[str, list[dict]] = {}
    for e in events:
        groups.setdefault(e["message"].split()[0], []).append(e)
    for tag, n in (("rs_octet", 100), ("rs_lf", 100), ("rs_udp", 20)):
        msgs = sorted(e["message"] for e in groups[tag])
        assert msgs == [f"{tag} {tok} {i:03d}" for i in range(n)], tag  # each once, none cut

    octet = groups["rs_octet"][0]
    assert (octet["receiver"], octet["format"], octet["component"]) == ("syslog_tcp", "rfc5424", "rs_octet")
    assert octet["fields"]["sd.ex@32473.k"] == "octet"
    assert not octet["message"].endswith("\n")  # rsyslog's LF inside the octet count is framing
    lf = groups["rs_lf"][0]
    assert (lf["receiver"], lf["format"], lf["component"], lf["host"]) == ("syslog_tcp", "syslog", "rs_lf", HOST)
    assert lf["pid"] and lf["fields"]["facility"] == "1"
    udp = groups["rs_udp"][0]
    assert (udp["receiver"], udp["format"]) == ("syslog_udp", "rfc5424")
    assert udp["fields"]["sd.ex@32473.k"] == "udp"


# -- backpressure ---------------------------------------------------------------------------

def _reopen(transport, settings: Settings, backlog: int) -> None:
    transport.settings = settings.model_copy(update={"max_backlog_events": backlog})


def test_tcp_backpressure_stops_reading_and_loses_nothing(tmp_path):
    """While the transport answers 503 the receiver reads nothing more: the sender blocks
    (its send buffer fills). Once the transport takes batches again, every line is stored once."""
    settings = Settings(data_dir=tmp_path / "var", checkpoint_seconds=0.5, syslog_port=0,
                        max_backlog_events=0)  # every accept() is refused: 503 backlog_full
    app = create_app(settings)
    with TestClient(app) as client:
        transport = app.state.transport
        rcv = SyslogReceiver("127.0.0.1", 0, read_size=16 * 1024)
        client.portal.call(rcv.start, transport)
        try:
            n = 4000
            pad = "x" * 900
            stream = "".join(f"<13>Nov 25 17:52:33 bp-host bp[1]: bp {i:05d} {pad}\n"
                             for i in range(n)).encode()
            sock = socket.create_connection(("127.0.0.1", rcv.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            sock.setblocking(False)
            sent, stalled_since = 0, None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    sent += sock.send(stream[sent:sent + 65536])
                    stalled_since = None
                except BlockingIOError:
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > 1.5:
                        break  # blocked for 1.5 s: the receiver is not reading
                    time.sleep(0.05)
            assert stalled_since is not None, "the sender never blocked"
            assert sent < len(stream) // 2, f"{sent} bytes went through while refusing"
            assert rcv.stats.refusals >= 1 and rcv.stats.accepted["syslog_tcp"] == 0
            assert client.get("/api/events", params={"limit": 1}).json()["total"] == 0
            held = rcv.stats.received["syslog_tcp"]
            assert 0 < held < n

            _reopen(transport, settings, 1_000_000)  # the pipeline caught up
            sock.setblocking(True)
            sock.sendall(stream[sent:])
            sock.close()
            events = stored(client, "bp 0", n, timeout=30)
            assert len(events) == n
            assert sorted(e["message"].split()[1] for e in events) == [f"{i:05d}" for i in range(n)]
            assert rcv.stats.accepted["syslog_tcp"] == n and rcv.stats.dropped == 0
        finally:
            client.portal.call(rcv.stop)


def test_udp_is_lossy_under_refusal_and_counts_what_it_drops(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", checkpoint_seconds=0.5, syslog_port=0,
                        max_backlog_events=0)
    app = create_app(settings)
    with TestClient(app) as client:
        transport = app.state.transport
        rcv = SyslogReceiver("127.0.0.1", 0, tcp=False, udp_queue=50, batch_max=10)
        client.portal.call(rcv.start, transport)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(200):
                    s.sendto(f"<13>Nov 25 17:52:33 h u[1]: udp {i:03d}".encode(), ("127.0.0.1", rcv.port))
                    time.sleep(0.001)
            deadline = time.monotonic() + 5
            while rcv.stats.dropped + len(rcv._udp_q) < 190 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rcv.stats.dropped > 0  # bounded queue: the overflow is dropped and counted
            _reopen(transport, settings, 1_000_000)
            kept = 200 - rcv.stats.dropped
            events = stored(client, "udp ", kept)
            assert len(events) == kept and kept <= 50 + 10  # the queue, plus the batch in hand
            assert 'smartlogs_requests_rejected_total{reason="syslog_udp_overflow"}' in client.get("/metrics").text
        finally:
            client.portal.call(rcv.stop)


# -- lifecycle, with an in-memory transport ---------------------------------------------------

class GateTransport:
    """Refuses (503) while closed; records what it took."""

    def __init__(self):
        self.open = False
        self.taken: list[dict] = []

    async def accept(self, items, batch_id):
        from ingest_api.decode import IngestError

        if not self.open:
            raise IngestError(503, "backlog_full", "closed", retry_after=1)
        self.taken += items


def test_stop_accepts_what_was_already_read_within_the_drain_timeout():
    import asyncio

    async def scenario():
        t = GateTransport()
        rcv = SyslogReceiver("127.0.0.1", 0, udp=False, drain_timeout=3, max_retry_wait=0.05)
        await rcv.start(t)
        _, writer = await asyncio.open_connection("127.0.0.1", rcv.port)
        writer.write(b"<13>one\n<13>two\n")
        await writer.drain()
        while rcv.stats.refusals == 0:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(rcv.stop())
        await asyncio.sleep(0.2)
        t.open = True  # the transport recovers during the drain
        await stopping
        writer.close()
        return t.taken, rcv.stats

    taken, stats = asyncio.run(scenario())
    assert [i["raw"] for i in taken] == ["<13>one", "<13>two"] and stats.dropped == 0


def test_start_syslog_from_settings_port_off_and_port_taken(caplog):
    import asyncio
    from types import SimpleNamespace

    from ingest_api.receivers.syslog import start_syslog

    async def scenario():
        off = await start_syslog(SimpleNamespace(syslog_port=0, max_line_length=65536), None)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            s = SimpleNamespace(syslog_host="127.0.0.1", syslog_port=port, syslog_udp=True,
                                max_line_length=65536)
            taken = await start_syslog(s, None)
        return off, taken

    off, taken = asyncio.run(scenario())
    assert off is None and taken is None
    assert "syslog receiver NOT started" in caplog.text


def test_healthz_says_when_the_syslog_receiver_could_not_start(tmp_path):
    """HTTP ingest still works (200), but /healthz names the receiver that is not listening."""
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with TestClient(create_app(Settings(data_dir=tmp_path, syslog_port=port))) as c:
            r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json()["syslog"] == {"listening": False, "address": f"127.0.0.1:{port}",
                                  "error": "could not bind the port (see the server log)"}
    with TestClient(create_app(Settings(data_dir=tmp_path / "off", syslog_port=0))) as c:
        assert "syslog" not in c.get("/healthz").json()


def test_plain_lines_starting_with_a_number_over_tcp_are_stored_as_sent(platform):
    """``printf '5 apples sold\\n1000 users logged in\\n' > /dev/tcp/…`` stored "apple" and
    "s … sold", and the second line swallowed the next 20 into one event."""
    client, receiver, _ = platform
    token = "numstart" + uuid.uuid4().hex[:6]
    lines = [f"5 apples sold {token}", f"1000 users logged in {token}"]
    lines += [f"line {i} {token}" for i in range(20)]
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as s:
        s.sendall("".join(line + "\n" for line in lines).encode())
    got = stored(client, token, len(lines))
    assert sorted(e["raw"] for e in got) == sorted(lines)


def test_a_read_larger_than_the_backlog_limit_is_handed_over_in_parts_not_dropped(tmp_path):
    """The spool refuses one batch larger than SMARTLOGS_MAX_BACKLOG_EVENTS with a 413 (it could
    never fit); the receiver reads up to thousands of lines at once: it splits them."""
    settings = Settings(data_dir=tmp_path / "var", checkpoint_seconds=0.5, syslog_port=0,
                        max_backlog_events=5)
    app = create_app(settings)
    with TestClient(app) as client:
        receiver = SyslogReceiver("127.0.0.1", 0)
        client.portal.call(receiver.start, app.state.transport)
        try:
            token = "parts" + uuid.uuid4().hex[:6]
            with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as s:
                s.sendall("".join(f"<13>line {i} {token}\n" for i in range(40)).encode())
            got = stored(client, token, 40, timeout=30)
            assert len(got) == 40 and receiver.stats.accepted["syslog_tcp"] == 40
        finally:
            client.portal.call(receiver.stop)
