"""The user's path, end to end: `smartlogs up` as a real process, then the CLI verbs against it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, url: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SMARTLOGS_URL": url, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "smartlogs.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _start(tmp_path, port):
    # a syslog port of its own: the default 5514 may be held by another server on this
    # machine, and then this one reports itself degraded (its syslog receiver is not up)
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(tmp_path / "var"), "SMARTLOGS_PORT": str(port),
           "SMARTLOGS_SYSLOG_PORT": str(_free_port())}
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a loaded 2-core box can take 30 s to start the shards
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"smartlogs up did not become healthy: {proc.stdout.read()}")


@pytest.fixture
def platform(tmp_path):
    port = _free_port()
    proc, url = _start(tmp_path, port)
    yield url
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_total(url: str, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    total = -1
    while time.monotonic() < deadline:
        total = httpx.get(f"{url}/api/events", params={"limit": 1}).json()["total"]
        if total >= n:
            return total
        time.sleep(0.1)
    return total


def test_replay_linux_then_search_stats_tail(platform, loghub):
    url = platform
    r = _cli("replay", str(loghub / "Linux" / "Linux_2k.log"), "--batch-size", "500", url=url)
    assert r.returncode == 0, r.stderr
    assert "sent 2,000  accepted 2,000  rejected 0" in r.stdout
    assert _wait_total(url, 2000) == 2000

    # every line is stored, none dropped, all parsed (the prototype kept 1,139)
    unparsed = httpx.get(f"{url}/api/events", params={"limit": 1, "q": "x"}).json()
    assert unparsed is not None
    st = httpx.get(f"{url}/api/stats", params={"windows": 10000}).json()
    assert st["totals"]["events"] == 2000
    assert st["top_hosts"][0] == {"key": "combo", "count": 2000}

    r = _cli("search", "authentication failure", "--host", "combo", "--limit", "5", url=url)
    assert r.returncode == 0, r.stderr
    assert "matching events" in r.stdout and "authentication failure" in r.stdout
    r = _cli("search", "--anomalies", "--json", url=url)
    assert r.returncode == 0
    import json
    doc = json.loads(r.stdout)
    assert doc["total"] >= 1 and all(e["anomaly"] and e["reason"] for e in doc["events"])

    r = _cli("stats", url=url)
    assert r.returncode == 0 and "2,000" in r.stdout and "top templates" in r.stdout

    # the tail first shows the newest stored line (once it shows, it is following), then the
    # marker sent afterwards arrives live; waits on what it prints, not on a fixed sleep (the
    # CLI alone takes seconds to start on a loaded machine)
    import threading

    httpx.post(f"{url}/ingest", json={"message": "tail warm-up 41", "host": "tailhost"})
    assert _wait_total(url, 2001) == 2001
    env = {**os.environ, "SMARTLOGS_URL": url, "COLUMNS": "200", "NO_COLOR": "1",
           "PYTHONUNBUFFERED": "1"}
    tail = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "tail", "-n", "1", "--interval", "0.1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(iter(tail.stdout.readline, "")), daemon=True).start()

    def printed(text: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in seen):
            if time.monotonic() > deadline or tail.poll() is not None:
                return False
            time.sleep(0.1)
        return True

    try:
        assert printed("tail warm-up 41"), (seen, tail.poll())
        httpx.post(f"{url}/ingest", json={"message": "tail marker 42", "host": "tailhost"})
        assert printed("tail marker 42"), seen
    finally:
        tail.send_signal(signal.SIGINT)
        tail.wait(10)
    line = next(line for line in seen if "tail marker 42" in line)
    assert "tailhost" in line, line


def test_replay_with_junk_stores_junk_raw_and_rejects_nothing(platform, tmp_path):
    url = platform
    f = tmp_path / "mixed.log"
    # junk first: after a timestamped line it would continue that event (multi-line events)
    f.write_bytes(b"\xff\xfe binary junk \x00\n"
                  b"just some words\n"
                  b"Jun 14 15:16:01 combo sshd(pam_unix)[1]: ok line\n")
    r = _cli("replay", str(f), url=url)
    assert r.returncode == 0, r.stderr
    assert _wait_total(url, 3) == 3
    events = httpx.get(f"{url}/api/events").json()["events"]
    raw = [e for e in events if not e["parse_ok"]]
    assert len(raw) == 2 and all(e["raw"] for e in raw)


def test_replay_against_nothing_fails_fast_and_clearly(tmp_path, loghub):
    r = _cli("replay", str(loghub / "Linux" / "Linux_2k.log"), url=f"http://127.0.0.1:{_free_port()}",
             timeout=30)
    assert r.returncode == 2
    assert "cannot reach SmartLogs" in r.stderr and "smartlogs up" in r.stderr


def test_replay_to_a_dead_port_says_not_delivered_not_rejected(loghub):
    """With --retry-for (no fail-fast probe) against nothing: the summary said "rejected 1,000"
    and the bar "1000/1000" for a 2,000-line file. Nothing was refused by a server: all 2,000
    are "not delivered", the bar's total is the file's 2,000 lines with none answered, and the
    rerun hint keeps the run id."""
    path = loghub / "Linux" / "Linux_2k.log"
    r = _cli("replay", str(path), "--run-id", "dead1", "--retry-for", "1s",
             url=f"http://127.0.0.1:{_free_port()}", timeout=60)
    assert r.returncode == 1, r.stderr
    assert "accepted 0  rejected 0  not delivered 2,000 (server unreachable)  of 2,000 lines" \
        in r.stdout, r.stdout
    assert "0/2000" in r.stderr and "1000/1000" not in r.stderr, r.stderr
    hint = r.stderr[r.stderr.index("smartlogs replay"):].split()
    assert hint[hint.index("--run-id") + 1] == "dead1" and "--retry-for" in hint, r.stderr


def test_search_without_server_says_what_to_do():
    r = _cli("search", "x", url=f"http://127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "smartlogs up" in r.stderr


def test_help_explains_every_verb():
    r = _cli("--help", url="http://x")
    for verb in ("up", "replay", "search", "tail", "stats", "data"):
        assert verb in r.stdout
    r = _cli("replay", "--help", url="http://x")
    assert "--rate" in r.stdout and "--speedup" in r.stdout


def test_kill_9_keeps_every_accepted_line(tmp_path, loghub):
    port = _free_port()
    proc, url = _start(tmp_path, port)
    r = _cli("replay", str(loghub / "Linux" / "Linux_2k.log"), "--run-id", "k9", url=url)
    assert r.returncode == 0
    proc.kill()  # SIGKILL, possibly before the spool was processed
    proc.wait()
    proc, url = _start(tmp_path, port)
    try:
        # resume: the same run id re-sends everything; nothing is duplicated
        r = _cli("replay", str(loghub / "Linux" / "Linux_2k.log"), "--run-id", "k9", url=url)
        assert r.returncode == 0
        assert _wait_total(url, 2000) == 2000
        time.sleep(0.5)
        assert httpx.get(f"{url}/api/events", params={"limit": 1}).json()["total"] == 2000
        st = httpx.get(f"{url}/api/stats", params={"windows": 10000}).json()
        assert st["totals"]["events"] == 2000
    finally:
        proc.kill()


def test_status_reports_each_stage_and_fails_when_down(platform):
    import re

    r = _cli("status", "--interval", "0.5", url=platform)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pipeline+store" in r.stdout and "ok" in r.stdout and "embedded" in r.stdout
    httpx.post(f"{platform}/ingest", json={"message": "status probe"})
    assert _wait_total(platform, 1) >= 1
    r = _cli("status", "--interval", "0.2", url=platform)
    for stage in ("ingest api", "pipeline+store"):  # each says when it last took an event
        row = next(line for line in r.stdout.splitlines() if stage in line)
        assert re.search(r"\d\d:\d\d:\d\d UTC", row), r.stdout
    r = _cli("status", "--interval", "0.2", url=f"http://127.0.0.1:{_free_port()}")
    assert r.returncode == 1 and "down" in r.stdout


def test_status_shows_the_last_rejections_with_reason_and_client(platform):
    """"1 rejected" said nothing about which request or why: the last refusals are kept
    (reason, time, client, request, detail) and `smartlogs status` lists them."""
    r = httpx.post(f"{platform}/ingest", content=b'{"message": "x"', timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(f"{platform}/v1/logs", content=b"{not json", timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    kept = httpx.get(f"{platform}/api/rejections").json()["rejections"]
    assert [k["reason"] for k in kept] == ["otlp_invalid_otlp", "invalid_json"], kept
    assert kept[1]["request"] == "POST /ingest" and kept[1]["client"].startswith("127.0.0.1:")
    assert "not valid JSON" in kept[1]["detail"]
    r = _cli("status", "--interval", "0.2", url=platform)
    assert "2 rejected" in r.stdout, r.stdout
    table = r.stdout[r.stdout.index("last 2 rejections"):]
    assert "invalid_json" in table and "POST /ingest" in table and "127.0.0.1" in table, r.stdout
    assert "otlp_invalid_otlp" in table and "POST /v1/logs" in table, r.stdout


def test_a_resumed_replay_says_how_many_lines_were_already_stored(platform, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"2024-05-01T10:00:{i % 60:02d}Z worker-{i % 3} job {i} done\n"
                           for i in range(120)))
    first = log.with_name("first.log")
    first.write_text("".join(log.read_text().splitlines(keepends=True)[:80]))
    r = _cli("replay", str(first), "--run-id", "rs1", url=platform)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lines of this run are already stored" not in r.stderr  # nothing of rs1 before
    assert _wait_total(platform, 80) == 80
    # the whole file under the same run id: its first 80 lines are already stored
    r = _cli("replay", str(log), "--run-id", "rs1", url=platform)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "80 lines of this run are already stored" in r.stderr, r.stderr
    assert "accepted 120 (80 of them already stored before: skipped)" in r.stdout, r.stdout
    assert _wait_total(platform, 120) == 120
    assert httpx.get(f"{platform}/ingest/runs/rs1").json() == {"run_id": "rs1", "stored": 120}


def test_sigterm_stops_smartlogs_up_cleanly_with_status_0(tmp_path):
    """uvicorn re-raised SIGTERM after its graceful shutdown, so the process died by the signal
    (-15) and `make up` ended with "make: *** [Makefile:23: up] Terminated"."""
    proc, url = _start(tmp_path, _free_port())
    assert httpx.post(f"{url}/ingest", json={"message": "before the stop"}).status_code == 202
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, (proc.returncode, out[-2000:])
    assert "Traceback" not in out, out[-2000:]


def test_a_second_server_on_the_same_data_dir_is_refused(platform, tmp_path):
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(tmp_path / "var"), "SMARTLOGS_SYSLOG_PORT": "0",
           "COLUMNS": "200", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-m", "smartlogs.cli", "up", "--port", str(_free_port())],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "another `smartlogs up`" in r.stderr and "--data-dir" in r.stderr
    assert httpx.get(f"{platform}/healthz").status_code == 200  # the first one is untouched


def test_bad_settings_are_one_clear_error_not_a_traceback(tmp_path):
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(tmp_path / "var"), "SMARTLOGS_WINDOW_SECONDS": "0",
           "SMARTLOGS_LOG_FORMAT": "bogus", "COLUMNS": "200", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-m", "smartlogs.cli", "up", "--port", str(_free_port())],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "SMARTLOGS_WINDOW_SECONDS=0: Input should be greater than 0" in r.stderr
    assert "SMARTLOGS_LOG_FORMAT=bogus: unknown log format 'bogus'" in r.stderr
    r = _cli("up", "--log-level", "verbose", url="http://x")
    assert r.returncode == 2 and "choose debug, info, warning or error" in r.stderr


def test_an_interrupted_replay_says_how_to_resume_without_duplicates(platform, loghub):
    path = loghub / "Linux" / "Linux_2k.log"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "smartlogs.cli", "replay", str(path), "--url", platform,
         "--rate", "400", "--run-id", "ir"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    # interrupt once it is sending (not while a slow machine is still importing the CLI)
    deadline = time.monotonic() + 60
    while httpx.get(f"{platform}/api/events", params={"limit": 1}).json()["total"] == 0:
        assert time.monotonic() < deadline and proc.poll() is None, "the replay never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted after" in err
    resume = err[err.index("smartlogs replay"):].split()
    assert resume[2:] == [str(path), "--url", platform, "--run-id", "ir"], err
    r = _cli(*resume[1:], url=platform)
    assert r.returncode == 0, r.stderr
    assert _wait_total(platform, 2000) == 2000
    time.sleep(0.5)
    assert httpx.get(f"{platform}/api/events", params={"limit": 1}).json()["total"] == 2000


def test_sigterm_stops_a_running_query_and_the_server_promptly(tmp_path):
    # a store big enough that one query runs for seconds (an AND of prefixes that each expand
    # to ~1,000 words, over 60,000 events of 200 words: ~4 s here; with 60 words it took
    # ~1.2 s, too close to the 1 s this test waits, and once finished before the SIGTERM
    # reached it), written before the server starts
    import random
    import threading

    from smartlogs.store import SqliteStore

    rng = random.Random(7)
    words = [f"w{i}" for i in range(2000)]
    store = SqliteStore(tmp_path / "var" / "smartlogs.db")
    for b in range(0, 60_000, 10_000):
        store.write([{"id": f"e{i}", "ts": 1.7e9 + i, "timestamp": "x", "received": 1.0,
                      "source": "t", "host": "h", "component": None, "pid": None, "level": "INFO",
                      "message": " ".join(rng.choice(words) for _ in range(200)), "raw": None,
                      "template_id": "T1", "template": "t", "params": [], "score": 0.0,
                      "anomaly": False, "reason": None, "warming_up": False, "parse_ok": True,
                      "format": "x", "truncated": False, "fields": {}}
                     for i in range(b, b + 10_000)], window_seconds=60)
    store.close()
    port = _free_port()
    os.environ["SMARTLOGS_QUERY_TIMEOUT"] = "600"  # only shutdown may stop it
    try:
        proc, url = _start(tmp_path, port)
    finally:
        del os.environ["SMARTLOGS_QUERY_TIMEOUT"]
    q = " ".join(f"w{i}*" for i in range(1, 33))
    answers: list = []

    def ask():
        try:
            answers.append(httpx.get(f"{url}/api/events", params={"q": q}, timeout=120))
        except httpx.TransportError as exc:
            answers.append(exc)

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(1.0)  # the query is running (it takes several seconds on this store)
    assert not answers, "the query finished too soon to test its interruption"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("smartlogs up did not stop within 30 s of SIGTERM")
    stopped = time.monotonic() - t0
    r = answers[0]
    assert isinstance(r, httpx.Response) and r.status_code == 503, r
    assert r.json()["error"] == "shutting_down"
    assert stopped < 15, stopped  # bounded: a query left running holds shutdown for minutes


def test_search_pages_with_a_next_hint_and_all(platform):
    url = platform
    httpx.post(f"{url}/ingest", json=[{"message": f"pager line {i}", "host": "pager"}
                                      for i in range(45)])
    assert _wait_total(url, 45) >= 45
    r = _cli("search", "pager", "--limit", "20", url=url)
    assert r.returncode == 0, r.stderr
    assert "45 matching events (showing 20)" in r.stdout
    hint = next(line for line in r.stdout.splitlines() if line.startswith("next page: "))
    import shlex

    args = shlex.split(hint[len("next page: "):])
    assert args[:3] == ["smartlogs", "search", "pager"] and "--cursor" in args
    r2 = _cli(*args[1:], url=url)
    assert r2.returncode == 0 and "45 matching events (showing 20)" in r2.stdout, r2.stderr
    assert "pager line 24" in r2.stdout and "pager line 25" not in r2.stdout  # lines 24..5
    r3 = _cli("search", "pager", "--limit", "20", "--all", "--json", url=url)
    import json

    doc = json.loads(r3.stdout)
    assert [e["message"] for e in doc["events"]] == [f"pager line {i}" for i in range(44, -1, -1)]
    assert doc["next"] is None


def test_search_and_stats_in_arrival_time(platform):
    url = platform
    httpx.post(f"{url}/ingest", json=[{"message": f"vintage line {i}", "host": "vintage",
                                       "timestamp": "2005-06-14T15:16:01Z"} for i in range(3)])
    assert _wait_total(url, 3) >= 3
    r = _cli("search", "vintage", "--since", "1h", url=url)
    assert r.returncode == 0 and "0 matching events" in r.stdout, r.stdout
    r = _cli("search", "vintage", "--since", "1h", "--time", "arrival", url=url)
    assert r.returncode == 0 and "3 matching events" in r.stdout, r.stdout
    r = _cli("stats", "--since", "1h", "--time", "arrival", url=url)
    assert r.returncode == 0 and "recent windows (arrival time)" in r.stdout, r.stdout
    assert "\n3 events" in "\n" + r.stdout or r.stdout.startswith("3 events"), r.stdout


def test_search_next_page_hint_keeps_the_url_it_was_given(platform):
    """Given --url (no SMARTLOGS_URL), the printed next-page command asked the default
    address instead, so pasting it failed or read another server."""
    url = platform
    httpx.post(f"{url}/ingest", json=[{"message": f"urlpager line {i}"} for i in range(5)])
    assert _wait_total(url, 5) >= 5
    env = {k: v for k, v in os.environ.items() if k != "SMARTLOGS_URL"}
    env.update(COLUMNS="200", NO_COLOR="1")
    r = subprocess.run([sys.executable, "-m", "smartlogs.cli", "search", "urlpager", "--limit",
                        "2", "--url", url], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    hint = next(line for line in r.stdout.splitlines() if line.startswith("next page: "))
    import shlex

    args = shlex.split(hint[len("next page: "):])
    assert args[args.index("--url") + 1] == url, hint
    r2 = subprocess.run([sys.executable, "-m", "smartlogs.cli", *args[1:]], capture_output=True,
                        text=True, env=env, timeout=120)
    assert r2.returncode == 0 and "urlpager line 2" in r2.stdout, r2.stdout + r2.stderr


def test_incidents_in_arrival_time(platform, tmp_path):
    """`smartlogs incidents --time arrival`: what was flagged last first, whatever the dates its
    lines carry (a future-dated replay's incident no longer sits on top)."""
    import sqlite3

    from smartlogs.store.sqlite import _UPSERT_INCIDENT, _incident_values
    from tests.component.test_incidents_store import FUTURE, LIVE

    db = sqlite3.connect(tmp_path / "var" / "smartlogs.db", timeout=30)
    with db:
        db.executemany(_UPSERT_INCIDENT, [_incident_values(i) for i in (FUTURE, LIVE)])
    db.close()
    r = _cli("incidents", url=platform)
    assert r.returncode == 0 and r.stdout.index("Ifuture") < r.stdout.index("Ilive"), r.stdout
    r = _cli("incidents", "--time", "arrival", url=platform)
    assert r.returncode == 0 and "latest first (arrival time)" in r.stdout, r.stdout
    assert r.stdout.index("Ilive") < r.stdout.index("Ifuture") and "2027-01-15" in r.stdout, r.stdout
    r = _cli("incidents", "--time", "received", url=platform)
    assert r.returncode == 1 and "--time must be event or arrival" in r.stdout + r.stderr
