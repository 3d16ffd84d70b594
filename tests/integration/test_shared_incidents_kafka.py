"""A severe pattern reaching hosts whose lines two Kafka workers process is one incident with
the exact count (issue 19), on the real engines: each worker's partitions write their part of
the incident (same id, derived from the pattern and the clock hour), and Elasticsearch keeps
one record merging the parts (streams.incidents.merge_part, written with if_seq_no)."""

from __future__ import annotations

import time

import httpx

from streams.partitions import partition_of
from tests.integration.stack import assigned, post_items, stack_logs, two_workers, wait_total

P = 4  # the raw topic's partitions (SMARTLOGS_PARTITIONS default)


def test_a_panic_over_hosts_of_two_workers_is_one_incident_with_the_exact_count(
        tmp_path, rabbitmq, kafka, elasticsearch):
    with two_workers(tmp_path, rabbitmq, kafka, elasticsearch) as (stack, second):
        url, env = stack["url"], stack["env"]
        first_port = int(env["SMARTLOGS_WORKER_METRICS_PORT"])
        hosts = [f"web-{i}" for i in range(40)]
        t0 = time.time() - 7200.0
        warm = [{"message": f"request {i % 7} served in {i % 13} ms", "host": h, "level": "INFO",
                 "timestamp": t0 + i + k / 100} for i in range(80) for k, h in enumerate(hosts)]
        post_items(url, warm)  # (the raw topic exists once the bridge sends to it)
        assert wait_total(url, len(warm), timeout=150, procs=stack["procs"]) == len(warm), \
            stack_logs(stack)
        # both workers hold partitions: a worker shows a partition once a message of it came
        # (its state is read back at the first one), and the warm lines may all have gone to
        # the first worker before the second joined; so a line for every host until both do
        deadline, k = time.monotonic() + 90, 0
        while not ((a := assigned(first_port)) and (b := assigned(second.metrics_port))
                   and a + b == P):
            assert time.monotonic() < deadline, stack_logs(stack)
            more = [{"message": f"request {k % 7} served in 1 ms", "host": h, "level": "INFO",
                     "timestamp": t0 + 80 + k + j / 100} for j, h in enumerate(hosts)]
            post_items(url, more)
            warm, k = warm + more, k + 1
            time.sleep(1)
        # one panicking host in each partition: both workers see the pattern
        by_part = {}
        for h in hosts:
            by_part.setdefault(partition_of(h, P), h)
        assert len(by_part) == P
        panicking = [by_part[p] for p in range(P)]
        t1 = (t0 // 3600 + 1) * 3600 + 60  # one clock hour of event time
        post_items(url, [{"id": f"panic-{h}", "message": "Kernel panic - not syncing: Fatal exception",
                     "host": h, "level": "critical", "timestamp": t1 + n}
                    for n, h in enumerate(panicking)])
        total = len(warm) + P
        assert wait_total(url, total, timeout=60, procs=stack["procs"]) == total, stack_logs(stack)
        assert assigned(first_port) and assigned(second.metrics_port)
        got = httpx.get(f"{url}/api/events", params={"q": "panic", "limit": 100},
                        timeout=30).json()["events"]
        assert {e["host"] for e in got} == set(panicking)
        assert all(e["anomaly"] and "first CRITICAL line of pattern" in e["reason"] for e in got), \
            [(e["host"], e["score"], e["reason"]) for e in got]
        (inc_id,) = {e["incident_id"] for e in got}
        deadline = time.monotonic() + 30
        while (inc := httpx.get(f"{url}/api/incidents/{inc_id}", timeout=10).json()).get(
                "count") != P:
            assert time.monotonic() < deadline, inc
            time.sleep(0.5)
        assert inc["status"] == "open" and inc["first_event_id"] == f"panic-{panicking[0]}"
        assert inc["last_event_id"] == f"panic-{panicking[-1]}"
        assert len(inc["examples"]) == P
        # the list is a search: it sees the merged record once Elasticsearch refreshed
        # (SMARTLOGS_ES_REFRESH_INTERVAL), where the read by id above is real-time
        deadline = time.monotonic() + 30
        while (listed := [i["id"] for i in httpx.get(f"{url}/api/incidents", params={
                "template": inc["template_id"], "limit": 100}, timeout=10).json()["incidents"]]) \
                != [inc_id]:
            assert time.monotonic() < deadline and not listed[1:], listed
            time.sleep(0.5)
