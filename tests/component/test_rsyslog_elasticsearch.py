"""rsyslog's Elasticsearch output (omelasticsearch, Debian ``rsyslog-elasticsearch``) → our ``_bulk``.

A private ``rsyslogd`` follows a log file with ``imfile`` and ships every line with
``action(type="omelasticsearch" server="127.0.0.1" serverport=<API port> esVersion.major="8"
bulkmode="on")`` to the embedded API (uvicorn on a free loopback port): once with a JSON
template of our choosing (``@timestamp``, ``host``, ``severity``, ``programname``, ``message``),
once with omelasticsearch's default template (``message``, ``fromhost``, ``facility``,
``priority``, ``timereported``, ``timegenerated``). Each line written is stored exactly once,
with the fields the template carried, and rsyslog's error file stays empty (no item refused).
Then the API refuses a batch (the queue is full: ``429``): rsyslog suspends the action, retries,
and the lines are still stored exactly once.

rsyslogd and its module come from Debian (``scripts/install-shippers.sh``); without them these
tests skip on a laptop and FAIL in CI (CI=true).
"""

from __future__ import annotations

import glob
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ingest_api.decode import IngestError
from tests.ci import missing
from tests.component.test_syslog_clients import _need
from tests.conftest import loghub_path

HOST = socket.gethostname()


