"""The Kafka source's delivery logic against an in-memory consumer twin (no broker needed):
offsets are committed only after the transport took the events, a refused batch is held and
retried (nothing more is fetched), a batch still refused at shutdown is not committed, and a
batch consumed again after a crash is stored once. The real-Kafka tests are in
tests/integration/test_kafka_source.py."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple

import orjson
import pytest
from aiokafka.structs import TopicPartition
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from ingest_api.decode import IngestError
from ingest_api.receivers.kafka_source import KafkaSource
from smartlogs.settings import Settings

Rec = namedtuple("Rec", "offset value timestamp")
TOPIC = "app-logs"


class Broker:
    """A topic in memory, with the committed offsets of one group."""

    def __init__(self, partitions: dict[int, list[bytes]]):
        self.log = {TopicPartition(TOPIC, p): [Rec(i, v, 1_700_000_000_000 + i) for i, v in enumerate(vals)]
                    for p, vals in partitions.items()}
        self.committed: dict[TopicPartition, int] = {}
        self.events: list = []  # ("fetch"|"commit", ...) in order
        self.fail_commits = 0

    def consumer(self, settings, topics):
        assert topics == [TOPIC]
        return FakeConsumer(self)


class FakeConsumer:
    def __init__(self, broker: Broker):
        self.b = broker
        self.pos = {tp: broker.committed.get(tp, 0) for tp in broker.log}  # a restart resumes here

    async def start(self):
        self.b.events.append(("start",))

    async def stop(self):
        self.b.events.append(("stop",))

    async def getmany(self, timeout_ms=0, max_records=None):
        out = {}
        for tp, recs in self.b.log.items():
            got = recs[self.pos[tp]:self.pos[tp] + (max_records or len(recs))]
            if got:
                out[tp] = got
                self.pos[tp] += len(got)
        if not out:
            await asyncio.sleep(min(timeout_ms, 50) / 1000)
        else:
            self.b.events.append(("fetch", {tp.partition: (r[0].offset, r[-1].offset) for tp, r in out.items()}))
        return out

    async def commit(self, offsets):
        if self.b.fail_commits:
            self.b.fail_commits -= 1
            raise RuntimeError("CommitFailedError (simulated rebalance)")
        self.b.events.append(("commit", {tp.partition: o for tp, o in offsets.items()}))
        self.b.committed.update(offsets)

    def highwater(self, tp):
        return len(self.b.log[tp])


class RecordingTransport:
    """Refuses (503) the first ``refuse`` accepts; records what it took, in order."""

    def __init__(self, broker: Broker, refuse: int = 0):
        self.b, self.refuse = broker, refuse
        self.batches: list[tuple[str, list[dict]]] = []

    async def accept(self, items, batch_id):
        if self.refuse:
            self.refuse -= 1
            raise IngestError(503, "backlog_full", "busy", retry_after=1)
        self.batches.append((batch_id, [dict(i) for i in items]))
        self.b.events.append(("accept", batch_id))


def _settings(tmp_path, **kw) -> Settings:
    base = {"data_dir": tmp_path / "var", "checkpoint_seconds": 0.5, "syslog_port": 0,
            "kafka_source_topic": TOPIC, "kafka_source_format": "auto",
            "kafka_source_max_records": 3}
    return Settings(**{**base, **kw})


async def _until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_offsets_are_committed_only_after_accept_and_a_refused_batch_is_held(tmp_path):
    broker = Broker({0: [f"line {i}".encode() for i in range(7)], 1: [b'{"message": "j"}']})
    transport = RecordingTransport(broker, refuse=2)

    async def scenario():
        src = KafkaSource(_settings(tmp_path), consumer_factory=broker.consumer, max_retry_wait=0.02)
        await src.start(transport)
        await _until(lambda: broker.committed.get(TopicPartition(TOPIC, 0)) == 7)
        await src.stop()
        return src

    src = asyncio.run(scenario())
    kinds = [e[0] for e in broker.events if e[0] in ("fetch", "accept", "commit")]
    # every fetch is followed by its accept, then its commit: never a commit first, never a
    # second fetch while the first batch was refused (the topic is the buffer)
    assert kinds == ["fetch", "accept", "commit"] * (len(kinds) // 3) and len(kinds) >= 9
    first_batch = transport.batches[0]
    assert first_batch[0] == "kafka:app-logs:0@0-2,app-logs:1@0-0"  # deterministic batch id
    assert [i["id"] for i in first_batch[1]][:2] == ["kafka:app-logs:0:0:1700000000000",
                                                     "kafka:app-logs:0:1:1700000000001"]
    assert all(i["source"] == "kafka" and i["cid"] == first_batch[0] for i in first_batch[1])
    assert src.stats.refusals == 1 and src.stats.accepted == 8 and src.stats.records == 8
    assert broker.committed == {TopicPartition(TOPIC, 0): 7, TopicPartition(TOPIC, 1): 1}


def test_stop_while_refused_commits_nothing_and_a_restart_delivers_the_batch(tmp_path):
    broker = Broker({0: [b"a", b"b"]})
    refusing = RecordingTransport(broker, refuse=10**9)

    async def first():
        src = KafkaSource(_settings(tmp_path), consumer_factory=broker.consumer,
                          max_retry_wait=0.02, drain_timeout=0.3)
        await src.start(refusing)
        await _until(lambda: src.stats.refusals == 1)
        await src.stop()

    asyncio.run(first())
    assert broker.committed == {} and refusing.batches == []

    ok = RecordingTransport(broker)

    async def second():
        src = KafkaSource(_settings(tmp_path), consumer_factory=broker.consumer)
        await src.start(ok)
        await _until(lambda: broker.committed.get(TopicPartition(TOPIC, 0)) == 2)
        await src.stop()

    asyncio.run(second())
    assert [[i["raw"] for i in items] for _, items in ok.batches] == [["a", "b"]]


def test_empty_records_are_counted_and_committed_undecodable_ones_stored_flagged(tmp_path):
    broker = Broker({0: [None, b"", b"not json", b'{"message": "ok"}']})
    transport = RecordingTransport(broker)

    async def scenario():
        src = KafkaSource(_settings(tmp_path, kafka_source_format="json", kafka_source_max_records=10),
                          consumer_factory=broker.consumer)
        await src.start(transport)
        await _until(lambda: broker.committed.get(TopicPartition(TOPIC, 0)) == 4)
        await src.stop()
        return src

    src = asyncio.run(scenario())
    (_, items), = transport.batches
    assert [i.get("message") for i in items] == ["not json", "ok"]
    assert items[0]["fields"]["decode_error"] == "invalid_json"
    assert [i["id"].split(":")[3] for i in items] == ["2", "3"]  # offsets in the ids
    assert (src.stats.empty, src.stats.undecodable, src.stats.accepted) == (2, 1, 2)


def test_crash_between_accept_and_commit_is_stored_once_in_the_embedded_store(tmp_path):
    """The commit fails after the spool took the batch (a crash or a rebalance there): the next
    consumer reads the same records again, the spool takes them a second time, and the store
    keeps each event once because the ids are the records' coordinates."""
    lines = [f"Jun 14 15:16:{i % 60:02d} combo sshd[{i}]: crash test {i}".encode() for i in range(10)]
    lines.append(orjson.dumps({"message": "json event", "host": "h1", "level": "warn"}))
    broker = Broker({0: lines})
    settings = _settings(tmp_path, kafka_source_max_records=100)
    app = create_app(settings.model_copy(update={"kafka_source_topic": ""}))
    with TestClient(app) as client:
        transport = app.state.transport
        seen: list[str] = []

        class Spy:
            async def accept(self, items, batch_id):
                seen.append(batch_id)
                await transport.accept(items, batch_id)

        def run_once(fail_commit: bool):
            broker.fail_commits = 1 if fail_commit else 0

            async def go():
                src = KafkaSource(settings, consumer_factory=broker.consumer)
                await src.start(Spy())
                await _until(lambda: src.stats.accepted >= 11)
                if fail_commit:
                    await _until(lambda: src.stats.commit_failures == 1)
                else:
                    await _until(lambda: broker.committed.get(TopicPartition(TOPIC, 0)) == 11)
                await src.stop()

            client.portal.call(go)

        run_once(fail_commit=True)   # accepted, never committed
        assert broker.committed == {}
        run_once(fail_commit=False)  # consumed again from offset 0
        assert seen == ["kafka:app-logs:0@0-10"] * 2  # the spool took the same batch twice
        deadline = time.monotonic() + 10
        while client.get("/api/events", params={"limit": 1}).json()["total"] < 11:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        res = client.get("/api/events", params={"limit": 100}).json()
        assert res["total"] == 11
        assert sorted(e["id"] for e in res["events"]) == sorted(
            f"kafka:app-logs:0:{i}:{1_700_000_000_000 + i}" for i in range(11))
        ev = {e["message"]: e for e in res["events"]}
        assert ev["crash test 3"]["host"] == "combo" and ev["crash test 3"]["receiver"] == "kafka"
        assert ev["crash test 3"]["component"] == "sshd" and ev["crash test 3"]["pid"] == "3"
        assert (ev["json event"]["host"], ev["json event"]["level"]) == ("h1", "WARNING")
        metrics = client.get("/metrics").text
        assert 'smartlogs_events_accepted_total{source="kafka"}' in metrics
        assert 'smartlogs_events_received_total{source="kafka"}' in metrics


