"""`smartlogs ship` end to end: the embedded platform (`smartlogs up`) and the shipper as real
processes, real files rotated and truncated the way logrotate does it, the shipper killed with
SIGKILL mid-way and restarted, the API stopped while lines are written.

Every check is "each line written is stored exactly once": the store keeps an id once, and the
shipper's ids are ``<file id>:<offset>``, so a line sent twice would still be stored once — the
tests therefore also check the shipper's own position (no line skipped) and, after a SIGKILL,
that the restart did not start over.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

SHIP = [sys.executable, "-m", "smartlogs.cli.shipper"]  # `smartlogs ship` once registered
FAST = ["--poll-interval", "0.05", "--rotate-wait", "0.5", "--max-backoff", "0.5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Platform:
    """`smartlogs up` as a process, restartable on the same port and data directory."""

    def __init__(self, data_dir: Path, port: int | None = None, read_key: str | None = None):
        self.data_dir, self.port = data_dir, port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {read_key}"} if read_key else {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Platform:
        env = {**os.environ, "SMARTLOGS_DATA_DIR": str(self.data_dir),
               "SMARTLOGS_PORT": str(self.port), "SMARTLOGS_SYSLOG_PORT": "0"}
        self.log = open(self.data_dir.parent / f"up-{self.port}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"smartlogs up did not become healthy on {self.url}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def events(self, token: str) -> list[dict]:
        out, after = [], 0
        while True:
            page = httpx.get(f"{self.url}/api/events", params={"after": after, "limit": 1000},
                             headers=self.headers, timeout=10).json()["events"]
            out += [e for e in page if token in e["message"]]
            if len(page) < 1000:
                return out
            after = page[-1]["seq"]

    def wait_for(self, token: str, n: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.events(token)
            if len(got) >= n or time.monotonic() > deadline:
                time.sleep(0.3)  # a late duplicate would show up now
                return self.events(token)
            time.sleep(0.1)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = Platform(tmp_path_factory.mktemp("ship") / "var").start()
    yield p
    p.stop()


def ship(*args: str, env: dict | None = None, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*SHIP, *args, *FAST], env={**os.environ, **(env or {})},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lines(tok: str, start: int, stop_: int) -> str:
    return "".join(f"{tok} line {i:05d}\n" for i in range(start, stop_))


def numbers(events: list[dict]) -> list[int]:
    return sorted(int(e["message"].rsplit(" ", 1)[1]) for e in events)


def test_rotation_by_rename_and_copytruncate(platform, tmp_path):
    tok = uuid.uuid4().hex[:10]
    log = tmp_path / "app.log"
    proc = ship(str(log), "--url", platform.url, "--state-file", str(tmp_path / "state.json"),
                log=tmp_path / "ship.log")
    try:
        writer = open(log, "a", buffering=1)  # the application, holding its log open
        writer.write(lines(tok, 0, 100))
        assert len(platform.wait_for(tok, 100)) == 100

        # logrotate (create): rename, the app writes a little more to the old file, reopens
        os.rename(log, tmp_path / "app.log.1")
        writer.write(lines(tok, 100, 120))
        writer.close()
        writer = open(log, "a", buffering=1)
        writer.write(lines(tok, 120, 200))
        assert numbers(platform.wait_for(tok, 200)) == list(range(200))

        # logrotate copytruncate: copy, then truncate in place; the app keeps appending
        shutil.copy(log, tmp_path / "app.log.2")
        os.truncate(log, 0)
        writer.write(lines(tok, 200, 250))
        writer.close()
        got = platform.wait_for(tok, 250)
        assert numbers(got) == list(range(250))  # every line once: none lost, none repeated
        # "file" once /ingest honours the shipper's X-SmartLogs-Source header, "http" before
        assert len({e["receiver"] for e in got}) == 1 and got[0]["receiver"] in ("file", "http")
        # the followed file's path is the source of its lines, across rotations (issue 19)
        assert {e["source"] for e in got} == {str(log)}
    finally:
        stop(proc)
    assert proc.returncode == 0, (tmp_path / "ship.log").read_text()


def test_sigkill_mid_way_then_restart_neither_skips_nor_repeats(platform, tmp_path):
    tok = uuid.uuid4().hex[:10]
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    n = 3000
    log.write_text(lines(tok, 0, n))
    args = [str(log), "--url", platform.url, "--state-file", str(state), "--batch-size", "10"]
    proc = ship(*args, log=tmp_path / "ship.log")
    deadline = time.monotonic() + 20
    while len(platform.events(tok)) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to save anything more
    proc.wait()
    saved = orjson.loads(state.read_bytes())["files"][str(log)]["offset"]
    assert 0 < saved < log.stat().st_size, "killed too late to test a restart"
    with open(log, "a") as f:  # lines written while the shipper is down
        f.write(lines(tok, n, n + 100))

    proc = ship(*args[:-2], log=tmp_path / "ship.log")  # default batches: ids do not depend on them
    try:
        got = platform.wait_for(tok, n + 100, timeout=30)
        assert numbers(got) == list(range(n + 100))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            final = orjson.loads(state.read_bytes())["files"][str(log)]["offset"]
            if final == log.stat().st_size:
                break
            time.sleep(0.05)
        assert final == log.stat().st_size
    finally:
        stop(proc)
    # the restart resumed at the saved position: it sent exactly the lines after it (the batch
    # that may have been accepted just before the kill went again, under the same ids)
    log_text = (tmp_path / "ship.log").read_text()
    assert f"resuming at byte {saved}" in log_text, log_text
    after = log.read_bytes()[saved:].count(b"\n")
    assert f"shipped {after} lines" in log_text.splitlines()[-1], log_text[-500:]


def test_lines_written_while_the_api_is_down_arrive_once_it_is_back(tmp_path):
    from smartlogs.auth import KeyStore

    data = tmp_path / "var"
    data.mkdir()
    keys = KeyStore(data / "keys.db")
    _, reader = keys.create("reader", "read")
    _, ingest = keys.create("shipper", "ingest")
    api = Platform(data, read_key=reader).start()
    tok = uuid.uuid4().hex[:10]
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    log.write_text(lines(tok, 0, 50))
    try:
        # without the key: a clear refusal, exit 1, and the position is not advanced
        r = subprocess.run([*SHIP, str(log), "--url", api.url, "--state-file", str(state),
                            "--once", *FAST], env={**os.environ, "SMARTLOGS_API_KEY": ""},
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "401" in r.stderr and "missing API key" in r.stderr, r.stderr

        proc = ship(str(log), "--url", api.url, "--state-file", str(state),
                    env={"SMARTLOGS_API_KEY": ingest}, log=tmp_path / "ship.log")
        try:
            assert numbers(api.wait_for(tok, 50)) == list(range(50))
            api.stop()
            with open(log, "a") as f:
                f.write(lines(tok, 50, 250))
            time.sleep(1.0)  # the shipper retries against a closed port meanwhile
            api.start()
            assert numbers(api.wait_for(tok, 250)) == list(range(250))
        finally:
            stop(proc)
        shipped = (tmp_path / "ship.log").read_text()
        assert "not taking lines" in shipped and "retrying" in shipped
    finally:
        api.stop()


def run_once(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*SHIP, *args, "--once", *FAST], capture_output=True, text=True,
                          timeout=timeout)


def test_a_url_that_is_not_http_is_refused_at_once(tmp_path):
    log, state = tmp_path / "once.log", tmp_path / "state.json"
    log.write_text("x\n")
    r = run_once(str(log), "--url", "notaurl", "--state-file", str(state), timeout=20)
    assert r.returncode == 1, r.stderr
    assert "error: --url 'notaurl' is not an http(s) URL" in r.stderr, r.stderr
    assert "retrying" not in r.stderr and not state.exists()


def test_once_against_a_down_api_gives_up_then_a_rerun_resumes(platform, tmp_path):
    tok = uuid.uuid4().hex[:10]
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    log.write_text(lines(tok, 0, 30))
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    r = run_once(str(log), "--url", down, "--state-file", str(state), "--give-up-after", "1.5")
    assert r.returncode == 1, r.stderr
    assert 1.5 <= time.monotonic() - t0 < 15
    assert "gave up after 1.5s" in r.stderr and "run again" in r.stderr, r.stderr
    assert orjson.loads(state.read_bytes())["files"][str(log)]["offset"] == 0  # nothing moved
    r = run_once(str(log), "--url", platform.url, "--state-file", str(state))
    assert r.returncode == 0, r.stderr
    assert numbers(platform.wait_for(tok, 30)) == list(range(30))
    assert "shipped 30 lines" in r.stderr


def test_a_12_mb_line_is_one_event_truncated_and_flagged(platform, tmp_path):
    tok = uuid.uuid4().hex[:10]
    log, state = tmp_path / "app.log", tmp_path / "state.json"
    with open(log, "w") as f:
        f.write(f"{tok} line 00000\n{tok} line 00001\n")
        f.write(f"{tok} long " + "x" * (12 << 20) + "\n")
        f.write(f"{tok} line 00003\n")
    r = run_once(str(log), "--url", platform.url, "--state-file", str(state))
    assert r.returncode == 0, r.stderr
    got = platform.wait_for(tok, 4)
    assert len(got) == 4, [(e["id"], len(e["message"])) for e in got]
    long = [e for e in got if " long " in e["message"]]
    assert len(long) == 1 and long[0]["truncated"] is True
    assert len(long[0]["message"]) == 65536 and long[0]["id"].endswith(":44")  # after 2 x 22 bytes
    assert not any(e["truncated"] for e in got if e is not long[0])
    assert "shipped 4 lines" in r.stderr, r.stderr
    assert orjson.loads(state.read_bytes())["files"][str(log)]["offset"] == log.stat().st_size


def test_a_directory_or_a_missing_file_is_refused_with_once(tmp_path):
    state = tmp_path / "state.json"
    r = run_once(str(tmp_path), "--state-file", str(state))
    assert r.returncode == 1 and "is a directory" in r.stderr, r.stderr
    assert "shipped" not in r.stderr and not state.exists()
    r = run_once(str(tmp_path / "missing.log"), "--state-file", str(state))
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    assert not state.exists()
