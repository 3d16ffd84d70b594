"""The pure incident core (streams/incidents.py) and its place in the pipeline's state."""

import pickle

from streams.incidents import IncidentTracker, incident_id
from streams.pipeline import Pipeline, PipelineConfig

KEY = ("template_burst", "web1", "T7")


def _failure(i: int, ts: float, host: str = "web1", received: float | None = None) -> dict:
    return {"id": f"run:{i}", "ts": ts, "received": ts if received is None else received,
            "timestamp": None, "host": host, "source": "http", "level": "ERROR",
            "message": f"authentication failure; rhost=10.0.0.{i % 250} user=root",
            "template_id": "T7", "template": "authentication failure; rhost=<*> user=root",
            "score": 0.9, "reason": "burst: pattern T7"}


def _burst(t: IncidentTracker, start: int, ts0: float, n: int = 40) -> set[str]:
    ids = set()
    for i in range(n):
        ids.add(t.observe(_failure(start + i, ts0 + 2.0 * i), KEY, "web1"))
    return ids


def test_a_burst_of_40_identical_failures_is_one_incident_resolved_after_the_quiet_period():
    t = IncidentTracker(gap=300, quiet=600, examples=5)
    ids = _burst(t, 0, 1000.0)
    assert len(ids) == 1
    (inc,) = t.take()
    assert inc["status"] == "open" and inc["count"] == 40
    assert inc["first_event_id"] == "run:0" and inc["last_event_id"] == "run:39"
    assert inc["first_ts"] == 1000.0 and inc["last_ts"] == 1078.0
    assert len(inc["examples"]) == 5 and inc["examples"][0]["id"] == "run:0"
    assert inc["source"] == "web1" and inc["template_id"] == "T7" and inc["kind"] == "template_burst"
    # still open within the quiet period, in event time and in arrival time
    t.see("web1", 1078.0 + 599)
    assert t.tick(1078.0 + 599) == [] and t.open
    t.see("web1", 1078.0 + 601)  # a later line of the same host, past last + quiet
    t.sweep()
    (done,) = t.take()
    assert done["id"] == inc["id"] and done["status"] == "resolved" and done["count"] == 40
    assert done["resolved_ts"] == 1078.0 + 600 and done["rev"] > inc["rev"]
    assert not t.open


def test_a_second_burst_after_the_quiet_period_is_a_second_incident():
    t = IncidentTracker(gap=300, quiet=600)
    first = _burst(t, 0, 1000.0)
    second = _burst(t, 100, 1078.0 + 601)  # its own lines carry event time past last + quiet
    assert len(first) == len(second) == 1 and first != second
    snaps = {s["id"]: s for s in t.take()}
    assert snaps[first.pop()]["status"] == "resolved"
    assert snaps[second.pop()]["status"] == "open"
    assert [s["count"] for s in snaps.values()] == [40, 40]


def test_lines_further_apart_than_the_gap_open_a_new_incident():
    t = IncidentTracker(gap=60, quiet=600)
    a = t.observe(_failure(1, 0.0), KEY, "web1")
    b = t.observe(_failure(2, 61.0), KEY, "web1")
    assert a != b


def test_an_idle_tick_resolves_by_arrival_time_and_a_late_line_would_not_have_joined():
    t = IncidentTracker(gap=300, quiet=300)
    a = t.observe(_failure(1, 50.0, received=1000.0), KEY, "web1")
    assert [s["status"] for s in t.take()] == ["open"]
    assert t.tick(1200.0) == []  # within quiet (arrival time): still open
    (snap,) = t.tick(1301.0)
    assert snap["status"] == "resolved"
    # a line of the same cause that arrived after the tick: past last_received + quiet, so
    # it opens a new incident whether or not the tick ran (a re-run gives the same answer)
    b = t.observe(_failure(2, 60.0, received=1302.0), KEY, "web1")
    u = IncidentTracker(gap=300, quiet=300)
    assert u.observe(_failure(1, 50.0, received=1000.0), KEY, "web1") == a
    assert u.observe(_failure(2, 60.0, received=1302.0), KEY, "web1") == b != a


