"""Issue 8: a 202 from the embedded process means on disk. kill -9 during a 50,000-line replay,
three times; the replay's retries carry on; every line is stored exactly once and the windowed
counts agree with the stored events."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import httpx

from tests.e2e.test_cli_embedded import _free_port


def _up(data_dir, port: int, checkpoint_seconds: str = "1") -> subprocess.Popen:
    """`smartlogs up` on ``data_dir`` as a real process, once it answers /healthz."""
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(data_dir), "SMARTLOGS_PORT": str(port),
           "SMARTLOGS_CHECKPOINT_SECONDS": checkpoint_seconds}
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("smartlogs up did not start")


def test_kill_9_three_times_during_a_50k_replay(tmp_path, loghub):
    rnd = random.Random(8)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _up(tmp_path / "var", port)
    env = {**os.environ, "SMARTLOGS_URL": url, "NO_COLOR": "1"}
    # 2,000 lines/s: 25 s of sending, so three kill-and-restart cycles (~5-10 s each on a busy
    # machine) fall within the replay; at 4,000 a server that keeps up and restarts quickly let
    # the replay finish before the third kill
    replay = subprocess.Popen(
        [sys.executable, "-m", "smartlogs.cli", "replay", str(loghub / "Linux" / "Linux_2k.log"),
         "--repeat", "25", "--batch-size", "500", "--rate", "2000", "--run-id", "dur"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kills = 0
    try:
        deadline = time.monotonic() + 60  # let the replay get going before the first kill
        while httpx.get(f"{url}/api/events", params={"limit": 1}).json()["total"] < 1000:
            assert replay.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        while kills < 3 and replay.poll() is None:
            time.sleep(rnd.uniform(0.5, 2.0))
            server.send_signal(signal.SIGKILL)
            server.wait()
            kills += 1
            time.sleep(rnd.uniform(0.1, 1.0))
            server = _up(tmp_path / "var", port)
        out, err = replay.communicate(timeout=300)
        assert kills == 3, f"the replay finished before three kills: {out} {err}"
        assert replay.returncode == 0, out + err
        assert "accepted 50,000" in out and "rejected 0" in out
        deadline = time.monotonic() + 60
        while True:
            total = httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"}).json()["total"]
            if total >= 50_000 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == 50_000  # none lost, none duplicated (ids are unique per line)
        st = httpx.get(f"{url}/api/stats", params={"windows": 10000}).json()
        assert st["totals"]["events"] == 50_000  # the windows agree with the stored events
        assert sum(w["total"] for w in st["windows"]) == 50_000
    finally:
        replay.kill()
        server.kill()
