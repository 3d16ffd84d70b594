"""Where accepted batches go: the embedded spool, or RabbitMQ in the full stack.

The API knows only this interface; each transport says when a batch is durably taken
(committed to the on-disk spool, or confirmed by the broker) and raises ``IngestError``
(503 + Retry-After) when it cannot take more now, or 413 when a batch can never fit (more events
than the embedded backlog limit).
"""

from __future__ import annotations

import logging
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
        limit = self.settings.max_backlog_events
        if 0 < limit < len(items):  # it could never fit, however long the client waits: not a 503
            raise IngestError(413, "batch_too_large",
                              f"the batch holds {len(items)} events, more than the backlog limit of "
                              f"{limit} (SMARTLOGS_MAX_BACKLOG_EVENTS): split it into smaller batches",
                              limit=limit)

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
    """Full stack: publish each batch as one persistent message; 202 only after the confirm."""

    mode = "full"

    def __init__(self, settings: Settings):
        from ingest_api.publisher import AmqpPublisher
        from smartlogs.security import amqp_connect_url, amqp_ssl_context

        self.publisher = AmqpPublisher(amqp_connect_url(settings), settings.amqp_queue,
                                       timeout=settings.publish_timeout,
                                       ssl_context=amqp_ssl_context(settings),
                                       max_queue_bytes=settings.amqp_max_queue_bytes)

    async def start(self) -> None:
        try:
            await self.publisher.start()
        except Exception as exc:  # noqa: BLE001 - the API still starts and answers 503 until the broker is back
            from smartlogs.security import redact

            log.warning("RabbitMQ not reachable at start (%s); ingest answers 503 until it is",
                        redact(exc))

    async def stop(self) -> None:
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

    def health(self) -> tuple[bool, dict]:
        ok = bool(self.publisher.connected)
        detail = {"broker": "connected" if ok else "disconnected"}
        if not ok and self.publisher.last_error:  # e.g. a refused login: say so (redacted)
            detail["broker_error"] = self.publisher.last_error
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
    return AmqpTransport(settings), store
