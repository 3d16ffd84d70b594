"""N workers over the raw topic's partitions, each partition's state in Kafka (issue 18), on the
real engines: two workers share the partitions and a kill -9 of one moves its partitions to the
other, which resumes from their saved state (exactly the events sent, window counts equal to
Elasticsearch's, no warm-up burst after the move); a restarted worker restores its state from
the state topic (no local file) and catches up past it, so incident counts stay exact."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.component.test_incidents_api import burst, normal
from tests.integration.stack import (assigned, post_items, run_stack, stack_logs,
                                     two_workers, wait_total)
from tests.integration.test_incidents_full_stack import _settled

STREAMS = 12  # sources (the partition key), spread over the 4 partitions
SAMPLES = ("Linux", "OpenSSH", "HDFS")


def _items(loghub, tag: str, first: int, end: int) -> list[dict]:
    pools = [(loghub / s / f"{s}_2k.log").read_text(errors="replace").splitlines() for s in SAMPLES]
    out = []
    for k in range(first, end):
        s = k % STREAMS
        pool = pools[s % len(pools)]
        out.append({"id": f"{tag}:{k}", "raw": pool[(k // STREAMS) % len(pool)],
                    "stream": f"svc-{s}"})
    return out


def _es_count(es: str, prefix: str, query: dict) -> int:
    r = httpx.post(f"{es}/{prefix}-*/_count", json={"query": query}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["count"]


def _wait_log(path, pattern: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(pattern, path.read_text(errors="replace"))
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} not in {path.name}:\n" + path.read_text()[-3000:])


def test_two_workers_share_the_partitions_and_a_kill_9_moves_them(tmp_path, rabbitmq, kafka,
                                                                   elasticsearch, loghub):
    with two_workers(tmp_path, rabbitmq, kafka, elasticsearch) as (stack, second):
        url, env = stack["url"], stack["env"]
        first_port = int(env["SMARTLOGS_WORKER_METRICS_PORT"])
        # phase 1: both workers hold partitions and learn (every source's model warms up)
        post_items(url, _items(loghub, "p", 0, 15_000))
        assert wait_total(url, 15_000, timeout=150, procs=stack["procs"]) == 15_000, stack_logs(stack)
        deadline = time.monotonic() + 30
        while not (assigned(first_port) and assigned(second.metrics_port)):
            assert time.monotonic() < deadline, "both workers should hold partitions"
            time.sleep(0.5)
        held_by_b = assigned(second.metrics_port)
        time.sleep(3)  # a save (every second here) covers phase 1 on both workers
        # phase 2, sent while worker b is killed mid-way
        phase2 = time.time()
        sender = threading.Thread(target=post_items, args=(url, _items(loghub, "p", 15_000, 30_000), 100))
        sender.start()
        wait_total(url, 18_000, timeout=120, procs=stack["procs"])
        second.send_signal(signal.SIGKILL)
        second.wait()
        del stack["procs"]["worker-b"]
        sender.join(180)
        total = wait_total(url, 30_000, timeout=170, procs=stack["procs"])
        assert total == 30_000, stack_logs(stack)
        time.sleep(3)  # anything processed twice would show up now as a duplicate
        assert wait_total(url, 30_000, timeout=5) == 30_000

        # the killed worker's partitions moved to the survivor, which read their state back
        assert assigned(first_port) == 4
        restored = re.findall(r"partition (\d): state restored from .*?: (\d+) lines learned",
                              (tmp_path / "worker.log").read_text())
        assert len({p for p, lines in restored if int(lines) > 0}) >= held_by_b, restored

        # window counts (/api/stats) are Elasticsearch's own, exact
        prefix = env["SMARTLOGS_ES_INDEX_PREFIX"]
        st = httpx.get(f"{url}/api/stats", params={"windows": 10000}, timeout=60).json()
        assert st["totals"]["events"] == 30_000 == _es_count(elasticsearch, prefix, {"match_all": {}})
        anomalies = _es_count(elasticsearch, prefix, {"term": {"anomaly": True}})
        assert st["totals"]["anomalies"] == anomalies

        # no cold model after the move: no line of phase 2 scored while warming up, and the
        # anomaly rate of phase 2 at the level of phase 1 (a fresh model flags a burst)
        after = {"range": {"received": {"gte": int(phase2 * 1000), "format": "epoch_millis"}}}
        before = {"range": {"received": {"lt": int(phase2 * 1000), "format": "epoch_millis"}}}
        assert _es_count(elasticsearch, prefix, after) >= 15_000  # phase 2 and only it
        assert _es_count(elasticsearch, prefix, {"bool": {"filter": [
            after, {"term": {"warming_up": True}}]}}) == 0
        rate = {}
        for name, window in (("before", before), ("after", after)):
            n = _es_count(elasticsearch, prefix, window)
            flagged = _es_count(elasticsearch, prefix, {"bool": {"filter": [
                window, {"term": {"anomaly": True}}]}})
            rate[name] = flagged / n
        assert rate["after"] <= rate["before"] * 1.5 + 0.002, rate


def test_a_restarted_worker_restores_its_state_from_kafka_and_incident_counts_stay_exact(
        tmp_path, rabbitmq, kafka, elasticsearch):
    """Half a burst is processed, stored and committed after the last save; the worker is
    killed. The new one reads each partition's state back from the state topic (there is no
    local file) and processes the records after it again (their events are stored already),
    so the rest of the burst continues the same incident and every count equals the lines
    stored with its id. (Resuming at the committed offset with the older state split the
    burst into two incidents, neither of them whole: 16 of 40 in the larger.)"""
    gen = run_stack(tmp_path, rabbitmq, kafka, elasticsearch,
                    extra_env={"SMARTLOGS_CHECKPOINT_SECONDS": "15"})
    stack = next(gen)
    log = tmp_path / "worker.log"
    try:
        url = stack["url"]
        events, b = normal(), burst()
        post_items(url, events)
        assert wait_total(url, 1500, procs=stack["procs"]) == 1500, stack_logs(stack)
        # a save covers the normal lines (not the one at offset 0 a partition gets when taken)
        _wait_log(log, r"state saved at offset [1-9]", timeout=40)
        time.sleep(0.5)
        saves = len(re.findall(r"state saved at offset", log.read_text()))
        for i in range(0, 20, 5):  # half the burst, in four messages
            post_items(url, b[i:i + 5])
        assert wait_total(url, 1520, procs=stack["procs"]) == 1520
        time.sleep(4)  # Faust commits every ~3 s: these offsets are committed now
        assert len(re.findall(r"state saved at offset", log.read_text())) == saves, \
            "a save came too early for this test"
        stack["procs"]["worker"].send_signal(signal.SIGKILL)
        stack["procs"]["worker"].wait()
        assert not any(n.endswith(".ckpt") for n in os.listdir(tmp_path / "var")), \
            os.listdir(tmp_path / "var")
        log2 = open(tmp_path / "worker-2.log", "w")
        stack["procs"]["worker"] = subprocess.Popen(
            [sys.executable, "-m", "smartlogs.cli", "worker"], env=stack["env"], stdout=log2,
            stderr=subprocess.STDOUT)
        for i in range(20, 40, 5):
            post_items(url, b[i:i + 5])
        assert wait_total(url, 1540, timeout=120, procs=stack["procs"]) == 1540, stack_logs(stack)
        text = _wait_log(tmp_path / "worker-2.log", r"state restored from [^:]+ in [\d.]+ s: \d+ lines")
        assert text
        assert "re-read" in (tmp_path / "worker-2.log").read_text()  # caught up past the save
        deadline = time.monotonic() + 30
        while True:
            incs = _settled(url)  # every count equals the lines stored with its id
            main = max(incs, key=lambda i: i["count"])
            if main["count"] >= 30 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        # one incident for the burst, not two halves (the first flags of a burst open it)
        bursts = [i for i in incs if i["source"] == "web1" and i["kind"] == main["kind"]]
        assert len(bursts) == 1 and main["count"] >= 30, (incs, stack_logs(stack))
        flagged = httpx.get(f"{url}/api/events", params={"anomaly": "true", "limit": 1}).json()["total"]
        assert sum(i["count"] for i in incs) == flagged
    finally:
        next(gen, None)
