"""Where accepted batches go: the embedded spool, or RabbitMQ in the full stack.

The API knows only this interface; each transport says when a batch is durably taken
(committed to the on-disk spool, or confirmed by the broker) and raises ``IngestError``
(503 + Retry-After) when it cannot take more now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from ingest_api.decode import IngestError
from smartlogs.settings import Settings

__all__ = ["IngestTransport", "SpoolTransport", "AmqpTransport", "build_embedded", "build_full"]

log = logging.getLogger(__name__)


class IngestTransport(Protocol):
    mode: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def accept(self, items: list[dict], batch_id: str) -> None:
        """Return only once the items are durably taken; raise IngestError if not possible."""

    def health(self) -> tuple[bool, dict]: ...


class SpoolTransport:
    """Embedded: commit to the SQLite spool, wake the in-process runner."""

    mode = "embedded"

    def __init__(self, settings: Settings):
        from smartlogs.store import SqliteStore
        from streams.pipeline import PipelineConfig
        from streams.runner import EmbeddedRunner

        self.settings = settings
        self.store = SqliteStore(settings.db_path)
        self.runner = EmbeddedRunner(self.store, PipelineConfig.from_settings(settings),
                                     checkpoint_path=settings.checkpoint_path,
                                     checkpoint_seconds=settings.checkpoint_seconds)

    async def start(self) -> None:
        self.runner.start()

    async def stop(self) -> None:
        await run_in_threadpool(self.runner.stop)
        self.store.close()

    async def accept(self, items: list[dict], batch_id: str) -> None:
        def commit() -> None:
            if self.store.spool_backlog() + len(items) > self.settings.max_backlog_events:
                raise IngestError(503, "backlog_full",
                                  "the pipeline is behind; retry after a few seconds", retry_after=2)
            self.store.spool_append(items)

        await run_in_threadpool(commit)
        self.runner.wake()

    def health(self) -> tuple[bool, dict]:
        st = self.runner.status()  # down while processing or storing keeps failing
        return st["running"] and st["failing_since"] is None, {"pipeline": st}


class AmqpTransport:
    """Full stack: publish each batch as one persistent message; 202 only after the confirm.

    Readiness (``health``) goes beyond "the broker is connected": a background probe (every
    ``health_probe_seconds``) reads the ingest queue (ready messages, consumers) and, with
    ``pipeline_probe``, the worker's progress on Kafka (``KafkaProgress``: its group's lag and
    committed offsets). It reports ``degraded`` reasons when nothing consumes the ingest queue
    (the bridge is down), when ready messages wait and none is taken for
    ``stuck_after_seconds`` (the bridge cannot reach Kafka), or when records wait for the
    worker and its committed offsets do not move for ``stuck_after_seconds`` (the worker is
    down, or stuck on its sink). Ingest keeps working meanwhile: RabbitMQ and Kafka hold what
    was accepted.
    """

    mode = "full"

    def __init__(self, settings: Settings, *, pipeline_probe: bool = False):
        from ingest_api.publisher import AmqpPublisher
        from smartlogs.security import amqp_connect_url, amqp_ssl_context

        self.publisher = AmqpPublisher(amqp_connect_url(settings), settings.amqp_queue,
                                       timeout=settings.publish_timeout,
                                       ssl_context=amqp_ssl_context(settings),
                                       max_queue_bytes=settings.amqp_max_queue_bytes)
        self.queue = settings.amqp_queue
        self.stuck_after = settings.stuck_after_seconds
        self.probe_seconds = settings.health_probe_seconds
        self._kafka = None
        if pipeline_probe:
            from ingest_api.pipeline_probe import KafkaProgress

            self._kafka = KafkaProgress(settings)
        now = time.time()
        self._queue_state: dict | None = None
        self._queue_moved_at = now   # last time the ready count fell, or was 0
        self._kafka_state: dict | None = None
        self._kafka_moved_at = now   # last time the worker committed more, or had no lag
        self._probe_error: str | None = None
        self._monitor: asyncio.Task | None = None

    async def start(self) -> None:
        self._monitor = asyncio.create_task(self._probe_loop(), name="amqp-readiness-probe")
        try:
            await self.publisher.start()
        except Exception as exc:  # noqa: BLE001 - the API still starts and answers 503 until the broker is back
            from smartlogs.security import redact

            log.warning("RabbitMQ not reachable at start (%s); ingest answers 503 until it is",
                        redact(exc))

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        if self._kafka is not None:
            await self._kafka.close()
        await self.publisher.close()

    async def accept(self, items: list[dict], batch_id: str) -> None:
        from ingest_api.publisher import QueueUnavailable

        try:
            await self.publisher.publish(items, batch_id=batch_id)
        except QueueUnavailable as exc:
            from smartlogs.security import redact

            raise IngestError(503, "queue_unavailable",
                              f"the message broker did not take the batch ({redact(exc)}); retry later",
                              retry_after=exc.retry_after) from None

    async def _probe_loop(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.probe_seconds)

    async def probe(self) -> None:
        """Read the ingest queue's state and the worker's progress on Kafka."""
        from ingest_api.publisher import QueueUnavailable
        from smartlogs.security import redact

        errors = []
        now = time.time()
        try:
            q = await self.publisher.queue_state() if self.publisher.connected else None
        except QueueUnavailable as exc:
            q = None
            errors.append(redact(exc)[:200])
        if q is not None:
            last = self._queue_state
            if q["messages"] == 0 or (last is not None and q["messages"] < last["messages"]):
                self._queue_moved_at = now
        self._queue_state = q
        if self._kafka is not None:
            try:
                lag, committed = await self._kafka.read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka unreachable: an answer, not a crash
                self._kafka_state = None
                errors.append(f"kafka: {redact(exc)[:200] or type(exc).__name__}")
            else:
                last = self._kafka_state
                if lag == 0 or last is None or committed > last["committed"]:
                    self._kafka_moved_at = now
                self._kafka_state = {"lag": lag, "committed": committed}
        self._probe_error = "; ".join(errors) or None

    def degraded(self, now: float | None = None) -> list[str]:
        """Why the pipeline behind the queue does not keep up (empty: it does, as far as known)."""
        now = time.time() if now is None else now
        reasons = []
        q, k = self._queue_state, self._kafka_state
        if q is not None and q["consumers"] == 0:
            reasons.append(f"no consumer on the ingest queue {self.queue!r}: is the bridge "
                           f"running? ({q['messages']} messages waiting; nothing is lost)")
        elif q is not None and q["messages"] > 0 and now - self._queue_moved_at > self.stuck_after:
            reasons.append(f"the bridge does not keep up with the ingest queue: {q['messages']} "
                           f"messages ready and their number has not gone down for over "
                           f"{self.stuck_after:g}s (can it reach Kafka?)")
        if k is not None and k["lag"] > 0 and now - self._kafka_moved_at > self.stuck_after:
            reasons.append(f"pipeline stuck: {k['lag']} records wait on Kafka topic "
                           f"{self._kafka.topic!r} and the worker (group {self._kafka.group!r}) "
                           f"made no progress for {now - self._kafka_moved_at:.0f}s (is the "
                           "worker running, is Elasticsearch up?)")
        return reasons

    def health(self) -> tuple[bool, dict]:
        ok = bool(self.publisher.connected)
        detail: dict = {"broker": "connected" if ok else "disconnected"}
        if not ok and self.publisher.last_error:  # e.g. a refused login: say so (redacted)
            detail["broker_error"] = self.publisher.last_error
        q, k = self._queue_state, self._kafka_state
        detail["pipeline"] = {
            "consumers": q["consumers"] if q else None,
            "queued": q["messages"] if q else None,
            **({"worker_lag": k["lag"] if k else None} if self._kafka is not None else {}),
            **({"probe_error": self._probe_error} if self._probe_error else {}),
        }
        reasons = self.degraded()
        if reasons:
            detail["degraded"] = reasons
        return ok, detail


def build_embedded(settings: Settings):
    """(transport, store) for `smartlogs up`: the spool's store is also the query store."""
    t = SpoolTransport(settings)
    return t, t.store


def build_full(settings: Settings):
    """(transport, store) for `smartlogs api`: RabbitMQ for ingest, Elasticsearch for queries."""
    from smartlogs.security import es_client_kwargs
    from smartlogs.store.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(settings.es_url, index_prefix=settings.es_index_prefix,
                               index_period=settings.es_index_period,
                               window_seconds=settings.window_seconds,
                               client_kwargs=es_client_kwargs(settings))
    return AmqpTransport(settings, pipeline_probe=True), store