def test_other_streams_do_not_resolve_an_old_replay_incident():
    t = IncidentTracker(gap=300, quiet=300)
    old = t.observe(_failure(1, 1.1e9), KEY, "replay.log")
    t.see("live-host", 1.8e9)  # live lines of today
    t.sweep()
    assert t.open and t.observe(_failure(2, 1.1e9 + 10), KEY, "replay.log") == old


def test_ids_are_deterministic_and_keyed():
    assert incident_id(KEY, "a") == incident_id(KEY, "a")
    assert incident_id(KEY, "a") != incident_id(KEY, "b") != incident_id(("x",), "b")
    # a re-run after a crash may give the template a new id: the incident keeps its id
    assert incident_id(KEY, "a") == incident_id(("template_burst", "web1", "T99"), "a")
    assert incident_id(KEY, "a").startswith("I") and len(incident_id(KEY, "a")) == 17


def test_open_incidents_are_bounded():
    t = IncidentTracker(max_open=3)
    for i in range(10):
        t.observe(_failure(i, float(i)), ("template_burst", None, f"T{i}"), "s")
    assert len(t.open) == 3
    assert sum(s["status"] == "resolved" for s in t.take()) == 7


# -- in the pipeline ------------------------------------------------------------------------
# a looser threshold than the defaults, so that most lines of the burst are flagged
CONFIG = PipelineConfig(year=2023, anomaly_quantile=0.9, min_anomaly_score=0.5)


def _items(n0: int, n: int, ts0: float, message, step: float = 1.0, hosts: int = 1) -> list[dict]:
    return [{"id": f"r:{n0 + i}",
             "raw": f"{_syslog(ts0 + i * step)} web{i % hosts} sshd[42]: {message(i)}",
             "received": 1.8e9 + n0 + i, "source": "http"} for i in range(n)]


def _syslog(ts: float) -> str:
    import time
    return time.strftime("%b %d %H:%M:%S", time.gmtime(ts))


def _stream(size: int = 50) -> list[list[dict]]:
    """Normal traffic, then a burst of 40 identical failures, in batches of ``size``."""
    ts0 = 1_700_000_000.0
    normal = _items(0, 1500, ts0, lambda i: f"session opened for user u{i % 7} by (uid=0)",
                    step=2.0, hosts=5)
    burst = _items(1500, 40, ts0 + 3000, lambda i: "error: authentication failure for root "
                   "from 203.0.113.9", step=1.0)
    items = normal + burst
    return [items[i:i + size] for i in range(0, len(items), size)]


def test_every_flagged_event_carries_its_incident_id_and_a_burst_shares_one():
    p = Pipeline(CONFIG)
    events = [e for b in _stream() for e in p.process(b)]
    snaps = {s["id"]: s for s in p.take_incidents()}
    flagged = [e for e in events if e["anomaly"]]
    assert all(e["incident_id"] in snaps for e in flagged)
    assert all(e["incident_id"] is None for e in events if not e["anomaly"])
    burst = [e for e in flagged if "authentication failure" in e["message"]]
    assert len(burst) >= 10, "the burst is flagged"
    ids = {e["incident_id"] for e in burst}
    assert len(ids) <= 2  # its first line (novelty) and the burst
    assert sum(snaps[i]["count"] for i in ids) == len(burst)


def test_incidents_are_part_of_the_checkpointed_state_a_rerun_gives_the_same_ids():
    batches = _stream(25)  # batch 61 is the middle of the burst
    whole = Pipeline(CONFIG)
    a = [e for b in batches for e in whole.process(b)]
    half = Pipeline(CONFIG)
    b_events = [e for b in batches[:61] for e in half.process(b)]
    restored = pickle.loads(pickle.dumps(half))
    b_events += [e for b in batches[61:] for e in restored.process(b)]
    assert [e["incident_id"] for e in a] == [e["incident_id"] for e in b_events]
    assert sum(e["incident_id"] is not None for e in a[1525:]) >= 5  # flagged after the cut
    assert {s["id"]: s["count"] for s in whole.incidents.open.values()} == \
        {s["id"]: s["count"] for s in restored.incidents.open.values()}


