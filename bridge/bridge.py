"""The bridge: consume HTTP batches from RabbitMQ, produce source-keyed line batches to Kafka.

Flow, per AMQP message (one HTTP batch, ``orjson`` list of item dicts, each with an ``id``)::

    decode ── invalid ──▶ DLQ queue (original body, header x-smartlogs-error) ─▶ ack
       │
       ▼
    split by source key (item["host"] when the event carries one, else its named stream, else
    its receiver: what the request already says; no line is parsed here), original order kept
    within a source; chunks of ≤ max_lines_per_record items (and ≤
    max_record_bytes serialized; a single item too large for Kafka goes to the DLQ instead)
       │
       ▼
    deliveries already buffered behind it go with it: a source's records of consecutive
    messages are joined within the same limits (many small messages → few Kafka records)
       │
       ▼
    producer.send(topic, key=source, partition=partition_of(source, n), value=orjson.dumps(chunk))
                                                                  (every record) ──▶ futures
       │
       ▼
    await all futures (Kafka acks=all) ─▶ AMQP ack of each message (Kafka failed ─▶ nack + requeue)

Guarantees and how they are kept:

* **At least once.** A message is acknowledged only after every Kafka send made for it was
  acknowledged (``acks="all"``, idempotent producer). Redeliveries produce the same items with
  the same ids again; downstream dedupe by id absorbs them.
* **Order.** One dispatcher task takes deliveries in delivery order and calls ``send`` for all
  records of a message before the next message, so one source's records reach its partition in
  publish order (the idempotent producer keeps order across its own retries). A separate acker
  task awaits the futures, in order, and acks. Up to ``prefetch`` messages are in flight.
  After a failure (requeue/redelivery) order across the requeued messages is not guaranteed.
* **Kafka failure** (a send future fails, e.g. after ``request_timeout_ms`` of a broker being
  away; the producer retries retriable errors by itself until then): the consumer is
  cancelled, every unacknowledged message is nacked with requeue (delivery order), the producer
  is closed and recreated after a capped exponential backoff, then consumption resumes.
  While no producer can be started (Kafka down) the bridge does not consume at all.
  (aiokafka re-requests metadata in a tight loop while a broker is down; the bridge's producer
  spaces those retries out, see :func:`_throttle_metadata_retries`.)
* **RabbitMQ failure.** ``connect_robust`` (with capped exponential backoff, see
  :class:`ingest_api.publisher.BackoffRobustConnection`) reconnects and restores the channel,
  qos, queues and the consumer. The broker requeues whatever was unacknowledged on the dead
  channel; deliveries of the dead channel still buffered here are dropped unprocessed, acks that
  can no longer be sent are counted (``ack_failures``): those messages come again (duplicates).
* **Poison messages** go to the DLQ queue with the reason, and are counted (``dead_lettered``).

Run it with ``python -m bridge.bridge`` (settings from the ``SMARTLOGS_`` environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.abc import AbstractRobustQueue
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ingest_api.publisher import (RECONNECT_BASE, RECONNECT_CAP, connect_with_backoff,
                                  declare_ingest_queue)
from smartlogs import metrics
from smartlogs.security import (amqp_connect_url, amqp_ssl_context, describe_error,
                                kafka_client_kwargs, redact_url, register_secrets)
from smartlogs.settings import Settings, get_settings
from streams.partitions import partition_key, partition_of

__all__ = ["Bridge", "InvalidBatch", "decode_batch", "run_bridge", "main", "ERROR_HEADER"]

log = logging.getLogger(__name__)

ERROR_HEADER = "x-smartlogs-error"
# aiokafka max_request_size and max_batch_size; the broker's default limit is 1,048,588 bytes
KAFKA_MAX_REQUEST = 1_000_000
_TOPIC_ALREADY_EXISTS = 36


class InvalidBatch(ValueError):
    """An AMQP body that is not a JSON array of item objects with ids."""


def decode_batch(body: bytes) -> list[dict]:
    """Decode and check one AMQP body; raise :class:`InvalidBatch` with a clear reason."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBatch(f"body is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise InvalidBatch(f"body is a JSON {type(items).__name__}, expected an array of items")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidBatch(f"item {i} is a JSON {type(item).__name__}, expected an object")
        eid = item.get("id")
        if not isinstance(eid, str) or not eid:
            raise InvalidBatch(f"item {i} has no 'id' string")
    return items


