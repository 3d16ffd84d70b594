"""Where accepted batches go: the embedded spool, or RabbitMQ in the full stack.

The API knows only this interface; each transport says when a batch is durably taken
(committed to the on-disk spool, or confirmed by the broker) and raises ``IngestError``
(503 + Retry-After) when it cannot take more now, or 413 when a batch can never fit (more events
than the embedded backlog limit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from collections.abc import Callable
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from ingest_api.decode import IngestError
from smartlogs.settings import Settings

__all__ = ["IngestTransport", "GroupCommit", "SpoolTransport", "AmqpTransport", "build_embedded", "build_full"]

log = logging.getLogger(__name__)


class IngestTransport(Protocol):
    mode: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def accept(self, items: list[dict], batch_id: str) -> None:
        """Return only once the items are durably taken; raise IngestError if not possible."""

    def health(self) -> tuple[bool, dict]: ...


class GroupCommit:
    """Group commit: requests that arrive while a commit is running are committed together by
    the next one, so N concurrent requests cost one transaction (one fsync, one broker
    message and confirm), not N.

    ``commit(payloads)`` returns one outcome per payload, in order: None when it was durably
    taken, or the exception to raise for that request. A plain function runs in a worker
    thread; a coroutine function is awaited. Every caller of :meth:`submit` returns only once
    its own payload's outcome is known. With one client at a time nothing waits: a lone request
    is committed at once, alone. ``max_items`` bounds a group by the total ``len`` of its
    payloads (``size``; a payload larger than that still goes, alone).

    ``in_flight``: how many commits may run at once. One for a store with one writer (the
    spool: a second commit would only wait for the first one's lock); more where a commit
    is mostly waiting for an answer that others can wait for alongside (a broker's confirm),
    so that requests arriving during a commit need not wait for its end.

    ``gather`` (a fraction; 0: off): with one commit at a time, clients that each wait for
    their answer before they send again fall into two halves that take turns (those answered
    by one commit come back while the next runs and wait for the one after it), so each
    client gets one answer per *two* commits, and a commit is mostly an fsync of a few ms
    whatever its size. With ``gather``, once a commit's callers are answered the next commit
    waits for them to come back (until as many requests are pending as were answered plus
    those that were already waiting), for at most ``gather`` × the last commit's duration
    (capped at ``max_gather`` seconds): the two halves merge and each commit takes every
    client. A lone client is never held: its next request alone reaches the count; requests
    that do not come back cost at most that bound, once per commit.
    """

    def __init__(self, commit: Callable[[list], object], *, max_items: int | None = None,
                 size: Callable[[object], int] = len, in_flight: int = 1, gather: float = 0.0,
                 max_gather: float = 0.01):
        self._commit, self._size = commit, size
        self._async = asyncio.iscoroutinefunction(commit)
        self.max_items = max_items
        self.in_flight = in_flight
        self.gather, self.max_gather = gather, max_gather
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._flushers: set[asyncio.Task] = set()
        self._gathered: asyncio.Future | None = None  # set once ``_gather_count`` are pending
        self._gather_count = 0

    async def submit(self, payload) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((payload, fut))
        if self._gathered is not None and len(self._pending) >= self._gather_count \
                and not self._gathered.done():
            self._gathered.set_result(None)
        if len(self._flushers) < self.in_flight:
            self._flushers.add(asyncio.create_task(self._flush()))
        # shielded: a client that leaves does not cancel the commit others share with it
        await asyncio.shield(fut)

    def _take(self) -> list[tuple[object, asyncio.Future]]:
        if self.max_items is None:
            group, self._pending = self._pending, []
            return group
        n, total = 0, 0
        for payload, _ in self._pending:
            size = self._size(payload)
            if n and total + size > self.max_items:
                break
            n, total = n + 1, total + size
        group, self._pending = self._pending[:n], self._pending[n:]
        return group

    async def _flush(self) -> None:
        try:
            await self._flush_pending()
        finally:  # at once when nothing is left: a payload submitted later starts a flusher
            self._flushers.discard(asyncio.current_task())

    async def _flush_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            group = self._take()
            payloads = [p for p, _ in group]
            started = loop.time()
            try:
                if self._async:
                    outcomes = await self._commit(payloads)
                else:
                    outcomes = await run_in_threadpool(self._commit, payloads)
            except Exception as exc:  # noqa: BLE001 - the whole group failed: each caller hears why
                outcomes = [exc] * len(group)
            took = loop.time() - started
            for (_, fut), outcome in zip(group, outcomes):
                if fut.done():
                    continue
                if outcome is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(outcome)
            if self.gather > 0 and self.in_flight == 1:
                await self._gather_returning(len(group), min(self.gather * took, self.max_gather))

    async def _gather_returning(self, answered: int, bound: float) -> None:
        """Wait (at most ``bound`` s) until the ``answered`` callers may have sent again:
        ``answered`` more requests pending than now (see ``gather``)."""
        self._gather_count = len(self._pending) + answered
        if len(self._pending) >= self._gather_count or bound <= 0:
            return
        self._gathered = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(bound):
                await self._gathered
        except TimeoutError:
            pass
        finally:
            self._gathered = None


_SPOOL_GATHER = 0.5  # × the last commit's duration (GroupCommit.gather)
# the spool's backlog is measured at most this often by the commits (an upper bound between)
_BACKLOG_MEASURE_SECONDS = 0.1


class SpoolTransport:
    """Embedded: commit to the SQLite spool (concurrent requests share one commit), wake the
    in-process runner."""

    mode = "embedded"
    _backlog_estimate: int | None = None  # see _backlog
    _backlog_measured_at = 0.0

    def __init__(self, settings: Settings):
        from smartlogs.store import SqliteStore
        from streams.pipeline import PipelineConfig
        from streams.runtime.embedded import GATHER_SECONDS, EmbeddedRunner
        from streams.runtime.shards import ShardSupervisor
        from streams.runtime.stage import RetryPolicy

        self.settings = settings
        self.store = SqliteStore(settings.db_path, query_timeout=settings.query_timeout,
                                 window_seconds=settings.window_seconds,
                                 partitions=settings.partitions)
        # K shards (streams/runtime/shards.py): one runs here, more run in processes of their own
        shards = settings.shard_count
        self.runner = (
            EmbeddedRunner(self.store, PipelineConfig.from_settings(settings),
                           checkpoint_path=settings.checkpoint_path,
                           checkpoint_seconds=settings.checkpoint_seconds,
                           n_partitions=settings.partitions,
                           retry=RetryPolicy.from_settings(settings),
                           gather_seconds=GATHER_SECONDS)
            if shards == 1 else ShardSupervisor(settings, self.store, shards))
        # gather: clients that post one line at a time come back within a fraction of a
        # commit (an fsync); each commit waits for them (GroupCommit, bench/RESULTS.md)
        self._spool = GroupCommit(self._commit, gather=_SPOOL_GATHER)
        from streams.runtime.alerting import Alerting

        self.alerting = Alerting.from_settings(settings)  # None without SMARTLOGS_ALERT_RULES
        if self.alerting is not None:
            self.runner.subscribe(self.alerting.on_stored)
            # the catalog's marks, as the pipeline has them now (feedback takes effect at once)
            self.alerting.engine.marks_of = self.runner.marks
            self.alerting.engine.lines_learned_of = lambda: self.runner.lines
            # windows close by the clock only once the spool holds nothing unprocessed
            self.alerting.busy = lambda: self.store.spool_backlog() > 0
        self.retention = None
        if settings.retention_days > 0:
            from streams.runtime.retention import Retention

            self.retention = Retention(
                partial(self.store.delete_before, window_seconds=settings.window_seconds),
                days=settings.retention_days, window_seconds=settings.window_seconds)

    async def start(self) -> None:
        if self.alerting is not None:
            self.alerting.start()
        self.runner.start()
        if self.retention is not None:
            self.retention.start()

    async def stop(self) -> None:
        if self.retention is not None:
            await run_in_threadpool(self.retention.stop)
        await run_in_threadpool(self.runner.stop)
        if self.alerting is not None:
            await run_in_threadpool(self.alerting.stop)
        self.store.close()

    async def accept(self, items: list[dict], batch_id: str) -> None:
        limit = self.settings.max_backlog_events
        if 0 < limit < len(items):  # it could never fit, however long the client waits: not a 503
            raise IngestError(413, "batch_too_large",
                              f"the batch holds {len(items)} events, more than the backlog limit of "
                              f"{limit} (SMARTLOGS_MAX_BACKLOG_EVENTS): split it into smaller batches",
                              limit=limit)
        await self._spool.submit(items)

    def _commit(self, batches: list[list[dict]]) -> list[BaseException | None]:
        """One spool transaction for the batches that fit under the backlog limit, then one
        wake-up of the runner (its shards) for them all: a wake-up per request cost the API
        a pipe write per shard, and each shard a read, for every one-line request."""
        limit = self.settings.max_backlog_events
        backlog, fresh = self._backlog()
        outcomes: list[BaseException | None] = []
        taken = []
        for items in batches:
            if backlog + len(items) > limit and not fresh:  # an estimate: measure before refusing
                backlog, fresh = self.store.spool_backlog() + sum(map(len, taken)), True
            if backlog + len(items) > limit:
                outcomes.append(IngestError(503, "backlog_full",
                                            "the pipeline is behind; retry after a few seconds",
                                            retry_after=2))
            else:
                backlog += len(items)
                taken.append(items)
                outcomes.append(None)
        if taken:
            self.store.spool_append_many(taken)
            self.runner.wake()
        self._backlog_estimate = backlog
        return outcomes

    def _backlog(self) -> tuple[int, bool]:
        """(items accepted and not yet stored, whether just measured). The measurement (two
        queries, one on the events file the shards write) is made at most every
        ``_BACKLOG_MEASURE_SECONDS``; in between, the last one plus what was appended since:
        an upper bound, since storing only lowers the backlog, so nothing over the limit is
        taken. A commit that this bound would refuse measures again first (``_commit``)."""
        now = time.monotonic()
        if self._backlog_estimate is None or now - self._backlog_measured_at > _BACKLOG_MEASURE_SECONDS:
            self._backlog_measured_at = now
            return self.store.spool_backlog(), True
        return self._backlog_estimate, False

    def health(self) -> tuple[bool, dict]:
        st = self.runner.status()  # down while processing or storing keeps failing
        return st["running"] and st["failing_since"] is None, {"pipeline": st}


_MAX_GROUP_ITEMS = 5000  # items per grouped message (a single larger request still goes alone)
# grouped messages awaiting their confirm at once: requests that arrive meanwhile go in the
# next message without waiting for the confirm before it (bench/RESULTS.md, small requests)
_PUBLISH_IN_FLIGHT = 4


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
        self._publish = GroupCommit(self._publish_group, max_items=_MAX_GROUP_ITEMS,
                                    size=lambda batch: len(batch[0]), in_flight=_PUBLISH_IN_FLIGHT)

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
        await self._publish.submit((items, batch_id))

    async def _publish_group(self, batches: list[tuple[list[dict], str]]) -> list:
        """Concurrent requests travel as one message (one confirm); the bridge splits it into
        per-host records by the items' own ids, so nothing about them changes."""
        from ingest_api.publisher import QueueUnavailable

        items = batches[0][0] if len(batches) == 1 else [i for group, _ in batches for i in group]
        try:
            await self.publisher.publish(items, batch_id=batches[0][1])
        except QueueUnavailable as exc:
            from smartlogs.security import redact

            err = IngestError(503, "queue_unavailable",
                              f"the message broker did not take the batch ({redact(exc)}); retry later",
                              retry_after=exc.retry_after)
            return [err] * len(batches)
        return [None] * len(batches)

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
                               query_timeout=settings.query_timeout,
                               refresh_interval=settings.es_refresh_interval,
                               client_kwargs=es_client_kwargs(settings))
    return AmqpTransport(settings, pipeline_probe=True), store
