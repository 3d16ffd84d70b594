"""AmqpPublisher against the real RabbitMQ: confirmed, persistent, one message per batch, and
QueueUnavailable (fast, bounded) whenever the broker cannot take the batch."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import aio_pika
import orjson
import pytest

from ingest_api.publisher import AmqpPublisher, QueueUnavailable

pytestmark = pytest.mark.engines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"test.pub.{tag}", f"test.pub.{tag}.dlq"


async def _delete_queues(url: str, *names: str) -> None:
    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        ch = await conn.channel()
        for name in names:
            await ch.queue_delete(name, if_unused=False, if_empty=False)


def test_publish_puts_one_persistent_confirmed_message_per_batch(rabbitmq):
    queue, dlq = _names()
    batches = [
        [{"id": "b1-0", "raw": "Jun 14 15:16:01 combo sshd[1]: hello", "received": 1.5,
          "source": "http"}],
        [{"id": f"b2-{i}", "message": f"m{i}", "host": "web-1", "received": 2.0, "source": "http"}
         for i in range(50)],
    ]

    async def main():
        pub = AmqpPublisher(rabbitmq, queue, timeout=5.0, dlq=dlq)
        try:
            await pub.start()
            assert pub.connected
            for i, items in enumerate(batches):
                await pub.publish(items, batch_id=f"batch-{i}")
            assert pub.published == 2

            conn = await aio_pika.connect(rabbitmq, timeout=10)
            async with conn:
                ch = await conn.channel()
                # both queues exist and are durable: a non-durable re-declare is refused
                for name in (queue, dlq):
                    await ch.declare_queue(name, durable=True)
                with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                    await ch.declare_queue(queue, durable=False)
                ch = await conn.channel()
                q = await ch.declare_queue(queue, passive=True)
                assert q.declaration_result.message_count == 2
                for i, items in enumerate(batches):
                    msg = await q.get(timeout=5)
                    assert orjson.loads(msg.body) == items
                    assert msg.content_type == "application/json"
                    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                    assert msg.message_id == f"batch-{i}"
                    assert msg.headers["x-smartlogs-count"] == len(items)
                    await msg.ack()
        finally:
            await pub.close()
            await _delete_queues(rabbitmq, queue, dlq)
        assert not pub.connected

    asyncio.run(main())


def test_concurrent_publishes_share_one_channel(rabbitmq):
    queue, _ = _names()
    n = 300

    async def main():
        pub = AmqpPublisher(rabbitmq, queue, timeout=5.0)
        try:
            await pub.start()
            channel = pub._channel
            await asyncio.gather(*(
                pub.publish([{"id": f"c{i}-{j}", "raw": f"line {j}"} for j in range(20)],
                            batch_id=f"c{i}")
                for i in range(n)))
            assert pub._channel is channel and pub.published == n
            conn = await aio_pika.connect(rabbitmq, timeout=10)
            async with conn:
                ch = await conn.channel()
                q = await ch.declare_queue(queue, passive=True)
                assert q.declaration_result.message_count == n
                seen = set()
                while (msg := await q.get(fail=False, no_ack=True)) is not None:
                    seen.add(msg.message_id)
                assert seen == {f"c{i}" for i in range(n)}
        finally:
            await pub.close()
            await _delete_queues(rabbitmq, queue)

    asyncio.run(main())


def test_publish_to_a_deleted_queue_is_refused(rabbitmq):
    """mandatory + Basic.Return: a batch that cannot be routed is not 'accepted'."""
    queue, _ = _names()

    async def main():
        pub = AmqpPublisher(rabbitmq, queue, timeout=5.0)
        try:
            await pub.start()
            await _delete_queues(rabbitmq, queue)
            with pytest.raises(QueueUnavailable, match="returned"):
                await pub.publish([{"id": "x", "raw": "y"}], batch_id="gone")
            assert pub.connected  # the channel survives a returned message
        finally:
            await pub.close()
            await _delete_queues(rabbitmq, queue)

    asyncio.run(main())


def test_unreachable_broker_raises_fast(rabbitmq):
    url = f"amqp://guest:guest@127.0.0.1:{_free_port()}/"

    async def main():
        pub = AmqpPublisher(url, "test.pub.unreachable", timeout=2.0)
        t0 = time.monotonic()
        with pytest.raises(QueueUnavailable) as err:
            await pub.start()
        assert time.monotonic() - t0 < 3.0
        assert "unavailable" in err.value.reason and err.value.retry_after > 0
        assert not pub.connected
        t0 = time.monotonic()
        with pytest.raises(QueueUnavailable, match="not connected"):
            await pub.publish([{"id": "a", "raw": "b"}], batch_id="x")
        assert time.monotonic() - t0 < 0.5
        t0 = time.monotonic()
        await pub.close()  # also stops the background reconnect attempts
        assert time.monotonic() - t0 < 2.0

    asyncio.run(main())


def test_start_is_bounded_when_the_broker_never_answers(rabbitmq):
    """A peer that accepts TCP but never speaks AMQP: start() gives up after ~timeout."""

    async def main():
        held = []

        async def silent(reader, writer):
            held.append(writer)  # keep the socket open, say nothing

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pub = AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{port}/", "test.pub.silent", timeout=1.0)
        try:
            t0 = time.monotonic()
            with pytest.raises(QueueUnavailable):
                await pub.start()
            assert time.monotonic() - t0 < 3.5
            with pytest.raises(QueueUnavailable):
                await pub.publish([{"id": "a", "raw": "b"}], batch_id="x")
        finally:
            await pub.close()
            for w in held:
                w.close()
            server.close()

    asyncio.run(main())


def test_start_later_connects_in_the_background(rabbitmq):
    """start() failed (broker down) → the publisher keeps trying and recovers on its own."""
    port = _free_port()
    queue, _ = _names()

    async def main():
        # a TCP forwarder that refuses until we "bring the broker up"
        up = asyncio.Event()
        target = rabbitmq.rsplit("@", 1)[-1].split("/")[0]
        thost, tport = target.split(":") if ":" in target else (target, "5672")

        async def forward(reader, writer):
            if not up.is_set():
                writer.close()
                return
            r2, w2 = await asyncio.open_connection(thost, int(tport))

            async def pipe(src, dst):
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                except Exception:
                    pass
                finally:
                    dst.close()

            await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

        server = await asyncio.start_server(forward, "127.0.0.1", port)
        user = rabbitmq.split("://", 1)[1].rsplit("@", 1)[0]
        pub = AmqpPublisher(f"amqp://{user}@127.0.0.1:{port}/", queue, timeout=1.0,
                            reconnect_base=0.2, reconnect_cap=0.5)
        try:
            with pytest.raises(QueueUnavailable):
                await pub.start()
            up.set()
            deadline = time.monotonic() + 10
            while not pub.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert pub.connected
            await pub.publish([{"id": "late", "raw": "x"}], batch_id="late")
        finally:
            await pub.close()
            server.close()
            await _delete_queues(rabbitmq, queue)

    asyncio.run(main())


def test_a_full_queue_refuses_new_batches_until_it_drains(rabbitmq):
    """x-max-length-bytes + reject-publish: with nobody consuming (bridge or Kafka down), the
    queue stops growing at its bound and the publisher gets a nack (the API answers 503)."""
    queue, _ = _names()
    items = [{"id": f"i{i}", "message": "x" * 200} for i in range(2)]  # ~450 bytes a message

    async def main():
        pub = AmqpPublisher(rabbitmq, queue, timeout=5.0, max_queue_bytes=2000)
        try:
            await pub.start()
            accepted = 0
            with pytest.raises(QueueUnavailable, match="broker refused"):
                for n in range(50):
                    await pub.publish(items, batch_id=f"b{n}")
                    accepted += 1
            assert 1 <= accepted <= 5
            conn = await aio_pika.connect(rabbitmq, timeout=10)
            async with conn:
                ch = await conn.channel()
                q = await ch.declare_queue(queue, passive=True)
                assert q.declaration_result.message_count == accepted  # nothing dropped either
                await q.purge()
            await pub.publish(items, batch_id="after-drain")  # room again
        finally:
            await pub.close()
            await _delete_queues(rabbitmq, queue)

    asyncio.run(main())


def test_an_existing_queue_with_other_arguments_is_used_as_it_is(rabbitmq):
    queue, _ = _names()

    async def main():
        conn = await aio_pika.connect(rabbitmq, timeout=10)
        async with conn:
            await (await conn.channel()).declare_queue(queue, durable=True)  # no bound
        pub = AmqpPublisher(rabbitmq, queue, timeout=5.0, max_queue_bytes=2000)
        try:
            await pub.start()  # PRECONDITION_FAILED on the bounded declare: falls back, warns
            for n in range(10):  # unbounded: all taken
                await pub.publish([{"id": f"i{n}", "message": "x" * 400}], batch_id=f"b{n}")
            assert pub.published == 10
        finally:
            await pub.close()
            await _delete_queues(rabbitmq, queue)

    asyncio.run(main())