class Bridge:
    """Consume batches from a durable RabbitMQ queue, produce source-keyed records to Kafka."""

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        dlq: str,
        kafka_bootstrap: str,
        topic: str,
        *,
        prefetch: int = 64,
        partitions: int = 4,
        max_lines_per_record: int = 500,
        max_record_bytes: int = 512 * 1024,
        connect_timeout: float = 10.0,
        request_timeout_ms: int = 30_000,
        reconnect_base: float = RECONNECT_BASE,
        reconnect_cap: float = RECONNECT_CAP,
        drain_timeout: float = 10.0,
        kafka_kwargs: dict[str, Any] | None = None,
        amqp_ssl_context: ssl.SSLContext | None = None,
        max_queue_bytes: int = 0,
    ):
        if max_lines_per_record < 1:
            raise ValueError("max_lines_per_record must be >= 1")
        self.amqp_url = amqp_url
        self.queue_name = queue
        self.dlq_name = dlq
        self.kafka_bootstrap = kafka_bootstrap
        self.topic = topic
        self.prefetch = prefetch
        self.max_queue_bytes = max_queue_bytes  # must equal the API's (same queue arguments)
        self.partitions = partitions
        self.max_lines_per_record = max_lines_per_record
        self.max_record_bytes = max(1024, min(max_record_bytes, KAFKA_MAX_REQUEST - 4096))
        self.connect_timeout = connect_timeout
        self.request_timeout_ms = request_timeout_ms
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self.drain_timeout = drain_timeout
        # credentials and TLS (smartlogs.security): aiokafka security kwargs, amqps context
        self.kafka_kwargs = dict(kafka_kwargs or {})
        self.amqp_ssl_context = amqp_ssl_context

        # counters
        self.consumed = 0           # AMQP deliveries received (redeliveries included)
        self.acked = 0              # AMQP messages acknowledged after Kafka acked
        self.produced_records = 0   # Kafka records acknowledged
        self.produced_lines = 0     # items inside them
        self.dead_lettered = 0      # messages published to the DLQ queue
        self.dead_lettered_items = 0  # single items too large for Kafka, sent to the DLQ
        self.reconnects = 0         # AMQP reconnections + Kafka producer recreations
        self.kafka_failures = 0     # Kafka errors that made the bridge requeue and recreate
        self.requeued = 0           # messages nacked with requeue
        self.ack_failures = 0       # acks lost with a dead channel (the broker redelivers)
        self.stale_dropped = 0      # buffered deliveries of a dead channel, dropped unprocessed

        self._halt = asyncio.Event()
        self._closed = False
        self._running: asyncio.Task | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._producer: AIOKafkaProducer | None = None
        self._n_partitions = 0  # of the topic, known once the producer started (0: the default partitioner)
        self._consumer_tag: str | None = None
        self._seq = 0
        self._unacked: dict[int, AbstractIncomingMessage] = {}  # insertion = delivery order
        self._buffer: asyncio.Queue[tuple[int, AbstractIncomingMessage]] = asyncio.Queue()
        self._inflight: asyncio.Queue = asyncio.Queue()
        self._failure: asyncio.Future | None = None

    # -- public ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        keys = ("consumed", "acked", "produced_records", "produced_lines", "dead_lettered",
                "dead_lettered_items", "reconnects", "kafka_failures", "requeued",
                "ack_failures", "stale_dropped")
        return {k: getattr(self, k) for k in keys} | {"unacked": len(self._unacked)}

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready when consuming from RabbitMQ with a Kafka producer up (the /healthz answer).

        Called from the metrics thread: it only reads attributes."""
        conn = self._connection
        amqp = bool(conn is not None and not conn.is_closed and conn.connected.is_set()
                    and self._consumer_tag)
        kafka = self._producer is not None
        return amqp and kafka, {"rabbitmq": "consuming" if amqp else "disconnected",
                                "kafka": "connected" if kafka else "disconnected",
                                "unacked": len(self._unacked)}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Bridge until ``stop`` is set or :meth:`close` is called; then shut down cleanly."""
        if self._closed:
            raise RuntimeError("bridge closed")
        self._running = asyncio.current_task()
        watcher = asyncio.create_task(self._watch(stop)) if stop is not None else None
        try:
            if not await self._connect_amqp():
                return
            delay = self.reconnect_base
            while not self._halt.is_set():
                try:
                    await self._start_kafka()
                except Exception as exc:
                    log.warning("Kafka %s unavailable (%s); retrying in %.1f s",
                                self.kafka_bootstrap, describe_error(exc), delay)
                    await self._stop_producer()
                    await self._sleep(delay)
                    delay = min(self.reconnect_cap, delay * 2)
                    continue
                acked_before = self.acked
                failure = await self._pump()
                if failure is None:
                    break
                if self.acked > acked_before:
                    delay = self.reconnect_base  # it worked for a while: start the backoff over
                self.kafka_failures += 1
                self.reconnects += 1
                log.warning("Kafka send failed (%s): messages requeued; recreating the producer "
                            "in %.1f s", describe_error(failure), delay)
                await self._stop_producer()
                await self._sleep(delay)
                delay = min(self.reconnect_cap, delay * 2)
        finally:
            if watcher is not None:
                watcher.cancel()
            await self._shutdown()
            self._running = None

    async def close(self) -> None:
        """Stop a running :meth:`run` (graceful: in-flight Kafka sends may finish) and clean up."""
        self._closed = True
        self._halt.set()
        running = self._running
        if running is not None and running is not asyncio.current_task():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(running), self.drain_timeout + 15)
        await self._shutdown()

    # -- connections ----------------------------------------------------------------------

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._halt.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._halt.wait(), seconds)

    async def _connect_amqp(self) -> bool:
        delay = self.reconnect_base
        while not self._halt.is_set():
            try:
                conn = await connect_with_backoff(self.amqp_url, timeout=self.connect_timeout,
                                                  base=self.reconnect_base, cap=self.reconnect_cap,
                                                  ssl_context=self.amqp_ssl_context)
            except Exception as exc:
                log.warning("RabbitMQ unavailable (%s); retrying in %.1f s", describe_error(exc), delay)
                await self._sleep(delay)
                delay = min(self.reconnect_cap, delay * 2)
                continue
            try:
                channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
                channel, queue = await declare_ingest_queue(
                    conn, channel, self.queue_name, max_bytes=self.max_queue_bytes,
                    publisher_confirms=True, on_return_raises=True)
                await channel.set_qos(prefetch_count=self.prefetch)
                await channel.declare_queue(self.dlq_name, durable=True)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await conn.close()
                log.warning("RabbitMQ setup failed (%s); retrying in %.1f s", describe_error(exc), delay)
                await self._sleep(delay)
                delay = min(self.reconnect_cap, delay * 2)
                continue
            conn.reconnect_callbacks.add(self._on_amqp_reconnect)
            self._connection, self._channel, self._queue = conn, channel, queue
            log.info("bridge consuming %r (prefetch %d)", self.queue_name, self.prefetch)
            return True
        return False

    def _on_amqp_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        log.warning("bridge: RabbitMQ reconnected; the consumer is restored")

    def _new_producer(self) -> AIOKafkaProducer:
        """The Kafka producer (a method, so tests can inject faults)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka_bootstrap,
            client_id="smartlogs-bridge",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=KAFKA_MAX_REQUEST,
            max_request_size=KAFKA_MAX_REQUEST,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=200,
            **self.kafka_kwargs,
        )
        _throttle_metadata_retries(producer.client, base=0.1, cap=2.0)
        return producer

    async def _start_kafka(self) -> None:
        producer = self._new_producer()
        self._producer = producer
        await asyncio.wait_for(producer.start(), self.connect_timeout)
        await asyncio.wait_for(self._ensure_topic(), self.connect_timeout)
        # the topic's partition count as it is (it may predate SMARTLOGS_KAFKA_PARTITIONS): each
        # record goes to streams.partitions.partition_of(key, n), the rule the embedded shards
        # use too, rather than the client's default partitioner
        parts = await asyncio.wait_for(producer.partitions_for(self.topic), self.connect_timeout)
        self._n_partitions = len(parts)

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap,
                                    client_id="smartlogs-bridge-admin",
                                    request_timeout_ms=int(self.connect_timeout * 1000),
                                    **self.kafka_kwargs)
        try:
            await admin.start()
            if self.topic in await admin.list_topics():
                return
            resp = await admin.create_topics(
                [NewTopic(self.topic, num_partitions=self.partitions, replication_factor=1)])
            for entry in resp.topic_errors:
                name, code = entry[0], entry[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"cannot create topic {name!r}: error {code} {entry[2:]}")
                if code == 0:
                    log.info("created Kafka topic %r with %d partitions", name, self.partitions)
        finally:
            await admin.close()

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), 5.0)
        except Exception as exc:  # a dead broker: pending batches are abandoned (requeued above)
            log.debug("producer stop: %s", describe_error(exc))

    async def _shutdown(self) -> None:
        await self._stop_producer()
        conn, self._connection, self._channel, self._queue = self._connection, None, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    # -- consuming ------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # no await before the put: deliveries keep their order
        self._seq += 1
        self._unacked[self._seq] = message
        self._buffer.put_nowait((self._seq, message))
        self.consumed += 1

    async def _pump(self) -> BaseException | None:
        """Consume until halted (returns None) or Kafka fails (returns the error)."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        self._failure = loop.create_future()
        self._inflight = asyncio.Queue()
        if not await self._start_consumer():
            return None
        dispatcher = asyncio.create_task(self._dispatch(), name="bridge-dispatch")
        acker = asyncio.create_task(self._ack_loop(), name="bridge-ack")
        halt = asyncio.create_task(self._halt.wait())
        try:
            done, _ = await asyncio.wait({self._failure, halt, dispatcher, acker},
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in (dispatcher, acker):  # a bug, not Kafka: surface it
                if task in done and not task.cancelled() and task.exception() is not None:
                    raise task.exception()
            if self._failure.done():
                await self._cancel_consumer()
                await _cancel(dispatcher, acker)
                self._forget_inflight()
                await self._requeue_all()
                return self._failure.exception()
            # halted: stop taking new messages, let sent ones finish, requeue the rest
            await self._cancel_consumer()
            await _cancel(dispatcher)
            self._inflight.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.wait({acker, self._failure},
                                                    return_when=asyncio.FIRST_COMPLETED),
                                       self.drain_timeout)
            await _cancel(acker)
            self._forget_inflight()
            await self._requeue_all()
            return None
        finally:
            halt.cancel()
            await _cancel(dispatcher, acker)

    async def _start_consumer(self) -> bool:
        """basic.consume, retried while RabbitMQ is reconnecting; False if halted meanwhile."""
        delay = self.reconnect_base
        while not self._halt.is_set():
            try:
                self._consumer_tag = await asyncio.wait_for(
                    self._queue.consume(self._on_message, no_ack=False), self.connect_timeout)
                return True
            except Exception as exc:
                log.warning("cannot start consuming %r (%s); retrying in %.1f s", self.queue_name,
                            describe_error(exc), delay)
                await self._sleep(delay)
                delay = min(self.reconnect_cap, delay * 2)
        return False

    async def _cancel_consumer(self) -> None:
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is None or self._queue is None:
            return
        try:
            await asyncio.wait_for(self._queue.cancel(tag), 5.0)
        except Exception as exc:
            log.debug("consumer cancel: %s", describe_error(exc))

    async def _requeue_all(self) -> None:
        """Nack (requeue) every unacknowledged delivery, in delivery order."""
        while not self._buffer.empty():
            self._buffer.get_nowait()
        pending = list(self._unacked.items())
        self._unacked.clear()
        for _, message in pending:
            if await self._settle(message, requeue=True):
                self.requeued += 1
        if pending:
            log.warning("bridge: requeued %d unacknowledged messages", len(pending))

    def _forget_inflight(self) -> None:
        """Sends whose messages are about to be requeued: their outcome no longer matters."""
        while not self._inflight.empty():
            entry = self._inflight.get_nowait()
            if entry is not None:
                for fut in entry[1]:
                    fut.add_done_callback(_consume_result)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(exc)
            self._failure.exception()  # mark retrieved: no "never retrieved" warning

    async def _dispatch(self) -> None:
        while True:
            waiting = [await self._buffer.get()]
            # the deliveries already buffered go out with it: their records of one source are
            # joined (``_join``), so many small messages (clients posting a line each) make
            # few Kafka records, and the worker pays its per-message cost once for them
            while not self._buffer.empty() and len(waiting) < self.prefetch:
                waiting.append(self._buffer.get_nowait())
            taken: list[tuple[int, AbstractIncomingMessage, list]] = []
            for seq, message in waiting:
                if seq not in self._unacked:
                    continue  # already settled
                if not _channel_open(message):
                    del self._unacked[seq]
                    self.stale_dropped += 1
                    continue
                try:
                    items = decode_batch(message.body)
                except InvalidBatch as exc:
                    await self._dead_letter(seq, message, str(exc))
                    continue
                records, oversized = self._records(items)
                if oversized:
                    if not await self._dead_letter_items(seq, message, oversized):
                        continue
                taken.append((seq, message, records))
            if not taken:
                continue
            records = self._join([r for _, _, r in taken])
            producer = self._producer
            futures: list[asyncio.Future] = []
            ids = ",".join(m.message_id for _, m, _ in taken if m.message_id)
            headers = [("smartlogs-batch", ids.encode())] if ids else None
            try:
                if producer is None:
                    raise RuntimeError("no Kafka producer")
                n_parts = self._n_partitions
                for key, value, _n in records:
                    futures.append(await producer.send(
                        self.topic, value=value, key=key, headers=headers,
                        partition=partition_of(key, n_parts) if n_parts else None))
            except Exception as exc:
                for fut in futures:  # their outcome no longer matters
                    fut.add_done_callback(_consume_result)
                self._fail(exc)
                return
            self._inflight.put_nowait(([(seq, m) for seq, m, _ in taken], futures, records))

    def _join(self, per_message: list[list[tuple[bytes, bytes, int]]]) -> list[tuple[bytes, bytes, int]]:
        """The records of consecutive messages, those of one source joined where the limits
        allow (``max_lines_per_record``, ``max_record_bytes``): a message's items are appended
        to the latest record of their source, so each source's items keep their order."""
        if len(per_message) == 1:
            return per_message[0]
        out: list[tuple[bytes, bytes, int]] = []
        latest: dict[bytes, int] = {}  # source key → index of its latest record in ``out``
        for records in per_message:
            for key, value, n in records:
                i = latest.get(key)
                if i is not None:
                    _, joined, m = out[i]
                    if (m + n <= self.max_lines_per_record
                            and len(joined) + len(value) - 1 <= self.max_record_bytes):
                        out[i] = (key, joined[:-1] + b"," + value[1:], m + n)  # two JSON arrays
                        continue
                latest[key] = len(out)
                out.append((key, value, n))
        return out

    async def _ack_loop(self) -> None:
        while True:
            entry = await self._inflight.get()
            if entry is None:
                return
            deliveries, futures, records = entry
            if futures:
                try:
                    await asyncio.gather(*futures)
                except Exception as exc:
                    for fut in futures:
                        fut.add_done_callback(_consume_result)
                    self._fail(exc)
                    return
            live = [(seq, m) for seq, m in deliveries if self._unacked.pop(seq, None) is not None]
            if not live:
                continue  # settled meanwhile (requeued): they come again
            self.produced_records += len(records)
            self.produced_lines += sum(n for _k, _v, n in records)
            for _seq, message in live:
                if await self._settle(message, requeue=None):
                    self.acked += 1
                    metrics.LAST_EVENT.labels("bridge").set(time.time())
            log.info("moved %d lines of %d message(s) to Kafka in %d records",
                     sum(n for _k, _v, n in records), len(deliveries), len(records),
                     extra={"correlation_id": ",".join(m.message_id or "" for _, m in deliveries)})

    async def _settle(self, message: AbstractIncomingMessage, *, requeue: bool | None) -> bool:
        """ack (requeue=None) or nack; False if the delivery's channel is gone."""
        try:
            if requeue is None:
                await message.ack()
            else:
                await message.nack(requeue=requeue)
            return True
        except Exception as exc:
            self.ack_failures += 1
            log.debug("cannot settle delivery %s: %s", message.delivery_tag, describe_error(exc))
            return False

    # -- records --------------------------------------------------------------------------

    #: the Kafka key of an item (``streams.partitions.partition_key``: its source as the request
    #: names it: host, else service, named stream, API key, receiver), never from a parse
    source_key = staticmethod(partition_key)

    def _records(self, items: list[dict]) -> tuple[list[tuple[bytes, bytes, int]], list[dict]]:
        """(key, value, line count) records, source by source in order; and items too big for
        Kafka."""
        by_source: dict[str, list[dict]] = {}
        for item in items:
            key = self.source_key(item)
            group = by_source.get(key)
            if group is None:
                by_source[key] = [item]
            else:
                group.append(item)
        records: list[tuple[bytes, bytes, int]] = []
        oversized: list[dict] = []
        n = self.max_lines_per_record
        for source, group in by_source.items():
            key = source.encode("utf-8", "replace")
            for start in range(0, len(group), n):
                self._emit(key, group[start:start + n], records, oversized)
        return records, oversized

    def _emit(self, key: bytes, chunk: list[dict], records: list, oversized: list) -> None:
        value = orjson.dumps(chunk)
        if len(value) <= self.max_record_bytes:
            records.append((key, value, len(chunk)))
        elif len(chunk) > 1:  # too many bytes: halve, keeping the order
            half = len(chunk) // 2
            self._emit(key, chunk[:half], records, oversized)
            self._emit(key, chunk[half:], records, oversized)
        elif len(value) + len(key) + 512 <= KAFKA_MAX_REQUEST:
            records.append((key, value, 1))
        else:
            oversized.append(chunk[0])

    # -- dead letters ---------------------------------------------------------------------

    async def _publish_dlq(self, body: bytes, message: AbstractIncomingMessage, reason: str,
                           extra: dict | None = None) -> None:
        assert self._channel is not None
        headers = dict(message.headers or {})
        headers[ERROR_HEADER] = reason[:1000]
        headers.update(extra or {})
        dl = aio_pika.Message(
            body,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            headers=headers,
            timestamp=time.time(),
        )
        await asyncio.wait_for(
            self._channel.default_exchange.publish(dl, routing_key=self.dlq_name, mandatory=True),
            self.connect_timeout)

    async def _dead_letter(self, seq: int, message: AbstractIncomingMessage, reason: str) -> None:
        """The whole message is poison: DLQ (confirmed), then ack the original."""
        try:
            await self._publish_dlq(message.body, message, reason)
        except Exception as exc:
            log.warning("cannot dead-letter message %s (%s); requeueing it", message.message_id,
                        describe_error(exc))
            await self._requeue_one(seq, message)
            return
        self.dead_lettered += 1
        log.warning("dead-lettered message %s to %r: %s", message.message_id, self.dlq_name, reason)
        if self._unacked.pop(seq, None) is not None:
            if await self._settle(message, requeue=None):
                self.acked += 1

    async def _dead_letter_items(self, seq: int, message: AbstractIncomingMessage,
                                 items: list[dict]) -> bool:
        """Items too large for one Kafka record go to the DLQ; False if that failed."""
        reason = (f"{len(items)} item(s) larger than the Kafka record limit "
                  f"({KAFKA_MAX_REQUEST} bytes)")
        try:
            await self._publish_dlq(orjson.dumps(items), message, reason,
                                    {"x-smartlogs-items": len(items)})
        except Exception as exc:
            log.warning("cannot dead-letter oversized items of %s (%s); requeueing",
                        message.message_id, describe_error(exc))
            await self._requeue_one(seq, message)
            return False
        self.dead_lettered += 1
        self.dead_lettered_items += len(items)
        log.warning("dead-lettered %d oversized item(s) of message %s", len(items),
                    message.message_id)
        return True

    async def _requeue_one(self, seq: int, message: AbstractIncomingMessage) -> None:
        if self._unacked.pop(seq, None) is not None:
            await self._sleep(1.0)  # do not spin on a message we cannot handle right now
            if await self._settle(message, requeue=True):
                self.requeued += 1


