"""The bridge against the real RabbitMQ and Kafka: exactly-once flow in steady state, host keys,
per-host order, record size, dead letters, no ack before Kafka acked, and a RabbitMQ restart."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter, defaultdict
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError

from bridge import Bridge
from bridge.bridge import ERROR_HEADER
from ingest_api.publisher import AmqpPublisher, QueueUnavailable
from tests.conftest import loghub_path

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Names:
    def __init__(self):
        tag = uuid.uuid4().hex[:10]
        self.tag = tag
        self.queue = f"test.bridge.{tag}"
        self.dlq = f"test.bridge.{tag}.dlq"
        self.topic = f"test-bridge-{tag}"


def _lines(name: str) -> list[str]:
    path = loghub_path() / name.split("_")[0] / name
    if not path.exists():
        pytest.fail(f"loghub sample {path} missing: set SMARTLOGS_LOGHUB_DIR")
    return [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]


def _items(tag: str, batch: int, spec: list[tuple[str, object]]) -> list[dict]:
    """spec: ("raw", line) | ("stream", (name, line)) | ("host", (host, message)) | ("msg",
    message) → API-shaped items."""
    now = time.time()
    out = []
    for j, (kind, value) in enumerate(spec):
        item = {"id": f"{tag}-{batch}-{j}", "received": now, "source": "http"}
        if kind == "raw":
            item["raw"] = value
        elif kind == "stream":  # a named source (X-SmartLogs-Stream, a replay's file)
            item["stream"], item["raw"] = value
        elif kind == "host":
            item["host"], item["message"] = value
        else:
            item["message"] = value
        out.append(item)
    return out


async def _cleanup(amqp: str, kafka: str, names: Names) -> None:
    try:
        conn = await aio_pika.connect(amqp, timeout=10)
        async with conn:
            ch = await conn.channel()
            for q in (names.queue, names.dlq):
                await ch.queue_delete(q, if_unused=False, if_empty=False)
    except Exception:
        pass
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    try:
        await admin.start()
        if names.topic in await admin.list_topics():
            await admin.delete_topics([names.topic])
    except Exception:
        pass
    finally:
        await admin.close()


async def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _read_topic(kafka: str, topic: str, n_items: int, timeout: float = 20.0) -> list[dict]:
    """All records of the topic: {partition, offset, key, items}; stops once n_items are read
    (plus a short quiet period to catch extra copies)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records, seen = [], 0
    try:
        deadline = time.monotonic() + timeout
        while seen < n_items and time.monotonic() < deadline:
            for tp, msgs in (await consumer.getmany(timeout_ms=300)).items():
                for m in msgs:
                    items = orjson.loads(m.value)
                    records.append({"partition": tp.partition, "offset": m.offset,
                                    "key": m.key.decode(), "items": items})
                    seen += len(items)
        for tp, msgs in (await consumer.getmany(timeout_ms=300)).items():
            for m in msgs:
                records.append({"partition": tp.partition, "offset": m.offset,
                                "key": m.key.decode(), "items": orjson.loads(m.value)})
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r["partition"], r["offset"]))
    return records


async def _queue_depth(amqp: str, name: str) -> int:
    conn = await aio_pika.connect(amqp, timeout=10)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name, passive=True)
        return q.declaration_result.message_count


async def _start(bridge: Bridge) -> asyncio.Task:
    task = asyncio.create_task(bridge.run())
    await asyncio.sleep(0)
    return task


async def _stop(bridge: Bridge, task: asyncio.Task) -> None:
    await bridge.close()
    await asyncio.wait_for(task, 30)


class _Session:
    """A test's publisher, started, and the bridge it runs (``start``/``stop``)."""

    def __init__(self, pub: AmqpPublisher):
        self.pub = pub
        self.running: tuple[Bridge, asyncio.Task] | None = None

    async def start(self, bridge: Bridge) -> None:
        self.running = (bridge, await _start(bridge))

    async def stop(self) -> None:
        bridge, task = self.running
        self.running = None
        await _stop(bridge, task)


