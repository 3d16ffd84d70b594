"""The Kafka topic source against the real Kafka, inside a real ``smartlogs up`` process.

A producer in the test fills a unique topic (3 partitions) with Linux_2k.log lines and JSON
events; ``smartlogs up`` (embedded, free port, tmp data dir) with SMARTLOGS_KAFKA_SOURCE_TOPIC
stores every record exactly once: the stored ids are exactly the records' coordinates
(``kafka:<topic>:<partition>:<offset>:<timestamp>``, known from the producer's acks), with
the fields each record carried and ``source == "kafka"``. Then ``kill -9`` while the source is
consuming, twice, and a restart: still every record once, none lost, and the group's committed
offsets reach the end of the topic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from ingest_api.receivers.kafka_source import record_id
from tests.e2e.test_cli_embedded import _free_port

pytestmark = pytest.mark.engines

PARTITIONS = 3
T0 = 1_718_000_000_000  # producer timestamps (ms), explicit so the expected ids are known


@pytest.fixture
def topic(kafka):
    name = f"test-source-{uuid.uuid4().hex[:10]}"

    async def create():
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
        finally:
            await admin.close()

    async def delete():
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        try:
            await admin.start()
            await admin.delete_topics([name])
        except Exception as exc:  # noqa: BLE001 - best effort
            print(f"could not delete topic {name}: {exc}")
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(delete())


def produce(kafka: str, topic: str, values: list[bytes | None]) -> list[tuple[int, int, int]]:
    """Send the values round-robin over the partitions; [(partition, offset, timestamp ms)]."""

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=10)
        await producer.start()
        try:
            futs = [await producer.send(topic, v, key=b"tombstone" if v is None else None,
                                        partition=i % PARTITIONS, timestamp_ms=T0 + i)
                    for i, v in enumerate(values)]
            mds = await asyncio.gather(*futs)
        finally:
            await producer.stop()
        return [(md.partition, md.offset, T0 + i) for i, md in enumerate(mds)]

    return asyncio.run(go())


def committed_and_end(kafka: str, topic: str, group: str) -> tuple[dict, dict]:
    async def go():
        c = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            end = await c.end_offsets(tps)
            return ({tp.partition: await c.committed(tp) for tp in tps},
                    {tp.partition: o for tp, o in end.items()})
        finally:
            await c.stop()

    return asyncio.run(go())


def up(tmp_path, port: int, kafka: str, topic: str, group: str, **extra) -> subprocess.Popen:
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(tmp_path / "var"), "SMARTLOGS_PORT": str(port),
           "SMARTLOGS_SYSLOG_PORT": "0", "SMARTLOGS_CHECKPOINT_SECONDS": "1",
           "SMARTLOGS_KAFKA_BOOTSTRAP": kafka, "SMARTLOGS_KAFKA_SOURCE_TOPIC": topic,
           "SMARTLOGS_KAFKA_SOURCE_GROUP": group, "SMARTLOGS_KAFKA_SOURCE_FORMAT": "auto",
           **{f"SMARTLOGS_{k.upper()}": str(v) for k, v in extra.items()}}
    log_path = tmp_path / f"up-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "up", "--log-level", "info"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
        assert proc.poll() is None, tail(proc)
    proc.kill()
    raise AssertionError("smartlogs up did not start: " + tail(proc))


def tail(proc) -> str:
    return proc.log_path.read_text()[-3000:]


def all_events(url: str) -> list[dict]:
    out, after = [], 0
    while True:
        page = httpx.get(f"{url}/api/events", params={"after": after, "limit": 1000},
                         timeout=30).json()["events"]
        out += page
        if len(page) < 1000:
            return out
        after = page[-1]["seq"]


def wait_total(url: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        total = httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"},
                          timeout=10).json()["total"]
        if total >= n or time.monotonic() > deadline:
            time.sleep(1.0)  # a late duplicate would show up now
            return httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"},
                             timeout=10).json()["total"]
        time.sleep(0.2)


def linux_lines(loghub) -> list[bytes]:
    return [ln for ln in (loghub / "Linux" / "Linux_2k.log").read_bytes().split(b"\n") if ln.strip()]


def json_events(n: int, tag: str) -> list[bytes]:
    return [orjson.dumps({"message": f"{tag} payment {i} declined", "host": f"web{i % 4}",
                          "service": "checkout", "level": "error" if i % 10 == 0 else "info",
                          "timestamp": f"2024-06-10T12:{i // 60 % 60:02d}:{i % 60:02d}Z",
                          "order": i, "fields": {"region": "eu"}})
            for i in range(n)]


def test_smartlogs_up_consumes_raw_lines_and_json_events_exactly_once(tmp_path, kafka, topic, loghub):
    tag = uuid.uuid4().hex[:8]
    lines = linux_lines(loghub)
    events = json_events(300, tag)
    odd = [None, b"", b"\xff\xfe not utf-8 " + tag.encode(), orjson.dumps({"message": "own id", "id": f"{tag}-own"})]
    values = lines + events + odd
    coords = produce(kafka, topic, values)
    expected = {record_id(topic, p, o, ts) for (p, o, ts), v in zip(coords, values)
                if v and v.strip() and b"own id" not in v} | {f"{tag}-own"}
    assert len(expected) == len(lines) + len(events) + 2

    port, group = _free_port(), f"g-{tag}"
    url = f"http://127.0.0.1:{port}"
    proc = up(tmp_path, port, kafka, topic, group)
    try:
        total = wait_total(url, len(expected), timeout=90)
        stored = all_events(url)
        assert total == len(stored) == len(expected), tail(proc)
        assert {e["id"] for e in stored} == expected  # every record once, nothing else
        assert {e["receiver"] for e in stored} == {"kafka"}

        by_id = {e["id"]: e for e in stored}
        first = by_id[record_id(topic, *coords[0])]  # Linux_2k.log's first line, parsed
        assert (first["host"], first["component"], first["pid"], first["format"]) == (
            "combo", "sshd(pam_unix)", "19939", "syslog")
        assert first["message"].startswith("authentication failure; logname= uid=0")
        assert Counter(e["host"] for e in stored if e["format"] == "syslog")["combo"] == len(lines)
        j = by_id[record_id(topic, *coords[len(lines) + 10])]  # JSON event 10
        assert j["message"] == f"{tag} payment 10 declined"
        assert (j["host"], j["component"], j["level"], j["timestamp"]) == (
            "web2", "checkout", "ERROR", "2024-06-10T12:00:10.000Z")
        assert j["fields"] == {"order": 10, "region": "eu"}
        bad = by_id[record_id(topic, *coords[len(lines) + len(events) + 2])]
        assert bad["message"] == f"\ufffd\ufffd not utf-8 {tag}"
        assert bad["fields"]["decode_error"] == "invalid_utf8"

        health = httpx.get(f"{url}/healthz").json()["kafka_source"]
        assert health["connected"] and health["empty"] == 2 and health["undecodable"] == 1
        metrics = httpx.get(f"{url}/metrics").text
        assert f'smartlogs_events_accepted_total{{source="kafka"}} {float(len(expected))}' in metrics
        assert 'smartlogs_requests_rejected_total{reason="kafka_empty_record"} 2.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    committed, end = committed_and_end(kafka, topic, group)
    assert committed == end  # a clean stop leaves nothing to consume again


def test_kill_9_during_consumption_loses_nothing_and_stores_nothing_twice(tmp_path, kafka, topic, loghub):
    tag = uuid.uuid4().hex[:8]
    values = linux_lines(loghub) * 8 + json_events(2000, tag)  # 18,000 records
    coords = produce(kafka, topic, values)
    expected = {record_id(topic, p, o, ts) for p, o, ts in coords}
    n = len(expected)
    assert n == len(values)

    port, group = _free_port(), f"g-{tag}"
    url = f"http://127.0.0.1:{port}"
    # small fetches and a small backlog: the source is throttled by the pipeline (503s from the
    # spool, retried), so consumption spreads over seconds and the kills land in the middle
    opts = {"kafka_source_max_records": 250, "max_backlog_events": 1500}
    proc = up(tmp_path, port, kafka, topic, group, **opts)
    kills = []
    try:
        for threshold in (3000, 4000):  # events accepted by this process life (it restarts at 0)
            deadline = time.monotonic() + 60
            while True:
                src = httpx.get(f"{url}/healthz", timeout=5).json().get("kafka_source", {})
                if src.get("accepted", 0) >= threshold:
                    break
                assert time.monotonic() < deadline, f"the source did not reach {threshold}"
                time.sleep(0.02)
            stored_before = httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"}
                                      ).json()["total"]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert stored_before < n, "consumption had already finished: the kill proves nothing"
            kills.append(src["accepted"])
            proc = up(tmp_path, port, kafka, topic, group, **opts)
        total = wait_total(url, n, timeout=180)
        stored = all_events(url)
        assert total == len(stored) == n, tail(proc)
        assert {e["id"] for e in stored} == expected  # none lost, none twice
        assert {e["receiver"] for e in stored} == {"kafka"}
        st = httpx.get(f"{url}/api/stats", params={"windows": 10000}).json()
        assert st["totals"]["events"] == n  # windows agree with the events
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    committed, end = committed_and_end(kafka, topic, group)
    assert committed == end


def test_full_mode_publishes_to_rabbitmq_then_commits_and_a_restart_publishes_nothing_again(
        tmp_path, kafka, rabbitmq, topic, loghub):
    """The source in front of the full stack's RabbitMQ (as `smartlogs api` and
    `smartlogs kafka-source` run it): every record is published once, confirmed, and only then
    committed; a second run of the same group finds nothing left to publish."""
    import aio_pika

    from ingest_api.receivers.kafka_source import KafkaSource
    from ingest_api.transports import AmqpTransport
    from smartlogs.settings import Settings

    tag = uuid.uuid4().hex[:8]
    lines = linux_lines(loghub)[:700]
    coords = produce(kafka, topic, lines)
    expected = {record_id(topic, p, o, ts) for p, o, ts in coords}
    queue, group = f"test.source.{tag}", f"g-{tag}"
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=kafka, amqp_url=rabbitmq,
                        amqp_queue=queue, kafka_source_topic=topic, kafka_source_group=group,
                        kafka_source_format="raw", kafka_source_max_records=200)

    class Spy:
        """The AMQP transport, recording when each batch was confirmed."""

        def __init__(self, inner):
            self.inner, self.confirmed = inner, []

        async def accept(self, items, batch_id):
            await self.inner.accept(items, batch_id)  # returns once RabbitMQ confirmed
            self.confirmed.append(batch_id)

    async def run_once(expect: int) -> tuple[KafkaSource, Spy]:
        transport = AmqpTransport(settings)
        await transport.start()
        spy = Spy(transport)
        source = KafkaSource(settings)
        await source.start(spy)
        deadline = time.monotonic() + 60
        while len(source.status()["partitions"]) < PARTITIONS:  # joined the group
            assert time.monotonic() < deadline, source.status()
            await asyncio.sleep(0.05)
        while source.stats.accepted < expect:
            assert time.monotonic() < deadline, source.status()
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # anything more it would consume
        await source.stop()
        await transport.stop()
        return source, spy

    async def drain_queue() -> list[dict]:
        conn = await aio_pika.connect(rabbitmq, timeout=10)
        items = []
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(queue, passive=True)
            while (msg := await q.get(no_ack=True, fail=False)) is not None:
                items += orjson.loads(msg.body)
            await q.delete(if_unused=False, if_empty=False)
        return items

    first, spy = asyncio.run(run_once(len(lines)))
    assert first.stats.accepted == len(lines) and first.stats.commit_failures == 0
    assert len(spy.confirmed) == first.stats.commits  # one commit per confirmed batch
    committed, end = committed_and_end(kafka, topic, group)
    assert committed == end
    second, spy2 = asyncio.run(run_once(0))
    assert second.stats.records == 0 and spy2.confirmed == []  # nothing consumed twice
    items = asyncio.run(drain_queue())
    assert sorted(i["id"] for i in items) == sorted(expected)  # each record once, confirmed
    assert {i["source"] for i in items} == {"kafka"}
    assert sorted(i["raw"] for i in items) == sorted(ln.decode().rstrip("\r") for ln in lines)
