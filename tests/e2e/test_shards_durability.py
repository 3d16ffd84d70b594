"""Issue 18, embedded shards: `smartlogs up` with two shard processes, a 30,000-line replay
from two sources (one on each shard); kill -9 of one shard mid-replay (the supervisor
restarts it, its partitions resume from their checkpoints), then kill -9 of the whole server
(its orphaned shards stop by themselves); every line is stored exactly once; SIGTERM stops
the shards with their final checkpoints."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx

from streams.partitions import partition_of
from tests.e2e.test_cli_embedded import _free_port

PARTITIONS = 4


def _up(data_dir, port: int, log) -> subprocess.Popen:
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(data_dir), "SMARTLOGS_PORT": str(port),
           "SMARTLOGS_CHECKPOINT_SECONDS": "1", "SMARTLOGS_SHARDS": "2",
           "SMARTLOGS_PARTITIONS": str(PARTITIONS), "SMARTLOGS_SYSLOG_PORT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up", "--log-level", "info"],
                            env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if r.status_code == 200 and all(s["reporting"] for s in r.json()["pipeline"]["shards"]):
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("smartlogs up did not start its shards")


def _stream_on(shard: int) -> str:
    """A stream name whose partition belongs to ``shard`` of 2."""
    return next(f"src-{i}" for i in range(100) if partition_of(f"src-{i}", PARTITIONS) % 2 == shard)


def _shards(url: str) -> list[dict]:
    return httpx.get(f"{url}/healthz", timeout=5).json()["pipeline"]["shards"]


def _total(url: str) -> int:
    return httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"},
                     timeout=10).json()["total"]


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_kill_9_of_a_shard_and_of_the_server_during_a_30k_replay(tmp_path, loghub):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = _up(tmp_path / "var", port, log)
    env = {**os.environ, "SMARTLOGS_URL": url, "NO_COLOR": "1"}
    replays = [subprocess.Popen(
        [sys.executable, "-m", "smartlogs.cli", "replay", str(loghub / system / f"{system}_2k.log"),
         "--repeat", "8", "--batch-size", "500", "--rate", "1500", "--run-id", f"r{shard}",
         "--stream", _stream_on(shard), "--retry-for", "120s"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for shard, system in ((0, "Linux"), (1, "OpenSSH"))]
    orphans: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while _total(url) < 4000:  # both sources flowing, checkpoints written
            assert all(r.poll() is None for r in replays) and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)
        victim = _shards(url)[1]
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # the supervisor starts it again
            st = _shards(url)[1]
            if st["pid"] != victim["pid"] and st["alive"] and st["reporting"]:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
        assert st["restarts"] == 1
        assert st["lines"] > 0  # its partitions resumed from their checkpoints, not cold models

        deadline = time.monotonic() + 90
        while _total(url) < 16_000:
            assert all(r.poll() is None for r in replays) and time.monotonic() < deadline
            time.sleep(0.1)
        orphans = [s["pid"] for s in _shards(url)]
        server.send_signal(signal.SIGKILL)
        server.wait()
        for pid in orphans:  # a shard whose server died stops by itself
            assert _gone(pid, 60), f"shard {pid} outlived its server"
        server = _up(tmp_path / "var", port, log)

        for r in replays:
            out, err = r.communicate(timeout=300)
            assert r.returncode == 0, out + err
            assert "accepted 16,000" in out and "rejected 0" in out, out
        deadline = time.monotonic() + 90
        while _total(url) < 32_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _total(url) == 32_000  # none lost, none stored twice
        st = httpx.get(f"{url}/api/stats", params={"windows": 10000}, timeout=10).json()
        assert st["totals"]["events"] == 32_000  # window counts agree with the stored events
        # SIGTERM stops the shards cleanly: final checkpoints cover everything, spool trimmed
        pids = [s["pid"] for s in _shards(url)]
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
        assert all(_gone(pid, 5) for pid in pids)
        spool = sqlite3.connect(tmp_path / "var" / "smartlogs-spool.db")
        assert spool.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
        spool.close()
    finally:
        for r in replays:
            r.kill()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
    # every stored event's id (in its row in stores made before event_ids, else in its body)
    from collections import Counter

    from smartlogs.store import SqliteStore
    store = SqliteStore(tmp_path / "var" / "smartlogs.db")
    conn = store._conn()
    rows = conn.execute("SELECT seq, id, body FROM events ORDER BY seq").fetchall()
    bodies = store._decoded(conn, [(q, b) for q, _, b in rows])
    stored = [i if i is not None else b[14] for (_, i, _), b in zip(rows, bodies)]
    store.close()
    assert len(stored) == len(set(stored)) == 32_000
    assert Counter(i[:2] for i in stored) == {"r0": 16_000, "r1": 16_000}
    text = (tmp_path / "server.log").read_text()
    assert "no usable checkpoint" not in text  # every restart resumed from checkpoints
    assert "exited with -9; restarting it" in text