@asynccontextmanager
async def _session(pub: AmqpPublisher, amqp: str, kafka: str, names: Names):
    """``pub`` started; on the way out, whatever happened: the running bridge stopped, the
    publisher closed, the test's queues and topic deleted."""
    run = _Session(pub)
    try:
        await pub.start()
        yield run
    finally:
        if run.running is not None:
            await run.stop()
        await pub.close()
        await _cleanup(amqp, kafka, names)


# -- tests --------------------------------------------------------------------------------

def test_batches_arrive_exactly_once_keyed_by_source_in_order(rabbitmq, kafka):
    """Keyed by what the request carries (issue 18): the event's host, else its named stream,
    else its receiver; a raw line is not parsed to find a host."""
    linux, ssh = _lines("Linux_2k.log"), _lines("OpenSSH_2k.log")
    names = Names()
    batches = [
        _items(names.tag, 0, [("stream", ("linux.log", ln)) for ln in linux[:250]]),
        _items(names.tag, 1, [x for i in range(300) for x in
                              ([("raw", ssh[i])] + ([("host", (f"web-{i % 3}", f"GET /{i}"))]
                                                    if i % 4 == 0 else []))]),
        _items(names.tag, 2, [("stream", ("linux.log", linux[250 + i])) if i % 2
                              else ("raw", ssh[300 + i]) for i in range(180)]
               + [("msg", "no header here"), ("host", ("db-1", "checkpoint")),
                  ("msg", "Jun 14 15:16:01 edge-7 sshd[9]: a syslog line sent as message")]),
    ]
    expected_host = {}
    for items in batches:
        for it in items:
            # a host only when the event carries one: the syslog header of a raw line or of a
            # message ("edge-7") is the pipeline's to parse, not the bridge's
            expected_host[it["id"]] = it.get("host") or it.get("stream") or "http"
    order = [it["id"] for items in batches for it in items]
    total = len(order)
    max_lines = 100

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        bridge = Bridge(rabbitmq, names.queue, names.dlq, kafka, names.topic, prefetch=16,
                        partitions=4, max_lines_per_record=max_lines)
        async with _session(pub, rabbitmq, kafka, names) as run:
            for i, items in enumerate(batches):
                await pub.publish(items, batch_id=f"{names.tag}-{i}")
            await run.start(bridge)
            await _wait(lambda: bridge.acked == len(batches), 20, "3 batches acked")
            records = await _read_topic(kafka, names.topic, total)
            assert await _queue_depth(rabbitmq, names.queue) == 0
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
            await admin.start()
            try:
                (meta,) = await admin.describe_topics([names.topic])
                assert len(meta["partitions"]) == 4
            finally:
                await admin.close()
        return records, bridge

    records, bridge = asyncio.run(main())

    ids = Counter(it["id"] for r in records for it in r["items"])
    assert sum(ids.values()) == total and set(ids) == set(order), "every item exactly once"
    for r in records:
        assert 1 <= len(r["items"]) <= max_lines
        assert {expected_host[it["id"]] for it in r["items"]} == {r["key"]}
    # one host lives in one partition, and its items come in publish order
    partitions = defaultdict(set)
    per_host = defaultdict(list)
    for r in records:
        partitions[r["key"]].add(r["partition"])
        per_host[r["key"]].extend(it["id"] for it in r["items"])
    assert all(len(p) == 1 for p in partitions.values())
    # the partition is streams.partitions.partition_of(key, 4): the rule both runtimes share
    from streams.partitions import partition_of

    assert {k: p.pop() for k, p in partitions.items()} == {k: partition_of(k, 4) for k in partitions}
    assert set(per_host) == {"linux.log", "http", "web-0", "web-1", "web-2", "db-1"}
    for host, got in per_host.items():
        assert got == [i for i in order if expected_host[i] == host], host
    # the original items, untouched
    by_id = {it["id"]: it for items in batches for it in items}
    assert all(it == by_id[it["id"]] for r in records for it in r["items"])
    assert (bridge.consumed, bridge.acked, bridge.produced_lines) == (3, 3, total)
    assert bridge.produced_records == len(records)
    assert bridge.dead_lettered == 0


