"""Kafka topic source: consume an existing topic of raw lines or JSON events.

For teams whose logs are already on Kafka (rsyslog's omkafka, Filebeat/Vector/Fluent Bit Kafka
outputs, application producers). Configured by ``SMARTLOGS_KAFKA_SOURCE_TOPIC`` (off when empty;
a comma-separated list is allowed), ``_GROUP`` (consumer group), ``_FORMAT`` (``raw``, ``json``
or ``auto``), ``_BOOTSTRAP`` (default ``SMARTLOGS_KAFKA_BOOTSTRAP``) and ``_OFFSET_RESET``
(where a new group starts: ``earliest``, the default, or ``latest``); SASL/TLS come from the
same ``SMARTLOGS_KAFKA_SECURITY_PROTOCOL``/``_SASL_*``/``_CA_FILE``... settings as every Kafka
client of SmartLogs (``smartlogs.security.kafka_client_kwargs``). ``smartlogs up`` and
``smartlogs api`` run it for the app's lifespan; ``smartlogs kafka-source`` runs it alone in
front of the full stack's RabbitMQ.

Record → events, with the decoders of ``POST /ingest`` (``ingest_api.decode.decode_body``):

* ``raw``: the value is text/plain: one event ``{"raw": line}`` per non-blank line (usually one
  per record); the pipeline parses the line's header exactly as for ``/ingest`` text;
* ``json``: the value is a JSON event object (or an array of them) as ``/ingest`` takes it
  (``message``/``raw``, ``timestamp``, ``host``, ``service``, ``level``, ``pid``, ``id``,
  ``fields``; other keys kept in ``fields``);
* ``auto``: a value starting with ``{`` or ``[`` that decodes as JSON events is taken as
  JSON, anything else as raw text (so a ``[Sun Dec 04 ...]`` Apache line stays a line).

A record that does not decode in the configured format (not UTF-8, not JSON, not an event) is
never dropped: it is stored as one event whose message is its text (invalid bytes replaced),
flagged with ``fields.decode_error`` (the error code) and ``fields.decode_detail``. An empty
record or a tombstone (no value) has nothing to store: it is counted as rejected
(``reason="kafka_empty_record"``) and its offset is committed. Every event gets
``source: "kafka"``.

Delivery (the same guarantee as ``/ingest``): auto-commit is off. The records of one
``getmany`` are handed to ``transport.accept`` (spool commit in the embedded mode, RabbitMQ
confirm in the full stack), and only once it returned are their offsets committed. While the
transport refuses (503: backlog full, broker down) the same batch is retried with backoff and
nothing more is fetched: the topic is the buffer. A crash between accept and commit means the
batch is consumed again after the restart; that is idempotent because each event's id is
deterministic — ``kafka:<topic>:<partition>:<offset>:<record timestamp ms>`` (``:<n>`` appended
for the n-th further event of a multi-line or array record), or the event's own ``id`` — and
both stores keep an id once (SQLite's unique id, Elasticsearch ``op_type=create`` with the id as
``_id``). The transports themselves do not dedupe by batch id (the spool appends, RabbitMQ sets
it as ``message_id``); the batch id, ``kafka:<topic>:<partition>@<first>-<last>,...``, is
deterministic too and serves as the correlation id in the logs. The record timestamp in the id
keeps a topic that was deleted and re-created (offsets from 0 again) from colliding with the
events of its earlier life.

A failed commit (for example after a group rebalance) is logged: the records are delivered
again later and absorbed by the ids. Kafka being unreachable never stops the API: the source
reconnects with backoff and reports its state in ``/healthz``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

from ingest_api.decode import IngestError, decode_body
from smartlogs import metrics

__all__ = [
    "FORMATS",
    "SOURCE",
    "KafkaSource",
    "batch_id_for",
    "build_consumer",
    "decode_record",
    "record_id",
    "start_kafka_source",
]

log = logging.getLogger(__name__)

SOURCE = "kafka"
FORMATS = ("raw", "json", "auto")
_DETAIL_MAX = 300


# -- pure helpers ---------------------------------------------------------------------------

def decode_record(value: bytes | None, fmt: str, *, max_bytes: int,
                  max_line_length: int = 65536) -> tuple[list[dict], str | None]:
    """A record's value → (ingest items without ids, decode error code or None).

    Never raises. ``([], None)`` for an empty record; a record that does not decode gives one
    item, its text flagged with ``fields.decode_error``."""
    if value is None or not value.strip():
        return [], None
    kind = fmt
    if fmt == "auto":
        kind = "json" if value.lstrip()[:1] in (b"{", b"[") else "raw"
    ctype = "application/json" if kind == "json" else "text/plain"
    try:
        return decode_body(value, content_type=ctype, max_bytes=max_bytes,
                           max_line_length=max_line_length), None
    except IngestError as exc:
        return _undecodable(value, fmt, kind, exc, max_bytes, max_line_length)
    except Exception as exc:
        log.exception("Kafka source: unexpected error decoding a record; storing it as text")
        err = IngestError(400, "decode_failed", f"{type(exc).__name__}: {exc}")
        return _undecodable(value, fmt, "raw", err, max_bytes, max_line_length)


def _undecodable(value: bytes, fmt: str, kind: str, exc: IngestError, max_bytes: int,
                 max_line_length: int) -> tuple[list[dict], str | None]:
    """The record as one text event flagged with ``fields.decode_error`` (in ``auto``, a value
    that only looked like JSON is first tried as text lines)."""
    if fmt == "auto" and kind == "json" and exc.body["error"] != "body_too_large":
        try:  # it only looked like JSON: a line starting with '[' or '{'
            return decode_body(value, content_type="text/plain", max_bytes=max_bytes,
                               max_line_length=max_line_length), None
        except IngestError as again:
            exc = again
    text = value[:max(max_line_length, 1) * 4].decode("utf-8", errors="replace")
    if len(text) > max_line_length:
        text = text[:max_line_length]
    code = exc.body["error"]
    return [{"message": text.rstrip("\r\n"),
             "fields": {"decode_error": code,
                        "decode_detail": exc.body["detail"][:_DETAIL_MAX]}}], code


def record_id(topic: str, partition: int, offset: int, timestamp_ms: int | None, n: int = 0) -> str:
    """The deterministic id of the ``n``-th event of a record (topic names cannot hold ':')."""
    base = f"kafka:{topic}:{partition}:{offset}:{timestamp_ms if timestamp_ms is not None else '-'}"
    return base if n == 0 else f"{base}:{n}"


def batch_id_for(ranges: dict[tuple[str, int], tuple[int, int]]) -> str:
    """``kafka:<topic>:<p>@<first>-<last>,...`` for the records of one fetch (a digest if long)."""
    parts = [f"{t}:{p}@{a}-{b}" for (t, p), (a, b) in sorted(ranges.items())]
    text = "kafka:" + ",".join(parts)
    if len(text) <= 200:
        return text
    return "kafka-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def build_consumer(settings, topics: list[str]):
    """The aiokafka consumer for the source: every connection/security option lives here.

    Auto-commit is off (offsets are committed only after the transport took the events)."""
    from aiokafka import AIOKafkaConsumer

    bootstrap = getattr(settings, "kafka_source_bootstrap", None) or settings.kafka_bootstrap
    return AIOKafkaConsumer(
        *topics,
        **_security_kwargs(settings),
        bootstrap_servers=bootstrap,
        group_id=settings.kafka_source_group,
        client_id="smartlogs-kafka-source",
        enable_auto_commit=False,
        auto_offset_reset=settings.kafka_source_offset_reset,
        isolation_level="read_committed",
        max_poll_interval_ms=600_000,  # a batch held while the transport refuses stays ours
    )


def _security_kwargs(settings) -> dict:
    """SASL/TLS options, the same as every other Kafka client of SmartLogs uses
    (``smartlogs.security.kafka_client_kwargs``; raises ``ValueError`` on inconsistent settings)."""
    try:
        from smartlogs.security import kafka_client_kwargs
    except ImportError:  # pragma: no cover - a tree without the security settings: plaintext
        return {}
    return kafka_client_kwargs(settings)


# -- the source -----------------------------------------------------------------------------

@dataclass
class _Stats:
    records: int = 0          # records fetched
    received: int = 0         # events decoded from them
    accepted: int = 0         # events durably taken by the transport
    undecodable: int = 0      # records stored as text with fields.decode_error
    empty: int = 0            # empty records / tombstones (nothing stored, offset committed)
    refusals: int = 0         # batches the transport refused (each retried)
    commits: int = 0
    commit_failures: int = 0  # the batch will be consumed again (deduplicated by id)
    reconnects: int = 0
    last_error: str | None = None
    connected: bool = False
    positions: dict = field(default_factory=dict)  # "topic:partition" → next offset committed


class KafkaSource:
    """Consume ``topics`` into ``transport.accept``, committing offsets only after it returned."""

    def __init__(self, settings, *, consumer_factory=None, max_retry_wait: float = 2.0,
                 reconnect_cap: float = 10.0, drain_timeout: float = 10.0):
        self.settings = settings
        self.topics = [t.strip() for t in settings.kafka_source_topic.split(",") if t.strip()]
        if not self.topics:
            raise ValueError("no Kafka source topic configured")
        fmt = settings.kafka_source_format
        if fmt not in FORMATS:
            raise ValueError(f"kafka_source_format must be one of {FORMATS}, not {fmt!r}")
        self.format = fmt
        self.max_records = max(1, min(settings.kafka_source_max_records,
                                      settings.max_backlog_events or 1))
        self.consumer_factory = consumer_factory or build_consumer
        self.max_retry_wait, self.reconnect_cap = max_retry_wait, reconnect_cap
        self.drain_timeout = drain_timeout
        self.transport = None
        self.stats = _Stats()
        self._consumer = None
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._deadline = float("inf")
        self._idle = True  # True while no fetched batch is in hand (safe to cancel)

    @classmethod
    def from_settings(cls, settings) -> KafkaSource | None:
        """The source the settings ask for (no topic: none)."""
        if not (getattr(settings, "kafka_source_topic", "") or "").strip():
            return None
        return cls(settings)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, transport) -> None:
        """Start consuming in the background (connects, and reconnects, with backoff)."""
        self.transport = transport
        self._stopping = asyncio.Event()
        self._deadline = float("inf")
        self._task = asyncio.create_task(self._run(), name="kafka-source")
        log.info("Kafka source: consuming %s (group %r, format %s)", ",".join(self.topics),
                 self.settings.kafka_source_group, self.format)

    async def stop(self) -> None:
        """Stop fetching; a batch in hand is accepted and committed (within ``drain_timeout``),
        else it is left uncommitted and consumed again at the next start (never lost)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._deadline = time.monotonic() + self.drain_timeout
        if self._idle:  # waiting in getmany: nothing fetched is in hand
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=self.drain_timeout + 2)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("Kafka source ended with an error: %r", task.exception())
        await self._close_consumer()
        log.info("Kafka source stopped (accepted %d events from %d records)",
                 self.stats.accepted, self.stats.records)

    def status(self) -> dict:
        s = self.stats
        consumer = self._consumer
        try:
            partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in consumer.assignment()) \
                if consumer is not None and s.connected else []
        except Exception:  # noqa: BLE001 - informative only (e.g. during a rebalance)
            partitions = []
        return {"topics": self.topics, "group": self.settings.kafka_source_group,
                "format": self.format, "connected": s.connected, "partitions": partitions,
                "records": s.records,
                "accepted": s.accepted, "undecodable": s.undecodable, "empty": s.empty,
                "refusals": s.refusals, "commit_failures": s.commit_failures,
                "last_error": s.last_error}

    # -- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        from aiokafka.errors import KafkaError

        delay = 0.5
        while not self._stopping.is_set():
            try:
                consumer = self.consumer_factory(self.settings, self.topics)
                self._consumer = consumer
                await consumer.start()
                self.stats.connected, self.stats.last_error, delay = True, None, 0.5
                while not self._stopping.is_set():
                    self._idle = True
                    batches = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
                    if self._stopping.is_set() and not batches:
                        break
                    if batches:
                        self._idle = False
                        await self._handle(consumer, batches)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:_DETAIL_MAX]
                log.warning("Kafka source: %s; reconnecting in %.1fs", self.stats.last_error, delay)
            except Exception as exc:  # a bug must not kill ingest silently
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:_DETAIL_MAX]
                log.exception("Kafka source: unexpected error; restarting the consumer in %.1fs",
                              delay)
            finally:
                self._idle = True
                self.stats.connected = False
            await self._close_consumer()
            if self._stopping.is_set():
                break
            self.stats.reconnects += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(self.reconnect_cap, delay * 2)

    async def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:  # auto-commit is off: stopping commits nothing
                await asyncio.wait_for(consumer.stop(), 10)
            except Exception as exc:  # noqa: BLE001
                log.debug("Kafka source: consumer stop: %s", exc)

    async def _handle(self, consumer, batches: dict) -> None:
        items, ranges, offsets, empty, bad = await asyncio.to_thread(self._decode, batches)
        self.stats.records += sum(len(v) for v in batches.values())
        if empty:
            self.stats.empty += empty
            metrics.rejected("kafka_empty_record", empty, request="kafka source")
        if bad:
            self.stats.undecodable += bad
            log.warning("Kafka source: %d record(s) did not decode as %s; stored as text with "
                        "fields.decode_error", bad, self.format)
        batch_id = batch_id_for(ranges)
        if items:
            now = time.time()
            for item in items:
                item["received"] = now
                item["source"] = SOURCE
                item["cid"] = batch_id
            metrics.EVENTS_RECEIVED.labels(SOURCE).inc(len(items))
            self.stats.received += len(items)
            if not await self._deliver(items, batch_id):
                return  # shutting down with the batch refused: not committed, consumed again later
        await self._commit(consumer, offsets, batch_id)
        for tp in batches:
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - lag is informative only
                high = None
            if high is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - offsets[tp]))

    def _decode(self, batches: dict):
        items: list[dict] = []
        ranges: dict[tuple[str, int], tuple[int, int]] = {}
        offsets: dict = {}
        empty = bad = 0
        s = self.settings
        for tp, records in batches.items():
            if not records:
                continue
            ranges[(tp.topic, tp.partition)] = (records[0].offset, records[-1].offset)
            offsets[tp] = records[-1].offset + 1
            for rec in records:
                got, error = decode_record(rec.value, self.format, max_bytes=s.max_body_bytes,
                                           max_line_length=s.max_line_length)
                if not got:
                    empty += 1
                    continue
                if error is not None:
                    bad += 1
                for n, item in enumerate(got):
                    if not item.get("id"):
                        item["id"] = record_id(tp.topic, tp.partition, rec.offset,
                                               rec.timestamp, n)
                    items.append(item)
        return items, ranges, offsets, empty, bad

    async def _deliver(self, items: list[dict], batch_id: str) -> bool:
        """Hand the batch to the transport, retrying refusals with backoff; False only when
        stopping while it is still refused (then it is not committed)."""
        wait, refused = 0.05, False
        while True:
            try:
                with metrics.ACCEPT_SECONDS.time():
                    await self.transport.accept(items, batch_id)
            except asyncio.CancelledError:
                raise
            except IngestError as exc:
                n = len(items)
                if exc.status == 413 and n > 1:
                    # larger than the transport takes in one batch (a backlog limit below the
                    # fetch size): in parts that fit, each retried the same way
                    size = max(1, min(int(exc.body.get("limit") or 0) or n // 2, n // 2))
                    for k in range(0, n, size):
                        if not await self._deliver(items[k:k + size], batch_id):
                            return False
                    return True
                reason = exc.body.get("error", "unavailable")
                retry_after = float(exc.body.get("retry_after") or 0) or self.max_retry_wait
            except Exception as exc:  # noqa: BLE001 - a transport fault: retry, never drop
                reason, retry_after = "transport_error", self.max_retry_wait
                log.warning("Kafka source: transport error, retrying: %s", exc)
            else:
                metrics.accepted(SOURCE, len(items))
                self.stats.accepted += len(items)
                log.debug("accepted %d kafka events", len(items),
                          extra={"correlation_id": batch_id})
                return True
            if not refused:  # count the batch once, not every retry
                refused = True
                self.stats.refusals += 1
                metrics.rejected(reason, request="kafka source")
                log.info("Kafka source: transport refused %d events (%s); holding them and "
                         "fetching nothing more until it takes them", len(items), reason)
            if self._stopping.is_set() and time.monotonic() >= self._deadline:
                log.warning("Kafka source: stopping with %d events still refused; their offsets "
                            "are not committed (consumed again at the next start)", len(items))
                return False
            await asyncio.sleep(min(wait, retry_after, self.max_retry_wait))
            wait = min(wait * 2, self.max_retry_wait)

    async def _commit(self, consumer, offsets: dict, batch_id: str) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - CommitFailedError after a rebalance, ...
            self.stats.commit_failures += 1
            log.warning("Kafka source: commit of %s failed (%s); these records will be consumed "
                        "again and deduplicated by id", batch_id, exc)
            return
        self.stats.commits += 1
        for tp, off in offsets.items():
            self.stats.positions[f"{tp.topic}:{tp.partition}"] = off


async def start_kafka_source(settings, transport) -> KafkaSource | None:
    """Start the source the settings ask for, for the API's lifespan (None when off)."""
    try:
        source = KafkaSource.from_settings(settings)
        if source is not None:
            _security_kwargs(settings)  # refuse bad SASL/TLS settings now, not in a retry loop
    except ValueError as exc:
        log.error("Kafka source NOT started: %s", exc)
        return None
    if source is None:
        return None
    await source.start(transport)
    return source