def test_a_checkpoint_from_before_incidents_loads_with_an_empty_tracker(tmp_path):
    from streams.runtime.checkpoints import load_checkpoint, save_checkpoint

    old = Pipeline(CONFIG)
    del old.incidents  # what an older checkpoint holds
    save_checkpoint(old, tmp_path / "ckpt")
    p = load_checkpoint(tmp_path / "ckpt", CONFIG)
    assert p.incidents.open == {} and p.incidents.quiet == CONFIG.incident_quiet
    events = [e for b in _stream() for e in p.process(b)]
    assert any(e["incident_id"] for e in events)


def test_new_settings_apply_to_a_restored_tracker(tmp_path):
    from dataclasses import replace

    from streams.runtime.checkpoints import load_checkpoint, save_checkpoint

    save_checkpoint(Pipeline(CONFIG), tmp_path / "ckpt")
    p = load_checkpoint(tmp_path / "ckpt", replace(CONFIG, incident_quiet=42.0, incident_examples=2))
    assert (p.incidents.quiet, p.incidents.examples) == (42.0, 2)


def test_the_module_example_runs():
    import doctest

    import streams.incidents

    assert doctest.testmod(streams.incidents).failed == 0


def _panic(i: int, host: str, ts: float) -> dict:
    return {"id": f"panic:{i}", "ts": ts, "received": ts, "timestamp": None, "host": host,
            "source": host, "level": "CRITICAL", "score": 0.9, "reason": "first CRITICAL line",
            "message": "Kernel panic - not syncing: Fatal exception", "template_id": "T9",
            "template": "Kernel panic - not syncing: Fatal exception"}


def test_a_severe_pattern_over_two_partitions_is_one_incident_with_the_exact_count():
    """Issue 19: one severe pattern reaching hosts whose lines two partitions process (two
    trackers that never see each other's lines) is one incident: the same id in both, and
    the stores' merge of the two parts counts every line once, whatever order the parts'
    snapshots are written in, again or late."""
    from streams.incidents import merge_snapshot

    a, b = IncidentTracker(), IncidentTracker()
    key = ("severity", "T9")
    ids = {a.observe(_panic(1, "web-1", 7210.0), key), b.observe(_panic(2, "web-2", 7215.0), key),
           a.observe(_panic(3, "web-3", 7220.0), key), b.observe(_panic(4, "web-4", 7230.0), key),
           b.observe(_panic(5, "web-5", 7240.0), key)}
    assert len(ids) == 1
    (shared_id,) = ids
    snaps = a.take() + b.take() + a.tick(99999.0) + b.tick(99999.0)
    for order in (snaps, snaps[::-1], snaps + snaps[:2]):
        kept = None
        for snap in order:
            kept = merge_snapshot(kept, snap) or kept
        assert kept["id"] == shared_id
        assert kept["count"] == 5 and kept["status"] == "resolved"
        assert kept["first_ts"] == 7210.0 and kept["last_ts"] == 7240.0
        assert kept["first_event_id"] == "panic:1" and kept["last_event_id"] == "panic:5"
        assert [x["id"] for x in kept["examples"]] == [f"panic:{i}" for i in range(1, 6)]
    # the next clock hour of event time is the next incident, in both partitions alike
    assert a.observe(_panic(6, "web-6", 10900.0), key) == b.observe(_panic(7, "web-7", 10950.0),
                                                                     key) != kept["id"]
    # a host's own severity incident (no shared key) stays the partition's own
    own = IncidentTracker()
    own.observe(_panic(8, "web-8", 7300.0), ("severity", "web-8", "T9"))
    assert "part" not in own.take()[0]