def test_garbage_goes_to_the_dlq_while_good_batches_flow(rabbitmq, kafka):
    names = Names()
    good = [_items(names.tag, b, [("host", ("h1", f"m{b}-{j}")) for j in range(10)])
            for b in range(2)]
    garbage = [
        (b"\x00\xffnot json at all", "not JSON"),
        (b'{"id": "x", "raw": "an object, not a list"}', "expected an array"),
        (orjson.dumps([{"id": "ok", "raw": "a"}, {"raw": "no id"}]), "no 'id'"),
        (orjson.dumps([{"id": "ok"}, "a string"]), "expected an object"),
    ]

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        bridge = Bridge(rabbitmq, names.queue, names.dlq, kafka, names.topic)
        dead = []
        async with _session(pub, rabbitmq, kafka, names) as run:
            await run.start(bridge)
            await pub.publish(good[0], batch_id="good-0")
            for i, (body, _) in enumerate(garbage):
                await pub._channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"bad-{i}", headers={"origin": "test"},
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=names.queue)
            await pub.publish(good[1], batch_id="good-1")
            await _wait(lambda: bridge.acked == 2 + len(garbage), 20, "all messages settled")
            records = await _read_topic(kafka, names.topic, 20)
            conn = await aio_pika.connect(rabbitmq, timeout=10)
            async with conn:
                ch = await conn.channel()
                dlq = await ch.declare_queue(names.dlq, passive=True)
                while (msg := await dlq.get(fail=False, no_ack=True)) is not None:
                    dead.append(msg)
            depth = await _queue_depth(rabbitmq, names.queue)
        return records, dead, depth, bridge

    records, dead, depth, bridge = asyncio.run(main())
    assert depth == 0
    assert bridge.dead_lettered == len(garbage) and bridge.produced_lines == 20
    assert sorted(it["id"] for r in records for it in r["items"]) == sorted(
        it["id"] for b in good for it in b)
    assert [m.message_id for m in dead] == [f"bad-{i}" for i in range(len(garbage))]
    for msg, (body, reason) in zip(dead, garbage):
        assert msg.body == body  # the original body, untouched
        assert reason in msg.headers[ERROR_HEADER]
        assert msg.headers["origin"] == "test"  # original headers kept
        assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


def test_nothing_is_acked_while_kafka_is_unreachable(rabbitmq, kafka):
    """A bridge pointed at a Kafka port with nothing listening leaves the batches in RabbitMQ;
    a bridge with the right Kafka then moves them."""
    names = Names()
    batches = [_items(names.tag, b, [("host", (f"h{j % 2}", f"m{j}")) for j in range(30)])
               for b in range(2)]

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        dead_kafka = f"127.0.0.1:{_free_port()}"
        blind = Bridge(rabbitmq, names.queue, names.dlq, dead_kafka, names.topic,
                       connect_timeout=1.0, reconnect_base=0.2, reconnect_cap=0.5)
        good = Bridge(rabbitmq, names.queue, names.dlq, kafka, names.topic)
        async with _session(pub, rabbitmq, kafka, names) as run:
            for i, items in enumerate(batches):
                await pub.publish(items, batch_id=f"b{i}")
            await run.start(blind)
            await asyncio.sleep(2.5)
            assert (blind.acked, blind.produced_lines) == (0, 0)
            assert await _queue_depth(rabbitmq, names.queue) == 2  # still there, ready
            await run.stop()
            assert await _queue_depth(rabbitmq, names.queue) == 2

            await run.start(good)
            await _wait(lambda: good.acked == 2, 20, "the batches to flow")
            records = await _read_topic(kafka, names.topic, 60)
        return records

    records = asyncio.run(main())
    ids = Counter(it["id"] for r in records for it in r["items"])
    assert set(ids) == {it["id"] for b in batches for it in b} and set(ids.values()) == {1}


