"""A severe pattern reaching hosts in different partitions is one incident (issue 19), in
embedded mode with two shards over one store: the same incident id on every line, the exact
count (the stores merge each partition's part, streams.incidents.merge_part)."""

from __future__ import annotations

import time

from smartlogs.store import EventQuery, SqliteStore
from streams.partitions import partition_key, partition_of
from streams.pipeline import PipelineConfig
from streams.runtime.embedded import EmbeddedRunner
from streams.runtime.shards import shard_partitions

P = 4
NOW = time.time()


def _item(i: int, host: str, ts: float, message: str, level: str) -> dict:
    return {"id": f"{host}:{i}", "message": message, "host": host, "level": level, "ts": ts,
            "received": NOW, "source": "http"}


def test_a_panic_over_hosts_of_two_shards_is_one_incident_with_the_exact_count(tmp_path):
    store = SqliteStore(tmp_path / "s.db", partitions=P)
    runners = [EmbeddedRunner(store, PipelineConfig(hst_window=50),
                              checkpoint_path=tmp_path / "ckpt", n_partitions=P,
                              partitions=shard_partitions(k, 2, P)) for k in range(2)]
    hosts = [f"web-{i}" for i in range(40)]
    part = {h: partition_of(partition_key({"host": h}), P) for h in hosts}
    shard = {h: 0 if part[h] in shard_partitions(0, 2, P) else 1 for h in hosts}
    # the panic reaches two hosts of shard 0's partitions and two of shard 1's
    panicking = ([h for h in hosts if shard[h] == 0][:2] + [h for h in hosts if shard[h] == 1][:2])
    assert len({part[h] for h in panicking}) >= 2 and len({shard[h] for h in panicking}) == 2
    t0 = NOW - 3600.0 * 2
    warm = [_item(i, h, t0 + i + k / 100, f"request {i % 7} served in {i % 13} ms", "info")
            for i in range(60) for k, h in enumerate(hosts)]
    store.spool_append(warm)
    t1 = (t0 // 3600 + 1) * 3600 + 60  # inside one clock hour of event time
    store.spool_append([_item(1000 + n, h, t1 + n, "Kernel panic - not syncing: Fatal exception",
                              "critical") for n, h in enumerate(panicking)])
    while any([r.step() for r in runners]):  # the shards in turn, as their processes would
        pass
    got = store.search(EventQuery(q="panic", limit=100)).events
    assert {e["host"] for e in got} == set(panicking)
    assert all(e["anomaly"] for e in got), [(e["host"], e["score"], e["reason"]) for e in got]
    assert all("first CRITICAL line of pattern" in e["reason"] for e in got)
    (inc_id,) = {e["incident_id"] for e in got}
    incident = store.incident(inc_id)
    assert incident["count"] == 4 and incident["status"] == "open"
    assert incident["first_event_id"] == f"{panicking[0]}:1000"
    assert incident["last_event_id"] == f"{panicking[3]}:1003"
    assert len(store.incidents(template=incident["template_id"])) == 1
    store.close()