# -- helpers ------------------------------------------------------------------------------

def _throttle_metadata_retries(client: Any, *, base: float, cap: float) -> None:
    """Space out failed metadata refreshes with capped exponential backoff.

    aiokafka 0.14's sender, while a partition leader is unknown (the broker is down), calls
    ``client.force_metadata_update()`` again as soon as the previous refresh failed, with no
    pause: against a closed port that is a busy loop (a core at 100 % and two ERROR log lines
    per attempt) until the broker is back or the batches expire. Here the future handed back
    completes only after ``base``, 2·``base``, ... (at most ``cap``) seconds once refreshes fail;
    a successful refresh resets the delay. Only the timing changes, not the results.
    """
    original = client.force_metadata_update
    state = {"delay": 0.0}

    def force_metadata_update():
        inner = original()
        loop = asyncio.get_running_loop()
        outer = loop.create_future()

        def finish(ok: bool) -> None:
            if not outer.done():
                outer.set_result(ok)

        def on_done(f: asyncio.Future) -> None:
            ok = not f.cancelled() and f.exception() is None and bool(f.result())
            if ok:
                state["delay"] = 0.0
                finish(True)
            else:
                state["delay"] = min(cap, max(base, state["delay"] * 2))
                loop.call_later(state["delay"], finish, False)

        inner.add_done_callback(on_done)
        return outer

    client.force_metadata_update = force_metadata_update


