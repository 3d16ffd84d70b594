"""Where accepted batches go: the embedded spool, or RabbitMQ in the full stack.

The API knows only this interface; each transport says when a batch is durably taken
(committed to the on-disk spool, or confirmed by the broker) and raises ``IngestError``
(503 + Retry-After) when it cannot take more now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
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
    ``health_probe_seconds``) reads the ingest queue (ready messages, consumers) and, while
    batches this API accepted may be unstored, the store's newest write. It reports
    ``degraded`` reasons when nothing consumes the queue (the bridge is down) or when events
    accepted more than ``stuck_after_seconds`` ago are followed by no write at all (the worker,
    Kafka or the sink is stuck). Ingest keeps working meanwhile: RabbitMQ and Kafka hold what
    was accepted. The comparison uses the API's clock for accepts and the worker's for writes:
    keep the hosts' clocks in sync (NTP) to well under ``stuck_after_seconds``.
    """

    mode = "full"

    def __init__(self, settings: Settings, *, last_stored_at=None):
        from ingest_api.publisher import AmqpPublisher
        from smartlogs.security import amqp_connect_url, amqp_ssl_context

        self.publisher = AmqpPublisher(amqp_connect_url(settings), settings.amqp_queue,
                                       timeout=settings.publish_timeout,
                                       ssl_context=amqp_ssl_context(settings),
                                       max_queue_bytes=settings.amqp_max_queue_bytes)
        self.queue = settings.amqp_queue
        self.stuck_after = settings.stuck_after_seconds
        self.probe_seconds = settings.health_probe_seconds
        self._last_stored_at = last_stored_at  # callable -> epoch seconds | None (blocking)
        self._pending: deque[float] = deque(maxlen=100_000)  # accept times (≥1 s apart) not yet followed by a write
        self._queue_state: dict | None = None
        self._stored_at: float | None = None
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
        now = time.time()
        if self._last_stored_at is None:  # no store to compare with: no stuck check
            return
        if not self._pending or now - self._pending[-1] >= 1.0:
            self._pending.append(now)

    async def _probe_loop(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.probe_seconds)

    async def probe(self) -> None:
        """Read the ingest queue's state and, while accepts may be unstored, the newest write."""
        from ingest_api.publisher import QueueUnavailable
        from smartlogs.security import redact

        try:
            self._queue_state = await self.publisher.queue_state() if self.publisher.connected else None
            if self._pending and self._last_stored_at is not None:
                self._stored_at = await run_in_threadpool(self._last_stored_at)
                while self._pending and self._stored_at is not None and self._pending[0] <= self._stored_at:
                    self._pending.popleft()
            self._probe_error = None
        except QueueUnavailable as exc:
            self._queue_state, self._probe_error = None, redact(exc)[:200]
        except Exception as exc:  # noqa: BLE001 - the store unreachable: its own health says so
            self._probe_error = redact(exc)[:200]

    def degraded(self, now: float | None = None) -> list[str]:
        """Why the pipeline behind the queue does not keep up (empty: it does, as far as known)."""
        now = time.time() if now is None else now
        reasons = []
        q = self._queue_state
        if q is not None and q["consumers"] == 0:
            reasons.append(f"no consumer on the ingest queue {self.queue!r}: is the bridge "
                           f"running? ({q['messages']} messages waiting; nothing is lost)")
        if self._pending and now - self._pending[0] > self.stuck_after:
            waiting = f"; {q['messages']} messages waiting on the ingest queue" if q else ""
            reasons.append(f"pipeline stuck: events accepted {now - self._pending[0]:.0f}s ago "
                           f"were followed by no write to the store for over "
                           f"{self.stuck_after:g}s (is the worker running, are Kafka and "
                           f"Elasticsearch up?){waiting}")
        return reasons

    def health(self) -> tuple[bool, dict]:
        ok = bool(self.publisher.connected)
        detail: dict = {"broker": "connected" if ok else "disconnected"}
        if not ok and self.publisher.last_error:  # e.g. a refused login: say so (redacted)
            detail["broker_error"] = self.publisher.last_error
        now = time.time()
        q = self._queue_state
        detail["pipeline"] = {
            "consumers": q["consumers"] if q else None,
            "queued": q["messages"] if q else None,
            "oldest_unstored_seconds": round(now - self._pending[0], 1) if self._pending else 0,
            "last_stored_at": self._stored_at,
            **({"probe_error": self._probe_error} if self._probe_error else {}),
        }
        reasons = self.degraded(now)
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
    return AmqpTransport(settings, last_stored_at=store.last_stored_at), store