def _need_module(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/*/rsyslog/{name}.so") + glob.glob(f"/usr/lib/rsyslog/{name}.so"))
    if not found:
        missing(f"rsyslog module {name} is not installed (scripts/install-shippers.sh installs it)")
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RefuseNext:
    """Wrap the transport: refuse the next ``n`` batches (503 → the _bulk answer is 429)."""

    def __init__(self, inner, n: int):
        self.inner, self.left, self.refused = inner, n, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def accept(self, items, batch_id):
        if self.left > 0:
            self.left -= 1
            self.refused += 1
            raise IngestError(503, "backlog_full", "simulated full queue", retry_after=1)
        await self.inner.accept(items, batch_id)


@pytest.fixture
def start_api(tmp_path):
    """start_api(port=None) → an httpx client of the embedded API served by uvicorn on that
    port (a free one by default); stopped at the end of the test."""
    import uvicorn

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    servers = []

    def start(port: int | None = None) -> httpx.Client:
        app = create_app(Settings(data_dir=tmp_path / "var", checkpoint_seconds=0.5, syslog_port=0))
        port = port or _free_port()
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                            lifespan="on"))
        thread = threading.Thread(target=srv.run, name="uvicorn-rsyslog-es", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not srv.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the API did not start")
            time.sleep(0.02)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        http.port, http.app = port, app
        servers.append((srv, thread, http))
        return http

    yield start
    for srv, thread, http in servers:
        http.close()
        srv.should_exit = True
        thread.join(15)


@pytest.fixture
def api(start_api):
    return start_api()


RSYSLOG_CONF = """
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imfile")
module(load="omelasticsearch")

template(name="smartlogs_json" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="programname" name="programname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}}

input(type="imfile" File="{custom}" Tag="rs_es_custom:" Facility="local0" Severity="warning"
      ruleset="to_es_custom")
input(type="imfile" File="{default}" Tag="rs_es_default:" Facility="local1" Severity="info"
      ruleset="to_es_default")

ruleset(name="to_es_custom") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" esVersion.major="8"
         searchIndex="rsyslog-custom" template="smartlogs_json" bulkmode="on"
         errorFile="{work}/es-errors-custom.json"
         queue.type="linkedlist" queue.dequeueBatchSize="250"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
ruleset(name="to_es_default") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" esVersion.major="8"
         searchIndex="rsyslog-default" bulkmode="on"
         errorFile="{work}/es-errors-default.json"
         queue.type="linkedlist" queue.dequeueBatchSize="250"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""


@pytest.fixture
def start_rsyslog(tmp_path):
    """start_rsyslog(port) → (files, work): a private rsyslogd following two files and shipping
    them to ``_bulk`` on 127.0.0.1:port; stopped (SIGTERM, by pid) at the end of the test."""
    binary = _need("rsyslogd")
    _need_module("imfile")
    _need_module("omelasticsearch")
    procs = []

    def start(port: int):
        work = tmp_path / "rsyslog"
        work.mkdir()
        files = {"custom": work / "custom.log", "default": work / "default.log"}
        for f in files.values():
            f.touch()
        conf = work / "rsyslog.conf"
        conf.write_text(RSYSLOG_CONF.format(work=work, port=port, custom=files["custom"],
                                            default=files["default"]))
        check = subprocess.run([binary, "-N1", "-f", str(conf)], capture_output=True, text=True,
                               timeout=30, check=False)
        assert check.returncode == 0, f"rsyslog rejected the config: {check.stdout}{check.stderr}"
        with open(work / "rsyslogd.out", "w") as out:
            proc = subprocess.Popen([binary, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        time.sleep(0.5)
        if proc.poll() is not None:
            pytest.fail(f"rsyslogd did not start: {(work / 'rsyslogd.out').read_text()}")
        return files, work

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def rsyslog(api, start_rsyslog):
    return start_rsyslog(api.port)


def _events(api, tok: str, n: int, timeout: float = 30.0) -> list[dict]:
    """Every stored event whose message contains ``tok``, once ``n`` are there (and a moment
    later, so that a late duplicate would be seen)."""
    deadline = time.monotonic() + timeout
    while True:
        res = api.get("/api/events", params={"q": tok, "limit": 1000}).json()
        if res["total"] >= n or time.monotonic() > deadline:
            time.sleep(1.5)
            return api.get("/api/events", params={"q": tok, "limit": 1000}).json()["events"]
        time.sleep(0.1)


def _lines(tok: str, n: int) -> list[str]:
    sample = [ln for ln in (loghub_path() / "Linux" / "Linux_2k.log").read_text().splitlines() if ln.strip()]
    return [f"{tok} {i:04d} {sample[i % len(sample)]}" for i in range(n)]


def _append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


def test_rsyslog_omelasticsearch_bulk_lines_stored_once_with_fields(api, rsyslog):
    files, work = rsyslog
    tok_c, tok_d = "rsc" + uuid.uuid4().hex[:8], "rsd" + uuid.uuid4().hex[:8]
    custom, default = _lines(tok_c, 600), _lines(tok_d, 300)
    _append(files["custom"], custom[:100])  # two writes: more than one bulk request
    _append(files["default"], default)
    time.sleep(0.3)
    _append(files["custom"], custom[100:])

    got = _events(api, tok_c, len(custom))
    assert sorted(e["message"] for e in got) == sorted(custom)  # each line once, intact
    e = got[0]
    assert (e["receiver"], e["host"], e["component"], e["level"]) == ("es_bulk", HOST, "rs_es_custom", "WARNING")
    assert e["fields"]["_index"] == "rsyslog-custom" and e["format"] == "json"
    assert abs(e["ts"] - time.time()) < 300  # @timestamp: rsyslog's timereported

    got = _events(api, tok_d, len(default))
    assert sorted(e["message"] for e in got) == sorted(default)
    e = got[0]
    assert (e["receiver"], e["host"], e["level"]) == ("es_bulk", HOST, "INFO")
    assert e["fields"]["_index"] == "rsyslog-default" and e["fields"]["facility"] == "local1"
    assert "timegenerated" in e["fields"]

    for name in ("es-errors-custom.json", "es-errors-default.json"):  # no item was refused
        assert not (work / name).exists() or (work / name).read_text() == "", (work / name).read_text()
    metrics = api.get("/metrics").text
    assert 'smartlogs_events_accepted_total{source="es_bulk"}' in metrics


def test_rsyslog_retries_while_the_api_is_down_and_stores_each_line_once(start_api, start_rsyslog):
    """The API is not there yet: omelasticsearch suspends the action (connection refused) and
    retries it; once the API listens, every line is stored, once."""
    port = _free_port()
    files, work = start_rsyslog(port)
    tok = "rsr" + uuid.uuid4().hex[:8]
    lines = _lines(tok, 300)
    _append(files["custom"], lines[:150])
    time.sleep(2.5)  # rsyslog has tried and suspended the action by now
    api = start_api(port)
    _append(files["custom"], lines[150:])
    got = _events(api, tok, len(lines), timeout=60)
    assert sorted(e["message"] for e in got) == sorted(lines)
    assert "suspending" in (work / "rsyslogd.out").read_text()  # it did see the API down


def test_rsyslog_does_not_retry_a_refused_bulk_it_goes_to_the_error_file(api, rsyslog):
    """What rsyslog 8.2302 does with our "retry later" answer (``429
    es_rejected_execution_exception``, Elasticsearch's whole-request rejection): the reply has no
    ``items`` array, so omelasticsearch counts the request as a data failure, writes it to its
    ``errorFile`` and does NOT resend it (only connection failures suspend and retry). Nothing of
    the refused request is stored, nothing is stored twice; the following requests are stored. docs/receivers.md
    tells rsyslog users to keep ``errorFile`` set and to size SMARTLOGS_MAX_BACKLOG_EVENTS so that
    the queue does not fill."""
    files, work = rsyslog
    state = api.app.state
    gate = RefuseNext(state.transport, 1)
    state.transport = gate
    try:
        tok = "rsq" + uuid.uuid4().hex[:8]
        refused = _lines(tok + "a", 50)
        _append(files["custom"], refused)
        deadline = time.monotonic() + 20
        while gate.refused == 0 or not (work / "es-errors-custom.json").exists():
            assert time.monotonic() < deadline, "rsyslog sent nothing, or wrote no error file"
            time.sleep(0.1)
        later = _lines(tok + "b", 50)
        _append(files["custom"], later)
        got = _events(api, tok + "b", len(later))
    finally:
        state.transport = gate.inner
    assert sorted(e["message"] for e in got) == sorted(later)
    errors = (work / "es-errors-custom.json").read_text()
    assert "es_rejected_execution_exception" in errors
    # imfile may have split the first 50 lines over more than one request: each line is either
    # in the refused request (error file) or stored, never both, never neither
    stored_a = {e["message"].split()[1] for e in
                api.get("/api/events", params={"q": tok + "a", "limit": 100}).json()["events"]}
    refused_a = {f"{i:04d}" for i in range(50) if f"{tok}a {i:04d} " in errors}
    assert refused_a and not (stored_a & refused_a)
    assert stored_a | refused_a == {f"{i:04d}" for i in range(50)}