class _FailingProducer:
    """Wraps the real producer; every send's delivery future fails (a Kafka timeout) after a
    delay. While it is pending the AMQP message must stay unacknowledged."""

    def __init__(self, real, delay: float):
        self.real, self.delay = real, delay

    async def start(self):
        await self.real.start()

    async def stop(self):
        await self.real.stop()

    async def partitions_for(self, topic):
        return await self.real.partitions_for(topic)

    async def send(self, topic, value=None, key=None, **kw):
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(
            self.delay, lambda: fut.done() or fut.set_exception(KafkaTimeoutError("injected")))
        return fut


def test_kafka_failure_nacks_and_redelivers(rabbitmq, kafka):
    names = Names()
    batches = [_items(names.tag, b, [("host", ("h", f"m{b}-{j}")) for j in range(25)])
               for b in range(3)]
    observed = {}

    class FlakyBridge(Bridge):
        made = 0

        def _new_producer(self):
            FlakyBridge.made += 1
            real = super()._new_producer()
            return _FailingProducer(real, delay=1.0) if FlakyBridge.made == 1 else real

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        bridge = FlakyBridge(rabbitmq, names.queue, names.dlq, kafka, names.topic,
                             reconnect_base=0.3)
        async with _session(pub, rabbitmq, kafka, names) as run:
            for i, items in enumerate(batches):
                await pub.publish(items, batch_id=f"b{i}")
            await run.start(bridge)
            await _wait(lambda: bridge.consumed >= 3, 10, "deliveries")
            await asyncio.sleep(0.5)  # the sends are pending: nothing may be acked yet
            observed["acked_while_pending"] = bridge.acked
            observed["unacked_while_pending"] = len(bridge._unacked)
            await _wait(lambda: bridge.acked == 3, 20, "redelivered batches acked")
            records = await _read_topic(kafka, names.topic, 75)
        return records, bridge

    records, bridge = asyncio.run(main())
    assert observed == {"acked_while_pending": 0, "unacked_while_pending": 3}
    assert bridge.kafka_failures == 1 and bridge.requeued == 3 and bridge.consumed == 6
    assert FlakyBridge.made == 2
    got = [it["id"] for r in records for it in r["items"]]
    assert got == [it["id"] for b in batches for it in b]  # requeued in order, exactly once


class _SlowProducer(_FailingProducer):
    """The real producer, but each delivery future resolves ``delay`` s after Kafka acked: keeps
    a few deliveries unacknowledged at any moment, so a broker restart catches some in flight."""

    async def send(self, topic, value=None, key=None, **kw):
        real = await self.real.send(topic, value=value, key=key, **kw)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def later(f):
            if f.exception() is not None:
                loop.call_later(self.delay, lambda: fut.done() or fut.set_exception(f.exception()))
            else:
                loop.call_later(self.delay, lambda: fut.done() or fut.set_result(f.result()))

        real.add_done_callback(later)
        return fut


