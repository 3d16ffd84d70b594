"""Incidents in the embedded store and runner: idempotent upserts, crash re-runs, idle ticks."""

from __future__ import annotations

from smartlogs.store import EventQuery, SqliteStore
from streams.pipeline import PipelineConfig
from streams.runtime.embedded import EmbeddedRunner
from tests.component.test_incidents_api import TS0, burst, normal

CONFIG = PipelineConfig()


def _items(events: list[dict], prefix: str, received: float = 1.8e9) -> list[dict]:
    return [{"id": f"{prefix}:{i}", "message": e["message"], "host": e["host"],
             "level": e["level"], "ts": e["timestamp"], "received": received + i,
             "source": "http"} for i, e in enumerate(events)]


def _snap(rev: int, count: int, status: str = "open") -> dict:
    return {"id": "Iabc", "status": status, "source": "web1", "template_id": "T1",
            "first_ts": 1.0, "last_ts": float(count), "count": count, "rev": rev, "examples": []}


def test_an_older_snapshot_never_overwrites_a_newer_one(tmp_path):
    store = SqliteStore(tmp_path / "db")
    store.write_incidents([_snap(80, 40)])
    store.write_incidents([_snap(40, 20)])  # written late (a re-run from an older checkpoint)
    assert store.incident("Iabc")["count"] == 40
    store.write_incidents([_snap(81, 40, "resolved")])
    assert store.incident("Iabc")["status"] == "resolved"
    store.write_incidents([_snap(81, 40, "resolved")])  # the same again: no change
    assert [i["id"] for i in store.incidents(status="resolved")] == ["Iabc"]
    assert store.incidents(status="open") == [] and store.incident("nope") is None


def test_a_crash_before_the_checkpoint_reruns_to_the_same_incidents(tmp_path):
    stream = _items(normal() + burst(), "b")
    batches = [stream[k:k + 100] for k in range(0, len(stream), 100)]
    ref_store = SqliteStore(tmp_path / "ref.db")
    ref = EmbeddedRunner(ref_store, CONFIG)
    for b in batches:
        ref_store.spool_append(b)
    ref.drain()
    want = {i["id"]: i for i in ref_store.incidents(limit=1000)}
    assert max(i["count"] for i in want.values()) >= 30

    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt")
    for b in batches[:12]:
        store.spool_append(b)
    runner.drain()
    runner.checkpoint()  # the checkpoint covers the normal lines only
    for b in batches[12:]:
        store.spool_append(b)
    runner.drain()  # the burst is stored, its incident too... then the process dies
    store.close()
    store = SqliteStore(tmp_path / "db")
    again = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt")
    again.drain()  # the burst is processed again from the checkpoint
    got = {i["id"]: i for i in store.incidents(limit=1000)}
    assert {k: (v["count"], v["status"]) for k, v in got.items()} == \
        {k: (v["count"], v["status"]) for k, v in want.items()}
    for inc in got.values():
        assert store.search(EventQuery(incident=inc["id"], limit=0)).total == inc["count"]


def test_an_idle_tick_resolves_what_went_quiet_in_arrival_time(tmp_path):
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG)
    store.spool_append(_items(normal() + burst(), "b", received=1.8e9))
    runner.drain()
    opened = store.incidents(status="open")
    assert opened
    last = max(i["last_received"] for i in opened)
    assert runner.tick(now=min(i["last_received"] for i in opened) + CONFIG.incident_quiet - 1) == 0
    store.spool_append(_items(normal(5), "late", received=last + 1))
    assert runner.tick(now=last + 10 * CONFIG.incident_quiet) == 0  # a batch waits: no tick
    runner.drain()
    assert runner.tick(now=last + 10 * CONFIG.incident_quiet) == len(opened)
    assert store.incidents(status="open") == []
    assert {i["id"] for i in store.incidents(status="resolved")} >= {i["id"] for i in opened}


def test_retention_takes_resolved_incidents_with_their_events(tmp_path):
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG)
    store.spool_append(_items(normal() + burst(), "b"))
    runner.drain()
    runner.tick(now=2e9)
    n = len(store.incidents(status="resolved"))
    assert n
    while store.delete_before(2e9):
        pass
    assert store.incidents() == [] and store.count_events() == 0


