"""Incidents survive kill -9 of the embedded process with exact counts: the incident state is
part of the checkpointed pipeline state, the batches after the checkpoint are processed again,
and the store keeps the latest snapshot of each incident (upserted by id)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.component.test_incidents_api import burst, normal
from tests.e2e.test_cli_embedded import _free_port
from tests.e2e.test_durability import _up


def _post(url: str, events: list[dict]) -> None:
    r = httpx.post(f"{url}/ingest", json=events, timeout=30)
    assert r.status_code == 202, r.text  # on disk from here on


def _wait_total(url: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/api/events", params={"limit": 1}).json()["total"] < n:
        assert time.monotonic() < deadline, f"fewer than {n} events stored"
        time.sleep(0.05)


def _incidents(url: str) -> list[dict]:
    incs = httpx.get(f"{url}/api/incidents", params={"limit": 1000}).json()["incidents"]
    for inc in incs:  # every count is exactly the lines stored with its id
        linked = httpx.get(f"{url}/api/events", params={"incident": inc["id"], "limit": 1}).json()
        assert linked["total"] == inc["count"], inc
    return incs


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SMARTLOGS_URL": url, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "smartlogs.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def _cli_shows(url: str, main: dict) -> None:
    """`smartlogs incidents` lists it, `smartlogs incidents ID` shows it with examples."""
    r = _cli(url, "incidents", "--status", "open", "--source", "web1")
    assert r.returncode == 0 and main["id"] in r.stdout and str(main["count"]) in r.stdout, r.stdout
    r = _cli(url, "incidents", main["id"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{main['count']} line(s)" in r.stdout and "authentication failure" in r.stdout
    r = _cli(url, "search", "--incident", main["id"], "--json")
    assert r.returncode == 0 and f'"total":{main["count"]}' in r.stdout.replace(" ", ""), r.stdout[:500]
    r = _cli(url, "incidents", "Inope")
    assert r.returncode == 1 and "404" in r.stdout + r.stderr


def _requests() -> list[list[dict]]:
    b = burst()
    return [normal()[i:i + 500] for i in range(0, 1500, 500)] + [b[i:i + 10] for i in range(0, 40, 10)]


def test_incidents_survive_kill_9_with_exact_counts(tmp_path):
    # reference: the same requests to a process that is never killed
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ref = _up(tmp_path / "ref", port, "1")
    try:
        for body in _requests():
            _post(url, body)
        _wait_total(url, 1540)
        incs = _incidents(url)
        want = sorted((i["count"], i["kind"], i["source"]) for i in incs)
        _cli_shows(url, max(incs, key=lambda i: i["count"]))
    finally:
        ref.kill()
        ref.wait()
    assert max(c for c, _, _ in want) >= 30

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # no checkpoint before the kill (the component test tests/component/test_incidents_store.py
    # covers a checkpoint in the middle): the restarted process processes every batch again
    server = _up(tmp_path / "var", port, "3600")
    try:
        reqs = _requests()
        for body in reqs[:3]:
            _post(url, body)
        _wait_total(url, 1500)
        for body in reqs[3:5]:  # half the burst: stored, its incident open, not checkpointed
            _post(url, body)
        _wait_total(url, 1520)
        deadline = time.monotonic() + 10
        while not _incidents(url):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = _up(tmp_path / "var", port, "1")
        for body in reqs[5:]:
            _post(url, body)
        _wait_total(url, 1540)
        deadline = time.monotonic() + 10
        while True:  # the re-run and the rest of the burst bring the counts to the reference
            got = sorted((i["count"], i["kind"], i["source"]) for i in _incidents(url))
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got == want
        assert httpx.get(f"{url}/api/events", params={"limit": 1}).json()["total"] == 1540
    finally:
        server.kill()
        server.wait()