def test_rabbitmq_restart_loses_nothing(rabbitmq, kafka):
    """Publish before, during (retrying on 503) and after `restart.sh rabbitmq`: every batch the
    broker confirmed reaches Kafka (duplicates by id allowed at this hop)."""
    linux = _lines("Linux_2k.log")
    names = Names()
    confirmed: list[list[dict]] = []

    class SlowBridge(Bridge):
        def _new_producer(self):
            return _SlowProducer(super()._new_producer(), delay=0.25)

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=3.0, dlq=names.dlq,
                            reconnect_base=0.2, reconnect_cap=1.0)
        bridge = SlowBridge(rabbitmq, names.queue, names.dlq, kafka, names.topic, prefetch=4,
                            reconnect_base=0.2, reconnect_cap=1.0)
        task = None
        restart_rc = None
        try:
            await pub.start()
            task = await _start(bridge)

            async def publish_until(done: asyncio.Event, start: int, pause: float):
                b = start
                while not done.is_set():
                    items = _items(names.tag, b, [("raw", linux[(b * 50 + j) % len(linux)])
                                                  for j in range(50)])
                    try:
                        await pub.publish(items, batch_id=f"r{b}")
                    except QueueUnavailable:
                        await asyncio.sleep(0.1)
                        continue
                    confirmed.append(items)
                    b += 1
                    await asyncio.sleep(pause)
                return b

            # before: a backlog the bridge is working on when the broker goes away
            for b in range(40):
                items = _items(names.tag, b, [("raw", linux[(b * 50 + j) % len(linux)])
                                              for j in range(50)])
                await pub.publish(items, batch_id=f"r{b}")
                confirmed.append(items)
            during = asyncio.Event()
            publisher = asyncio.create_task(publish_until(during, 40, 0.2))
            proc = await asyncio.create_subprocess_exec(
                str(REPO / "scripts" / "engines" / "restart.sh"), "rabbitmq",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            restart_rc = proc.returncode
            assert restart_rc == 0, out.decode(errors="replace")[-2000:]
            # after: keep publishing until the publisher got through again, then a few more
            await _wait(lambda: pub.connected, 30, "the publisher to reconnect")
            n_before = len(confirmed)
            await _wait(lambda: len(confirmed) >= n_before + 5, 30, "publishes after restart")
            during.set()
            await publisher
            total_ids = {it["id"] for items in confirmed for it in items}
            await _wait(lambda: bridge.produced_lines >= len(total_ids) and
                        bridge._unacked == {}, 40, "the bridge to catch up")
            records = await _read_topic(kafka, names.topic, len(total_ids), timeout=30)
        finally:
            if task is not None:
                await _stop(bridge, task)
            await pub.close()
            if restart_rc != 0:  # never leave the shared broker down
                await (await asyncio.create_subprocess_exec(
                    str(REPO / "scripts" / "engines" / "start.sh"), "rabbitmq")).wait()
            await _cleanup(rabbitmq, kafka, names)
        return records, bridge

    records, bridge = asyncio.run(main())
    want = {it["id"] for items in confirmed for it in items}
    got = Counter(it["id"] for r in records for it in r["items"])
    missing = want - set(got)
    assert not missing, f"{len(missing)} confirmed items never reached Kafka"
    assert set(got) <= want
    print("restart test:", bridge.stats(), "confirmed batches", len(confirmed),
          "duplicated items", sum(n - 1 for n in got.values()))
    assert bridge.reconnects >= 1
    assert bridge.ack_failures + bridge.stale_dropped >= 1, "the restart caught nothing in flight"
    assert len(confirmed) >= 45


def test_run_bridge_process_stops_cleanly_on_sigterm(rabbitmq, kafka):
    """`python -m bridge.bridge` builds the bridge from SMARTLOGS_ settings, moves a batch, and
    exits 0 on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    names = Names()
    items = _items(names.tag, 0, [("host", ("cli-host", f"m{j}")) for j in range(5)])
    env = dict(os.environ, SMARTLOGS_AMQP_URL=rabbitmq, SMARTLOGS_AMQP_QUEUE=names.queue,
               SMARTLOGS_AMQP_DLQ=names.dlq, SMARTLOGS_KAFKA_BOOTSTRAP=kafka,
               SMARTLOGS_KAFKA_TOPIC=names.topic, SMARTLOGS_KAFKA_PARTITIONS="2")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.bridge"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        try:
            await pub.start()
            await pub.publish(items, batch_id="cli")
            deadline = time.monotonic() + 20
            while (partitions := await _partitions(kafka, names.topic)) is None:
                assert proc.poll() is None, proc.communicate()[0][-3000:]
                assert time.monotonic() < deadline, "the bridge did not create the topic"
                await asyncio.sleep(0.2)
            assert partitions == 2  # SMARTLOGS_KAFKA_PARTITIONS
            return await _read_topic(kafka, names.topic, len(items), timeout=20)
        finally:
            await pub.close()

    try:
        records = asyncio.run(main())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        asyncio.run(_cleanup(rabbitmq, kafka, names))
    assert proc.returncode == 0, out[-3000:]
    assert [it["id"] for r in records for it in r["items"]] == [it["id"] for it in items]
    assert {r["key"] for r in records} == {"cli-host"}
    assert "bridge stopped" in out and "'acked': 1" in out


async def _partitions(kafka: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return None
        (meta,) = await admin.describe_topics([topic])
        return len(meta["partitions"])
    finally:
        await admin.close()


def test_large_items_split_by_bytes_and_oversized_item_dead_lettered(rabbitmq, kafka):
    names = Names()
    big = "x" * 100_000
    spec = [("host", ("big", f"{j}:{big}")) for j in range(12)]
    spec.insert(6, ("host", ("big", "y" * 1_200_000)))  # alone larger than a Kafka request
    items = _items(names.tag, 0, spec)
    oversized_id = items[6]["id"]

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        bridge = Bridge(rabbitmq, names.queue, names.dlq, kafka, names.topic,
                        max_record_bytes=512 * 1024)
        async with _session(pub, rabbitmq, kafka, names) as run:
            await pub.publish(items, batch_id="big")
            await run.start(bridge)
            await _wait(lambda: bridge.acked == 1, 20, "the batch acked")
            records = await _read_topic(kafka, names.topic, 12)
            conn = await aio_pika.connect(rabbitmq, timeout=10)
            async with conn:
                ch = await conn.channel()
                dlq = await ch.declare_queue(names.dlq, passive=True)
                dead = await dlq.get(timeout=5, no_ack=True)
        return records, dead, bridge

    records, dead, bridge = asyncio.run(main())
    assert [it["id"] for r in records for it in r["items"]] == [
        it["id"] for it in items if it["id"] != oversized_id]
    assert len(records) >= 3
    assert all(len(orjson.dumps(r["items"])) <= 512 * 1024 for r in records)
    assert [it["id"] for it in orjson.loads(dead.body)] == [oversized_id]
    assert dead.headers["x-smartlogs-items"] == 1 and "larger than" in dead.headers[ERROR_HEADER]
    assert (bridge.dead_lettered, bridge.dead_lettered_items, bridge.produced_lines) == (1, 1, 12)


def test_many_small_messages_are_joined_into_few_records_exactly_once_in_order(rabbitmq, kafka):
    """Issue 18 (small requests): clients posting a line each make one AMQP message per group
    commit, a few lines each, and the bridge made one Kafka record per source of each, so the
    worker paid its per-message cost for every few lines. The deliveries the bridge holds go
    out together, a source's items joined into one record (in order; every item once; each
    message acked after Kafka took its records)."""
    names = Names()
    sources = ("app-1.log", "app-2.log")
    batches = [_items(names.tag, i, [("stream", (sources[i % 2], f"small request {i}"))])
               for i in range(40)]
    order = [it["id"] for items in batches for it in items]

    async def main():
        pub = AmqpPublisher(rabbitmq, names.queue, timeout=5.0, dlq=names.dlq)
        bridge = Bridge(rabbitmq, names.queue, names.dlq, kafka, names.topic, prefetch=64,
                        partitions=4)
        async with _session(pub, rabbitmq, kafka, names) as run:
            for i, items in enumerate(batches):  # all waiting before the bridge starts
                await pub.publish(items, batch_id=f"{names.tag}-{i}")
            await run.start(bridge)
            await _wait(lambda: bridge.acked == len(batches), 30, "40 messages acked")
            records = await _read_topic(kafka, names.topic, len(order))
            assert await _queue_depth(rabbitmq, names.queue) == 0
        return records, bridge

    records, bridge = asyncio.run(main())
    got = [it["id"] for r in records for it in r["items"]]
    assert sorted(got) == sorted(order), "every item exactly once"
    for source in sources:
        assert ([it["id"] for r in records if r["key"] == source for it in r["items"]]
                == [it["id"] for items in batches for it in items if it["stream"] == source])
    # before: 40, one a message; how many join depends on how the deliveries reach the buffer
    assert len(records) < len(batches)
    assert (bridge.acked, bridge.produced_lines, bridge.produced_records) == (40, 40, len(records))