def _dated(iid: str, last_ts: float, last_received: float) -> dict:
    return {"id": iid, "status": "open", "source": "h", "template_id": "T1", "first_ts": last_ts,
            "last_ts": last_ts, "first_received": last_received, "last_received": last_received,
            "count": 1, "rev": 1, "examples": []}


# a replayed file dated next week, flagged first; then a live incident, flagged later
FUTURE = _dated("Ifuture", last_ts=1.9e9, last_received=1.8e9)
LIVE = _dated("Ilive", last_ts=1.8e9 + 50, last_received=1.8e9 + 100)


def test_incidents_are_listed_in_event_or_in_arrival_time(tmp_path):
    """Incidents of a future-dated replay sat above every live one (the list, the console's
    first view, was in event time only): in arrival time the live one comes first, and since
    counts arrivals."""
    store = SqliteStore(tmp_path / "db")
    store.write_incidents([FUTURE, LIVE])
    assert [i["id"] for i in store.incidents()] == ["Ifuture", "Ilive"]
    assert [i["id"] for i in store.incidents(basis="arrival")] == ["Ilive", "Ifuture"]
    assert [i["id"] for i in store.incidents(since=1.8e9 + 60, basis="arrival")] == ["Ilive"]
    assert [i["id"] for i in store.incidents(since=1.8e9 + 60)] == ["Ifuture"]


def test_a_store_made_before_arrival_listing_gets_its_incidents_arrival_times(tmp_path):
    store = SqliteStore(tmp_path / "db")
    store.write_incidents([FUTURE, LIVE])
    store.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "db")  # the table as it was: no last_received column
    conn.execute("DROP INDEX incidents_last_received")
    conn.execute("ALTER TABLE incidents DROP COLUMN last_received")
    conn.commit()
    conn.close()
    store = SqliteStore(tmp_path / "db")
    assert [i["id"] for i in store.incidents(basis="arrival")] == ["Ilive", "Ifuture"]
    assert store.incidents(basis="arrival")[0] == LIVE


def _fleet_with_a_silence(quiet_from: float, quiet_to: float, n: int = 2400) -> list[dict]:
    """Five hosts, a line every 2 s in turn (each host every 10 s); web3 sends nothing
    between ``quiet_from`` and ``quiet_to`` seconds."""
    return [e for e in normal(n) if not (e["host"] == "web3"
                                         and TS0 + quiet_from <= e["timestamp"] < TS0 + quiet_to)]


def test_a_silent_host_is_an_incident_in_the_store_while_it_is_quiet_and_survives_a_crash(tmp_path):
    from streams.incidents import SILENCE

    events = _fleet_with_a_silence(2400.0, 3600.0)  # web3 quiet for 20 minutes
    during = [e for e in events if e["timestamp"] < TS0 + 3500]  # up to 100 s before it speaks
    after = [e for e in events if e["timestamp"] >= TS0 + 3500]
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt")
    store.spool_append(_items(during, "a"))
    runner.drain()
    (inc,) = [i for i in store.incidents(limit=100) if i["kind"] == SILENCE]
    assert inc["status"] == "open" and inc["source"] == "web3" and inc["count"] == 0
    assert TS0 + 2390 <= inc["first_ts"] < TS0 + 2400 < inc["detected_ts"] < TS0 + 3500
    assert runner.tick(now=1e12) >= 0 and store.incident(inc["id"])["status"] == "open"
    runner.checkpoint()
    store.spool_append(_items(after, "b", received=2.0e9))
    runner.drain()  # web3 speaks again, stored... then the process dies
    done = store.incident(inc["id"])
    assert done["status"] == "resolved" and done["resolved_ts"] >= TS0 + 3600
    store.close()
    store = SqliteStore(tmp_path / "db")
    EmbeddedRunner(store, CONFIG, checkpoint_path=tmp_path / "ckpt").drain()  # re-run
    silences = [i for i in store.incidents(limit=100) if i["kind"] == SILENCE]
    assert [(i["id"], i["status"], i["resolved_ts"]) for i in silences] == \
        [(inc["id"], "resolved", done["resolved_ts"])]