def test_source_is_off_without_a_topic_and_refuses_an_unknown_format(tmp_path):
    assert KafkaSource.from_settings(Settings(data_dir=tmp_path)) is None
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, kafka_source_topic="t", kafka_source_format="xml")


class LimitedTransport(RecordingTransport):
    """Takes at most ``limit`` items a batch, like the spool with a small backlog limit (413)."""

    def __init__(self, broker: Broker, limit: int):
        super().__init__(broker)
        self.limit = limit

    async def accept(self, items, batch_id):
        if len(items) > self.limit:
            raise IngestError(413, "batch_too_large", "too many", limit=self.limit)
        await super().accept(items, batch_id)


def test_a_fetch_larger_than_the_transport_takes_is_delivered_in_parts_then_committed(tmp_path):
    """It retried the 413 forever (stuck, the topic never committed)."""
    broker = Broker({0: [f"line {i}".encode() for i in range(7)]})
    transport = LimitedTransport(broker, limit=2)

    async def scenario():
        src = KafkaSource(_settings(tmp_path, kafka_source_max_records=5),
                          consumer_factory=broker.consumer, max_retry_wait=0.02)
        await src.start(transport)
        await _until(lambda: broker.committed.get(TopicPartition(TOPIC, 0)) == 7)
        await src.stop()
        return src

    src = asyncio.run(scenario())
    taken = [i["raw"] for _, items in transport.batches for i in items]
    assert taken == [f"line {i}" for i in range(7)] and all(len(b) <= 2 for _, b in transport.batches)
    assert src.stats.accepted == 7