def _channel_open(message: AbstractIncomingMessage) -> bool:
    try:
        message.channel  # raises if the delivery's channel is closed
    except Exception:
        return False
    return True


def _consume_result(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


async def _cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def from_settings(s: Settings) -> Bridge:
    return Bridge(amqp_connect_url(s), s.amqp_queue, s.amqp_dlq, s.kafka_bootstrap, s.kafka_topic,
                  prefetch=s.amqp_prefetch, partitions=s.kafka_partitions,
                  kafka_kwargs=kafka_client_kwargs(s), amqp_ssl_context=amqp_ssl_context(s),
                  max_queue_bytes=s.amqp_max_queue_bytes)


async def run_bridge(settings: Settings | None = None,
                     bridge_factory: Callable[[Settings], Bridge] = from_settings) -> Bridge:
    """Build the bridge from settings and run it until SIGINT/SIGTERM; returns it (counters)."""
    s = settings or get_settings()
    register_secrets(s)  # from here on no log record can carry them
    bridge = bridge_factory(s)
    from prometheus_client import REGISTRY

    collector = metrics.StatsCollector("smartlogs_bridge", bridge.stats, gauges=("unacked",))
    REGISTRY.register(collector)
    metrics.serve(s.bridge_metrics_port, s.metrics_host, health=bridge.health)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    log.info("bridge: %s %r -> kafka %s (%s) %r", redact_url(s.amqp_url), s.amqp_queue,
             s.kafka_bootstrap, s.kafka_security_protocol, s.kafka_topic)
    try:
        await bridge.run(stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await bridge.close()
        REGISTRY.unregister(collector)
        log.info("bridge stopped: %s", bridge.stats())
    return bridge


def main() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_bridge())


if __name__ == "__main__":
    main()
