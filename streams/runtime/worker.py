"""Kafka mode: the same ``Pipeline`` driven by faust-streaming agents.

    smartlogs worker                     # or: faust -A streams.runtime.worker worker -l info
    faust -A streams.runtime.worker agents       # Faust's own commands keep working
    faust -A streams.runtime.worker tables

Topic ``smartlogs.raw`` carries batches of items (JSON arrays, up to a few hundred lines of
one source each, keyed by source: the bridge makes them). One Faust message per batch, not per
line: Faust's per-message cost (~200 µs, architecture.md) is then shared by the batch.

Per message the ``process`` agent runs the pipeline **of the message's partition**, writes the
events to Elasticsearch (bulk, ``op_type=create`` with the event id as ``_id``: a re-delivered
batch is absorbed) and sends documents Elasticsearch rejects to the dead-letter topic. The
messages processed while a write is in flight are written together by the next one (one bulk
request, up to the store's bulk size: Elasticsearch's and the worker's cost per request is
shared, bench/RESULTS.md). The offset of a message is committed only after the agent moved
past it, i.e. after the sink acknowledged the write. What follows ``Pipeline.process`` and is the same in both runtimes
(the poison policy, the counters, the merges/catalog/incidents handed to the store, and the
write itself: its order, its retries until Elasticsearch takes the batch, the merges after
it, the sink state ``/healthz`` reads) is ``streams.runtime.stage``'s; the worker calls it in
an executor thread, so the event loop is never blocked by a write or its retries.

The private Faust names this module relies on live in ``streams.runtime.faust_internals`` (pinned by
tests/unit/test_faust_internals.py).

**Per-partition state, in Kafka.** The bridge keys the raw topic by source
(``streams.partitions``), so everything learned about a source belongs to one partition. The
worker keeps one ``Pipeline`` per assigned partition of the raw topic (trees, threshold,
rates, header layouts, incidents, its miner; bounded as in embedded mode), and that state
lives in Kafka, not in a local file: the compacted topic ``<worker id>-state``, whose
partition *p* holds the state of raw partition *p* (``streams.runtime.state_records`` for the records,
``streams.runtime.state_topic`` for the topic). Every ``SMARTLOGS_CHECKPOINT_SECONDS`` the partitions
that processed lines since their last save write the rows that changed, the rest of the model
and a head with the raw-topic offset the state reflects, in one Kafka transaction (and a
partition taken with no state is saved at its start offset before its first message:
``_first_save``). A save only covers batches Elasticsearch took (a partition with a batch in flight waits for it). The same
producer commits each stored batch's alert facts with the partition's facts mark (a task of
its own, ``_commit_facts``; a save carries those not committed yet), so the global alert rules
see every batch once whatever the crash point (``streams.runtime.alert_facts``).

**Exact after a crash; N workers.** ``smartlogs worker`` started several times forms one
consumer group and shares the partitions. When a partition is assigned, its state is read back
from the state topic before its first message is processed, and the raw records from the
offset the state reflects up to the committed offset are processed again from Kafka (their
events are stored already: Elasticsearch absorbs the writes; processing is deterministic), so
the model, its incidents and their counts end as if no worker had died, and a partition that
moves to another worker resumes from what was learned (no cold model, no warm-up burst).
Records the state already covers but the group had not committed are acknowledged without
being processed twice. Revoked partitions are saved (when nothing of theirs is in flight) and
dropped once the new assignment is known (and so are those a worker is given back after it
missed a generation of the group, or whose writer a transaction found fenced: they are read
back from the state topic, ``_on_assigned``, ``_part_of``); so is each partition's part of the alert engine's
state (in Elasticsearch, ``streams.runtime.alerting``), and the global rules' part with partition 0.

**Window counts: one implementation, the store's.** ``/api/stats`` reads Elasticsearch's
aggregations over the stored events, which are exact by construction (one document per event
id, whatever was re-delivered or processed again); the worker keeps no window table of its own.

Incidents (``streams.incidents``) are part of each partition's state: each batch's changed
incident snapshots are written to Elasticsearch after its events (``<prefix>.incidents``,
upserted by id, the newest ``rev`` wins), and a timer resolves the quiet ones when no records
wait.

Template ids are minted by each partition's miner (content-derived ids make them equal across
partitions: streams/templates.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from functools import partial

import faust
import orjson

from smartlogs import metrics
from smartlogs.logs import correlation_ids, dict_config
from smartlogs.security import es_client_kwargs, faust_broker_credentials, redact, register_secrets
from smartlogs.settings import get_settings
from streams.alerts import partition_scope, scopes_held
from streams.runtime import alert_facts
from streams.runtime.faust_internals import ack_offsets, committed_offset, keep_gaps_open
from streams.pipeline import Pipeline, PipelineConfig
from streams.runtime.stage import Batch, RetryPolicy, Sink, Stored, run_stage
from streams.runtime.state_records import Book, decode_state, encode_save
from streams.templates import MergeNotices

log = logging.getLogger(__name__)

settings = get_settings()
register_secrets(settings)  # Faust's own log handlers included: no record can carry them
WINDOW = settings.window_seconds
settings.data_dir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.worker_id,
    broker=[f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")],
    store="memory://",
    topic_partitions=settings.kafka_partitions,
    datadir=str(settings.data_dir / "faust"),
    producer_acks=-1,
    # SASL/TLS from SMARTLOGS_KAFKA_SECURITY_PROTOCOL & co. (None: plaintext, Faust's default)
    broker_credentials=faust_broker_credentials(settings),
    web_enabled=False,
    # SMARTLOGS_LOGS_JSON=true: Faust's own lines are JSON too (service "worker")
    logging_config=dict_config("worker", settings.logs_json),
    # a worker that died (kill -9) is noticed in seconds, not Faust's default minute, so a
    # replacement gets its partitions quickly
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
)

raw_topic = app.topic(settings.kafka_topic, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw",
                      partitions=settings.kafka_partitions)
dead_letters = app.topic(settings.kafka_dlq_topic, value_type=bytes, value_serializer="raw")

state_topic_name = f"{settings.worker_id}-state"

_config = PipelineConfig.from_settings(settings)
_store = None
_rejected: list[dict] = []
_rejected_lock = threading.Lock()


def _dead_letter(docs: list[dict]) -> None:  # called in the sink's thread
    with _rejected_lock:
        _rejected.extend(docs)


def store():
    global _store
    if _store is None:
        from smartlogs.store.elasticsearch import ElasticsearchStore

        _store = ElasticsearchStore(settings.es_url, index_prefix=settings.es_index_prefix,
                                    index_period=settings.es_index_period,
                                    dead_letter=_dead_letter, window_seconds=WINDOW,
                                    refresh_interval=settings.es_refresh_interval,
                                    client_kwargs=es_client_kwargs(settings))
    return _store


_sink = None


def sink() -> Sink:
    """The write of a batch, its retries and merges: ``streams.runtime.stage.Sink``, shared
    with the embedded runner, on Elasticsearch (``StoreUnavailable``: away or overloaded)."""
    global _sink
    if _sink is None:
        from smartlogs.store.elasticsearch import StoreUnavailable

        _sink = Sink(store(), name="elasticsearch", window_seconds=WINDOW,
                     policy=RetryPolicy.from_settings(settings), transient=(StoreUnavailable,))
    return _sink


class Part:
    """One assigned partition of the raw topic: its pipeline, the next raw offset that
    pipeline's state reflects (``applied``; None: a fresh model, from the committed offset on),
    what its state topic partition holds (``book``, ``saved_offset``), its batches processed
    but not yet stored (``unstored``: a save waits for none) and its global-rule input not
    committed yet (``outbox``, from the facts mark ``mark`` read back with its state:
    ``streams.runtime.alert_facts``); ``tx``: one transaction at a time on its ``writer``."""

    def __init__(self, partition: int, pipeline: Pipeline, applied: int | None, book: Book,
                 writer, mark: int | None = None) -> None:
        self.partition, self.pipeline, self.applied = partition, pipeline, applied
        self.book, self.writer = book, writer
        self.saved_offset = applied
        self.unstored = 0
        self.outbox = alert_facts.Outbox(mark)
        self.tx = asyncio.Lock()
        # its writer was fenced (another worker took the partition while this one was out of
        # the group): the state in memory may be behind the one saved since; ``_part_of``
        # takes the partition again from the state topic
        self.stale = False
        self.merges = MergeNotices()  # template merges of this pipeline the store was told of
        if _marks is not None:
            pipeline.scorer.marks = _marks
        if _aliases:
            pipeline.adopt_aliases(_aliases)


parts: dict[int, Part] = {}  # raw partition → its state, for the partitions this worker holds
_marks: dict | None = None  # the template marks read from the store (template_marks), once read
_aliases: dict = {}  # the catalog's aliases read from the store (template_marks), once read


def _lines_learned() -> int:
    return sum(part.pipeline.lines for part in list(parts.values()))


async def _write_until_taken(loop, batch) -> Stored:
    """Write a batch to Elasticsearch, waiting for as long as it is unavailable or refusing
    (``Sink.write_until_taken``, in an executor thread: the event loop goes on meanwhile);
    returns what the write did (the events newly stored, whether the merges were applied).

    The agent must not move past a batch the sink has not taken: a crashed agent would be
    restarted by Faust past the message, losing it. So while Elasticsearch is down this batch
    waits (the one retry policy, logged, counted in ``smartlogs_sink_failures_total``); the
    rest waits in Kafka, durably, and the offset is not committed. Retries are idempotent
    (``op_type=create`` on the event id; events stored by an earlier attempt keep their
    ``seq``). Cancelled (the worker stops): the thread gives up at its next wait, the message
    is not acked and Kafka delivers it again.
    """
    stopping = threading.Event()
    try:
        stored = await loop.run_in_executor(
            None, partial(sink().write_until_taken, batch, stopping=stopping))
    except asyncio.CancelledError:
        stopping.set()
        raise
    return stored


def health() -> tuple[bool, dict]:
    """The worker's /healthz (metrics port): ready when Elasticsearch answers and no batch is
    waiting for it; also says how many partitions this worker holds (0 for a standby)."""
    try:
        es = store().health()
        es_ok = es.get("status") in ("green", "yellow")
    except Exception as exc:  # noqa: BLE001 - unreachable is an answer
        from smartlogs.security import redact

        es, es_ok = {"error": redact(f"{type(exc).__name__}: {exc}")[:200]}, False
    try:
        assigned = len(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - consumer not started yet
        assigned = 0
    state = sink().state
    waiting = not state.ok
    detail = {"store": {"reachable": es_ok, **es},
              "kafka": {"assigned_partitions": assigned,
                        "state": {str(p): {"lines": part.pipeline.lines, "offset": part.applied,
                                           "saved_offset": part.saved_offset}
                                  for p, part in sorted(list(parts.items()))}},
              "sink": {"waiting_for_elasticsearch_since": state.failing_since,
                       "error": state.error} if waiting else {"ok": True}}
    return es_ok and not waiting, detail


async def _store_batch(loop, stream, event, part: Part, items: list[dict], batch,
                       offset: int) -> None:
    """Write one processed batch (at raw ``offset``), judge it, account for it and ack its
    message (``_store_batches``)."""
    await _store_batches(loop, stream, [(event, part, items, batch, offset)])


async def _store_batches(loop, stream, group: list[tuple]) -> None:
    """Write processed batches ``(event, part, items, batch, raw offset)`` as one write
    (``Batch.join``: one bulk request), then judge each by the alert rules, account for it and
    ack its message, in order: an offset becomes committable only now, after the sink took it.
    Run as a task of its own (``_Writes``), so a batch finishes even when no message follows (a
    rebalance clears the stream's buffer and waits for every ack)."""
    stored = await _write_until_taken(loop, Batch.join([g[3] for g in group]))
    if not stored.merged:  # the next batch of each pipeline asks again
        for part in {id(g[1]): g[1] for g in group}.values():
            part.merges.retry()
    with _rejected_lock:
        rejected, _rejected[:] = list(_rejected), []
    for k, (event, part, items, batch, offset) in enumerate(group):
        new = stored.events if len(group) == 1 else [e for e in batch.events if "seq" in e]
        # before a save may cover the batch: its global-rule input is in the outbox then
        # (``rejected`` is matched by event, so the whole group's list serves each batch)
        await _judge(part, offset, batch.events, new, rejected)
        # stored: a save may cover it now (a write cancelled by a stop leaves the count up, so
        # no later save of this process can cover a batch Elasticsearch lacks)
        part.unstored -= 1
        await _account(items, batch.events, new, rejected if k == 0 else [])
        if event is not None:
            await stream.ack(event)


# A write that stored fewer than WRITE_GATHER_EVENTS events is followed by a pause of
# WRITE_GATHER_SECONDS before the next, so the small batches processed meanwhile go as one bulk
# request: each write costs the worker a fixed share of CPU (the thread hop, the bulk request,
# its answer) whatever its size, and with many clients posting a line each every Kafka message
# held a few lines (bench/RESULTS.md, issue 18). The first write after a pause goes at once; a
# backlog fills the writes past the bound, so it never waits; the pause adds at most this much
# to ingest → searchable (p99 target 1 s).
WRITE_GATHER_SECONDS = 0.02
WRITE_GATHER_EVENTS = 500


class _Writes:
    """The agent's processed batches on their way to the store: one task writes them in
    order, and the batches processed while a write is in flight go together in the next one
    (up to ``limit`` events, the store's bulk size; beyond that the agent waits for the writer
    to take them). At a steady rate the writer is idle when a batch arrives and each batch is
    its own write, as soon as it is processed; under load the writes grow, and with them the
    events per bulk request, which costs Elasticsearch and the worker per request
    (bench/RESULTS.md, issue 18). Writes and acks stay in the order of the messages."""

    def __init__(self, loop, stream, limit: int) -> None:
        self.loop, self.stream, self.limit = loop, stream, max(1, limit)
        self.queue: list[tuple] = []
        self.events = 0  # in the queue
        self.task: asyncio.Future | None = None
        self._taken = asyncio.Event()

    def add(self, event, part: Part, items: list[dict], batch, offset: int) -> None:
        self.queue.append((event, part, items, batch, offset))
        self.events += len(batch.events)
        if self.task is None or self.task.done():
            if self.task is not None:
                self.task.result()  # a failed write stops the agent, as before
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        global _save_due
        while True:
            while self.queue:
                group, self.queue, self.events = self.queue, [], 0
                self._taken.set()
                await _store_batches(self.loop, self.stream, group)
                if sum(len(g[3].events) for g in group) < WRITE_GATHER_EVENTS:
                    # a small write (clients posting a line each): the batches of the next
                    # few ms go together in the next one (see WRITE_GATHER_SECONDS)
                    await asyncio.sleep(WRITE_GATHER_SECONDS)
            # a save that waited for these writes is taken now, not at the next message or
            # tick (a stop before either would leave the state topic without what they covered)
            if not _save_due:
                return
            if not await _save_parts():
                _save_due = True  # a batch between processing and its write: taken after it
            if not self.queue:  # (batches added during the save are written by this task)
                return

    async def room(self) -> None:
        """Wait while ``limit`` events or more wait for the writer."""
        while self.events >= self.limit and self.task is not None and not self.task.done():
            self._taken.clear()
            taken = asyncio.ensure_future(self._taken.wait())
            try:
                await asyncio.wait({taken, self.task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                taken.cancel()
        if self.task is not None and self.task.done():
            self.task.result()

    async def drain(self) -> None:
        """Every batch added so far written and acked (to keep acks in order, before a save)."""
        if self.task is not None:
            await self.task  # it runs until the queue is empty; nothing is added meanwhile

    def cancel(self) -> None:
        """Stopping: what is not written is not acked, so Kafka delivers it again."""
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def _judge(part: Part, offset: int, events: list[dict], new: list[dict],
                 rejected: list[dict]) -> None:
    """The alert rules over a stored batch at raw ``offset``: the partition-local ones over
    the batch's stored events unless the partition's part of the alert engine's saved state
    covers the batch already (``Alerting.on_stored``'s ``offset``: a batch stored by a worker
    that died before judging it is judged by the one processing it again, whose write newly
    stores none of it), the global ones over them unless the facts mark says they saw them
    before this process took the partition (``streams.runtime.alert_facts``). Their input
    (the facts for the holder of partition 0, or only the mark when judged here) goes to the
    partition's outbox, committed in a transaction by ``_commit_facts``, never awaited here:
    a failing facts path does not hold the pipeline."""
    if _alerting is None:
        return
    dead = {id(d.get("event")) for d in rejected}
    stored: list[dict] = []
    ids: set = set()  # a repeated id is stored once (the first)
    for e in events:
        if id(e) not in dead and e.get("id") not in ids:
            ids.add(e.get("id"))
            stored.append(e)
    glob = [] if part.outbox.seen(offset) else stored
    if not new and not stored:
        return
    # off the event loop: the history is written to Elasticsearch (never raises)
    facts = await asyncio.get_running_loop().run_in_executor(
        None, _alert_on, new, part.partition, glob, offset, stored)
    if glob:
        part.outbox.add(offset + 1, None if facts is None
                        else alert_facts.encode_facts(len(glob), facts))
        _facts_due.set()


def _make_alerting():
    """Alert rules in the full stack (``SMARTLOGS_ALERT_RULES``): the same engine as embedded
    mode, fed with each batch once Elasticsearch took it (each batch once, also when
    processed again after a crash: ``_judge``), its history in Elasticsearch (the API lists it). Each rule is
    evaluated once however many workers share the topic (``streams.alerts.assign_rules``:
    with every partition, all rules over this worker's events; else host/incident rules over
    its events, and the global ones by the holder of partition 0, over the facts every
    worker sends to ``<worker id>-alert-facts``: ``streams.runtime.alert_facts``). The
    engine's state is saved per partition held and, with partition 0, for the global rules
    with the facts' position (``streams.alerts.scopes_held``): it moves with the
    partitions."""
    if settings.alert_rules is None:
        return None
    from streams.runtime.alerting import Alerting, EsAlertHistory
    from streams.alerts import assign_rules

    alerting = Alerting.from_settings(
        settings, history=EsAlertHistory(store().client, settings.es_index_prefix))
    alerting.engine.marks_of = lambda: _marks or {}
    alerting.engine.lines_learned_of = _lines_learned
    alerting.busy = lambda: _lagging()  # windows close by the clock once nothing waits

    def raw_partitions() -> set[int]:
        try:
            return {tp.partition for tp in app.consumer.assignment()
                    if tp.topic == settings.kafka_topic}
        except Exception:  # noqa: BLE001 - consumer not started: no events to judge yet
            return set()

    alerting.plan = lambda: assign_rules(alerting.engine.rules, raw_partitions(),
                                         settings.kafka_partitions)
    alerting.holds = lambda: scopes_held(raw_partitions(), settings.kafka_partitions)
    # with other workers, its host/incident rules' alerts go to the holder of partition 0
    # (the cap over every worker's firings); ``forward`` is set once the loop runs
    alerting.shares = lambda: raw_partitions() != set(range(settings.kafka_partitions))
    return alerting


_alerting = _make_alerting()


async def _account(items: list[dict], events: list[dict], new: list[dict],
                   rejected: list[dict]) -> None:
    """After a batch's write (``new``: the events newly stored, counted by the sink,
    ``streams.runtime.stage.Sink``): log it and dead-letter what Elasticsearch rejected."""
    log.info("stored %d new of %d events", len(new), len(events),
             extra={"correlation_id": correlation_ids(items)})
    for doc in rejected:
        await dead_letters.send(value=orjson.dumps(doc, default=str))
    metrics.DEAD_LETTERED.labels("elasticsearch").inc(len(rejected))


def _decode_and_process(value: bytes, part: Part):
    """A Kafka message's value → (items, batch), through ``part``'s pipeline
    (``streams.runtime.stage.run_stage``). An undecodable value is (None, dead letters): no events; an
    item the pipeline cannot process is isolated (stored flagged, and dead-lettered alone, its
    batch-mates stored). Either way the partition's state now reflects the message."""
    try:
        items = orjson.loads(value)
        if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i
                                                  for i in items):
            raise ValueError("expected a JSON array of items with ids")
    except ValueError as exc:
        return None, [{"error": f"undecodable batch: {exc}",
                       "body": value.decode("utf-8", "replace")}]
    return items, run_stage(part.pipeline, part.merges, items)


async def _send_dead_letters(docs: list[dict]) -> None:
    for doc in docs:
        await dead_letters.send(value=orjson.dumps(doc, default=str))
    metrics.DEAD_LETTERED.labels("worker").inc(len(docs))


# -- continuity of the raw topic ---------------------------------------------------------------
# Faust (0.15.3) can skip a message of a partition right after an assignment: recovery resumes
# the stream partitions before it seeks them to their committed offsets, the fetcher drops the
# message delivered in between as already read, and Consumer._drain_messages then treats the
# jump in offsets as a "gap" and marks the offsets in it as done, so the next commit moves past
# a message no agent saw (observed: SIGTERM to a worker during a replay, then a new worker,
# lost one batch in about half of the runs). So for the raw topic the agent checks that the
# offsets it gets are consecutive, from the committed offset on; a message it did not get is
# read again from Kafka by offset and processed before the one that follows it, and only then
# acked (until then the commit cannot move past it; Faust's own gap-filling is off for it). A message
# delivered twice is not processed twice. The same mechanism catches a partition's state up: on
# an assignment the agent expects the first offset the state does not reflect (``Part.applied``)
# rather than the committed one.
_expected: dict = {}  # TP → (consumer generation, next offset this agent should see)


def _needs_start(event) -> bool:
    """Whether ``event`` is the first message of its partition's assignment in this process."""
    seen = _expected.get(event.message.tp)
    return seen is None or seen[0] != event.message.generation_id


async def _group_committed(tp) -> int | None:
    """The group's committed offset of ``tp``, asked of Kafka (OffsetFetch through a short-lived
    consumer that joins nothing): for a first message that arrives before Faust has sought the
    partition to it, when its own record of the committed offset is still empty."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from smartlogs.security import kafka_client_kwargs

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=app.conf.id,
                                enable_auto_commit=False, client_id="smartlogs-worker-committed",
                                **kafka_client_kwargs(settings))
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(tp.topic, tp.partition))
    finally:
        await consumer.stop()


def _continuity(event, part: Part, committed: int | None = None) -> tuple[int, int] | None:
    """(first, end) of offsets missing before ``event``, (x, x) for a message already reflected
    in ``part``'s state (a repeat), None when ``event`` is the next one expected. On the first
    message of an assignment the next offset expected is the one ``part``'s state stops at
    (what it was restored at, or what it processed last); with no state, the group's committed
    offset (``committed`` when Faust's own record of it is still empty)."""
    msg = event.message
    gen = msg.generation_id
    seen = _expected.get(msg.tp)
    if seen is None or seen[0] != gen:  # first message of this assignment
        if part.applied is not None:
            nxt = part.applied
        else:
            if committed is None:
                committed = committed_offset(app.consumer, msg.tp)
            nxt = committed if committed is not None else msg.offset
    else:
        nxt = seen[1]
    if msg.offset >= nxt:
        _expected[msg.tp] = (gen, msg.offset + 1)
    if msg.offset == nxt:
        return None
    if msg.offset < nxt:
        return (msg.offset, msg.offset)
    return (nxt, msg.offset)


def _client_kwargs() -> dict:
    from smartlogs.security import kafka_client_kwargs

    return kafka_client_kwargs(settings)


async def _raw_bounds(tp) -> tuple[int, int]:
    """(log start, end) offsets of a raw-topic partition, asked of Kafka."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    part = TopicPartition(tp.topic, tp.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                client_id="smartlogs-worker-bounds", **_client_kwargs())
    await consumer.start()
    try:
        first = (await consumer.beginning_offsets([part]))[part]
        end = (await consumer.end_offsets([part]))[part]
        return first, end
    finally:
        await consumer.stop()


STATE_RETRY_CAP = 30.0  # seconds between attempts to read a partition's state
_state_topic_ready = False


async def _take_partition(tp) -> Part:
    """A newly assigned raw partition: its writer (which fences a previous owner out of the
    state topic partition), then its state read back to the high-water mark. A state that
    cannot be read is retried (a cold model is what this avoids); a damaged one is logged and
    replaced by a fresh model (whose first save rewrites it whole)."""
    from streams.runtime.state_topic import StateWriter, ensure_state_topic, read_state

    global _state_topic_ready
    p = tp.partition
    delay = 1.0
    while True:
        try:
            if not _state_topic_ready:  # before anything reads it (no auto-created topic)
                await ensure_state_topic(settings.kafka_bootstrap, state_topic_name,
                                         settings.kafka_partitions, **_client_kwargs())
                _state_topic_ready = True
        except Exception as exc:  # noqa: BLE001 - Kafka away: the partition waits for its state
            log.warning("creating %s failed (%s); retrying in %.0f s", state_topic_name,
                        redact(f"{type(exc).__name__}: {exc}")[:300], delay)
            await asyncio.sleep(delay)
            delay = min(STATE_RETRY_CAP, delay * 2)
            continue
        writer = StateWriter(settings.kafka_bootstrap, state_topic_name, p, settings.worker_id,
                             **_client_kwargs())
        try:
            started = time.monotonic()
            await writer.start()
            records = await read_state(settings.kafka_bootstrap, state_topic_name, p,
                                       **_client_kwargs())
            break
        except Exception as exc:  # noqa: BLE001 - Kafka away: the partition waits for its state
            await writer.stop()
            log.warning("partition %d: reading its state failed (%s); retrying in %.0f s", p,
                        redact(f"{type(exc).__name__}: {exc}")[:300], delay)
            await asyncio.sleep(delay)
            delay = min(STATE_RETRY_CAP, delay * 2)
    try:
        restored = decode_state(records, _config)
    except Exception as exc:  # noqa: BLE001 - damaged: start fresh, never crash-loop
        log.error("partition %d: its state in %s is unusable (%s); starting a fresh model", p,
                  state_topic_name, exc)
        restored = None
    if restored is None:
        log.info("partition %d: no state in %s; a fresh model from the committed offset", p,
                 state_topic_name)
        return Part(p, Pipeline(_config), None, Book(), writer, alert_facts.decode_mark(records))
    pipeline, offset, book = restored
    log_start, end = await _raw_bounds(tp)
    if offset > end:  # the raw topic was recreated: its offsets mean nothing to this state
        log.warning("partition %d: the state reflects offset %d but the raw partition ends at %d "
                    "(topic recreated?): its model is kept, from the committed offset on",
                    p, offset, end)
        offset = None
    elif offset < log_start:
        log.warning("partition %d: the raw records %d-%d the state misses are gone (retention); "
                    "from %d on", p, offset, log_start - 1, log_start)
    log.info("partition %d: state restored from %s in %.2f s: %d lines learned, %d records, "
             "reflects the raw topic up to offset %s", p, state_topic_name,
             time.monotonic() - started, pipeline.lines, len(records), offset)
    return Part(p, pipeline, offset, book, writer, alert_facts.decode_mark(records))


async def _read_range(tp, first: int, end: int) -> list:
    """Records first..end-1 of ``tp`` (those retention kept), read directly from Kafka (no
    consumer group)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    part = TopicPartition(tp.topic, tp.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, client_id="smartlogs-worker-gap",
                                auto_offset_reset="earliest", **_client_kwargs())
    await consumer.start()
    try:
        consumer.assign([part])
        consumer.seek(part, first)
        out, empty = [], 0
        while (out[-1].offset + 1 if out else first) < end and empty < 10:
            got = (await consumer.getmany(part, timeout_ms=1000)).get(part, [])
            empty = 0 if got else empty + 1
            out.extend(r for r in got if first <= r.offset < end)
        return out
    finally:
        await consumer.stop()


async def _repair(loop, event, part: Part, first: int, end: int) -> None:
    """Process the messages first..end-1 of ``event``'s partition: those Faust did not deliver,
    or those after the offset a restored state reflects (their events are stored already: the
    writes are absorbed; the model and incidents catch up)."""
    tp = event.message.tp
    records = await _read_range(tp, first, end)
    log.warning("partition %s: offsets %d-%d were not processed by this state; re-read %d "
                "message(s) from Kafka and processed them before offset %d",
                tp.partition, first, end - 1, len(records), end)
    metrics.GAPS_REPAIRED.inc(len(records))
    for rec in records:
        items, batch = _decode_and_process(rec.value, part)
        part.applied = rec.offset + 1
        if items is None:
            await _send_dead_letters(batch)
            continue
        part.unstored += 1  # before any await: no save covers it until it is stored
        await _send_dead_letters(batch.dead_letters)
        await _store_batch(loop, None, None, part, items, batch, rec.offset)
    part.applied = end
    ack_offsets(app.consumer, tp, first, end)  # now the commit may move past them


async def _part_of(event) -> Part | None:
    """The state of ``event``'s partition (read back from the state topic at its first
    message); None for a message of a partition this worker no longer holds."""
    tp = event.message.tp
    part = parts.get(tp.partition)
    if part is not None and part.stale:
        # fenced: another worker held the partition meanwhile (this one missed a rebalance,
        # e.g. frozen past the session timeout) and saved a newer state; a writer of the same
        # transactional id can never commit again, so take the partition up afresh
        log.warning("partition %d: its state writer was fenced by another owner; taking the "
                    "partition again from %s", tp.partition, state_topic_name)
        await _drop_part(tp.partition)
        part = None
    if part is None:
        if tp not in app.consumer.assignment():
            return None
        part = parts[tp.partition] = await _take_partition(tp)
    return part


async def _first_save(event, part: Part, committed: int | None) -> None:
    """A partition with no state saved (``Part.applied`` None) is saved, a fresh model at the
    offset it starts from, before its first message is processed: the facts mark is that
    offset from then on. Without it a worker killed in the partition's first
    ``SMARTLOGS_CHECKPOINT_SECONDS`` left no state, and its next owner took the partition up
    from the group's committed offset, past a batch acked before its alert facts were
    committed: the global rules never saw that batch (``streams.runtime.alert_facts``). A
    save that fails is logged; the next checkpoint tries again (the window stays open until
    one succeeds)."""
    if committed is None:
        committed = committed_offset(app.consumer, event.message.tp)
    part.applied = committed if committed is not None else event.message.offset
    async with _save_lock:
        await _save_part(part)


@app.agent(raw_topic)
async def process(batches):
    """One Kafka message = one batch, through the pipeline of its partition. Acks are manual: a
    message is acknowledged only after Elasticsearch took its events (``_store_batches``);
    template ids merged away while processing a batch are rewritten in the store after its
    write (``merge_templates``). Processing and writing overlap: while a write is in flight
    (Elasticsearch indexing on its own core, the write in a thread), the next batches go
    through the pipeline, and are written together once it is done (``_Writes``: one bulk
    request for all of them), so writes and acks stay in order. When a save is due and a
    partition has a batch in flight, the save is taken here, between two batches, once the
    writes are done (a save covers stored batches only)."""
    loop = asyncio.get_running_loop()
    stream = batches.noack()
    keep_gaps_open(app.consumer, settings.kafka_topic)
    writes = _Writes(loop, stream, store().chunk_size)  # the batches on their way to the store
    try:
        async for event in stream.events():
            if _save_due:
                await writes.drain()
                await _save_parts()
            part = await _part_of(event)
            if part is None:  # revoked meanwhile: the new owner processes it
                log.info("partition %s: offset %d arrived after the partition was revoked; left "
                         "to its new owner", event.message.partition, event.message.offset)
                continue
            committed = None
            if (_needs_start(event) and part.applied is None
                    and committed_offset(app.consumer, event.message.tp) is None):
                # the first message came before Faust sought the partition to its commit (the
                # window in which it used to skip one): ask Kafka where the commit is
                try:
                    committed = await _group_committed(event.message.tp)
                except Exception as exc:  # noqa: BLE001 - as before: from this message on
                    log.warning("partition %s: could not read the group's commit (%s)",
                                event.message.partition, exc)
                log.info("partition %s: first message (offset %d) before Faust knew the commit; "
                         "Kafka's committed offset: %s", event.message.partition,
                         event.message.offset, committed)
            if _needs_start(event) and part.applied is None:
                await _first_save(event, part, committed)
            gap = _continuity(event, part, committed)
            if gap is not None:
                await writes.drain()  # keep writes and acks in order
                first, end = gap
                if first == end:  # reflected in the state already: ack once more
                    log.info("partition %s: offset %d is reflected in its state already; not "
                             "processed twice", event.message.partition, first)
                    await stream.ack(event)
                    continue
                await _repair(loop, event, part, first, end)
            # the pipeline runs while the batches before are written
            items, batch = _decode_and_process(event.value, part)
            part.applied = event.message.offset + 1
            if items is None:  # undecodable: nothing to store
                await _send_dead_letters(batch)
                await writes.drain()  # keep acks in order
                await stream.ack(event)
                continue
            part.unstored += 1  # before any await: no save covers it until it is stored
            await _send_dead_letters(batch.dead_letters)
            writes.add(event, part, items, batch, event.message.offset)
            await writes.room()
    finally:
        writes.cancel()  # stopping: not acked, so Kafka redelivers it (ids absorb it)


if settings.retention_days > 0:
    from streams.runtime.retention import Retention

    _retention = Retention(lambda cut: len(store().delete_before(cut)), days=settings.retention_days,
                           window_seconds=WINDOW)

    @app.timer(interval=600.0, on_leader=False)
    async def retention() -> None:
        """Delete whole Elasticsearch indices past SMARTLOGS_RETENTION_DAYS (idempotent: with
        several workers, the first to get there deletes, the others find nothing)."""
        await asyncio.get_running_loop().run_in_executor(None, _retention.run_once)


@app.timer(interval=5.0)
async def consumer_lag() -> None:
    """Kafka consumer lag per partition: high-water mark minus the committed offset."""
    consumer = app.consumer
    for tp in consumer.assignment():
        if tp.topic != settings.kafka_topic:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet
            continue
        committed = committed_offset(consumer, tp) or 0
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max((high or 0) - committed, 0))


MARKS_SECONDS = 5.0  # how often the worker reads the template marks (feedback) from the store


@app.timer(interval=MARKS_SECONDS)
async def template_marks() -> None:
    """Feedback on templates (POST /api/templates/{id}/feedback) is stored in Elasticsearch by
    the API; the worker reads the marks every MARKS_SECONDS and scores the next lines of every
    partition with them (in the event loop, between two batches: a batch is scored with one set
    of marks)."""
    global _marks
    try:
        marks = await asyncio.get_running_loop().run_in_executor(None, store().template_marks)
    except Exception as exc:  # noqa: BLE001 - the marks in force stay; read again next time
        log.warning("could not read the template marks (%s)", redact(f"{type(exc).__name__}: {exc}")[:200])
        return
    if marks != _marks:
        log.info("template marks: %d in force", len(marks))
        _marks = marks
    for part in list(parts.values()):
        if part.pipeline.scorer.marks != marks:
            part.pipeline.scorer.marks = marks
    await _adopt_aliases()


async def _adopt_aliases() -> None:
    """The catalog's aliases (ids another worker's template text made aliases, streams.catalog)
    handed to every partition's miner, so the next lines carry the canonical ids (the store maps
    the ids it is given meanwhile). Between two batches, like the marks; a partition taken
    later gets them when its state is read back (``Part``)."""
    global _aliases
    try:
        aliases = await asyncio.get_running_loop().run_in_executor(None, store().template_aliases)
    except Exception as exc:  # noqa: BLE001 - read again next time
        log.warning("could not read the template aliases (%s)",
                    redact(f"{type(exc).__name__}: {exc}")[:200])
        return
    _aliases = aliases
    renamed = sum(len(part.pipeline.adopt_aliases(aliases) or ()) for part in list(parts.values()))
    if renamed:
        log.info("template catalog: %d template(s) renamed to their canonical id", renamed)


def _alert_on(events: list[dict], partition: int, seen: list[dict], offset: int,
              stored: list[dict]) -> list[dict] | None:
    try:
        return _alerting.on_stored(events, partition_scope(partition), seen=seen, offset=offset,
                                   batch=stored)
    except Exception:  # noqa: BLE001 - alerting must never hold the pipeline
        log.exception("alert rules failed on a batch")
        return None


facts_topic_name = alert_facts.facts_topic_name(settings.worker_id)
facts_topic = app.topic(facts_topic_name, value_type=bytes, value_serializer="raw", partitions=1)
_facts_topic_ready = asyncio.Event()


_facts_due = asyncio.Event()  # a partition's outbox has global-rule input to commit


async def _commit(part: Part, records: list = (), reflects: int = 0) -> None:
    """One transaction on ``part``'s state writer: ``records`` (a state save reflecting the
    raw topic up to ``reflects``), the facts waiting in its outbox and the facts mark
    (``streams.runtime.alert_facts``): committed together or not at all. Raises if it failed
    (the outbox keeps what it had: the next transaction carries it)."""
    async with part.tx:
        mark, facts, n = part.outbox.take(reflects)
        if facts and not _facts_topic_ready.is_set():
            await _ensure_facts_topic()
        try:
            await part.writer.write([*records, (alert_facts.MARK_KEY, alert_facts.encode_mark(mark))],
                                    facts=facts, facts_topic=facts_topic_name)
        except Exception:
            if part.writer.fenced():  # no later transaction of this writer can commit
                part.stale = True
            raise
        delivered = part.outbox.committed(n, mark)
    if delivered and _alerting is not None:  # forwarded alerts: their part may be saved now
        by_scope: dict = {}
        for scope, *key in delivered:
            by_scope.setdefault(scope, []).append(tuple(key))
        for scope, keys in by_scope.items():  # (its lock: off the loop)
            await asyncio.get_running_loop().run_in_executor(None, _alerting.delivered,
                                                             scope, keys)


@app.task
async def _commit_facts() -> None:
    """Commit the global-rule input of the stored batches (their facts, or only the mark when
    they were judged here) of every partition held, a transaction per partition with
    something waiting (a busy partition's batches go together). A transaction that fails is
    logged and tried again, with what came meanwhile, after a growing wait; the pipeline
    never waits for it."""
    if _alerting is None:
        return
    delay = 0.0
    while True:
        await _facts_due.wait()
        _facts_due.clear()
        failed = False
        for p, part in list(parts.items()):
            if not part.outbox.pending or parts.get(p) is not part:
                continue
            try:
                await _commit(part)
            except Exception as exc:  # noqa: BLE001 - alerting must never hold the pipeline
                failed = True
                log.error("partition %d: committing the alert facts of %d batch(es) failed (%s); "
                          "tried again in %.0f s", p, len(part.outbox.pending),
                          redact(f"{type(exc).__name__}: {exc}")[:300], max(delay, 1.0))
        if failed:
            delay = min(STATE_RETRY_CAP, max(1.0, delay * 2))
            await asyncio.sleep(delay)
            _facts_due.set()
        else:
            delay = 0.0


def _outbox_alerts(record: dict, plain: asyncio.Queue) -> None:
    """(On the event loop.) Alerts of partition-local rules this worker raised
    (``Alerting.forward``) for the holder of partition 0, which notifies and records them:
    into the outbox of the partition whose part raised them, out in its next transaction
    with the facts and the facts mark (``_commit``). Their part is not saved before that
    transaction committed (``Alerting.delivered``): a worker killed first leaves the part's
    last save older than the batch that raised them, so the next owner judges it again and
    raises them again (``streams.runtime.alert_facts``). Those of a partition not held here
    any more (the last batch of a revoked one) go by a plain send (``plain``)."""
    by_part: dict[int, list[dict]] = {}
    for alert in record.get("alerts") or ():
        scope = str(alert.get("scope") or "")
        part = parts.get(int(scope[1:])) if scope[:1] == "p" and scope[1:].isdigit() else None
        if part is None or part.stale:
            plain.put_nowait({"alerts": [alert]})
            if _alerting is not None:  # (its lock: off the loop)
                asyncio.get_running_loop().run_in_executor(
                    None, _alerting.delivered, alert.get("scope"),
                    [(alert.get("id"), alert.get("state"))])
        else:
            by_part.setdefault(part.partition, []).append(alert)
    for p, alerts in by_part.items():
        keys = [(a.get("scope"), a.get("id"), a.get("state")) for a in alerts]
        try:
            parts[p].outbox.forward(alert_facts.encode_facts(0, [], alerts), keys)
        except Exception:  # noqa: BLE001 - alerting must never hold the pipeline (nor the
            # part's saves: given up as delivered)
            log.exception("partition %d: %d alert(s) could not be forwarded", p, len(alerts))
            if _alerting is not None:
                asyncio.get_running_loop().run_in_executor(
                    None, _alerting.delivered, partition_scope(p), [tuple(k[1:]) for k in keys])
            continue
        _facts_due.set()


async def _send_alerts(alerts: list[dict]) -> None:
    """Alerts of partition-local rules to the holder of partition 0 (``Alerting.forward``)
    whose partition is not held here any more, a plain send (``_outbox_alerts``). A send
    that fails is logged; the cap over every worker's firings misses them."""
    try:
        if not _facts_topic_ready.is_set():
            await _ensure_facts_topic()
        await facts_topic.send(value=alert_facts.encode_facts(0, [], alerts))
    except Exception as exc:  # noqa: BLE001 - alerting must never hold the pipeline
        log.error("forwarding %d alert(s) failed (%s)", len(alerts),
                  redact(f"{type(exc).__name__}: {exc}")[:300])


async def _forward_alerts(forwarded: asyncio.Queue) -> None:
    """Send the alerts of partition-local rules this worker raised for a partition it no
    longer holds (``_outbox_alerts``) to the holder of partition 0, in the order raised."""
    while True:
        record = await forwarded.get()
        await _send_alerts(record.get("alerts") or [])


async def _ensure_facts_topic() -> None:
    await alert_facts.ensure_facts_topic(settings.kafka_bootstrap, facts_topic_name,
                                         **_client_kwargs())
    _facts_topic_ready.set()


@app.task
async def _start_alerting() -> None:
    if _alerting is None:
        return
    loop = asyncio.get_running_loop()
    forwarded: asyncio.Queue = asyncio.Queue()  # those of a partition not held: plain sends
    _alerting.forward = lambda record: loop.call_soon_threadsafe(_outbox_alerts, record, forwarded)
    app.add_future(_forward_alerts(forwarded))
    # restores the engine's state from Elasticsearch: off the loop
    await loop.run_in_executor(None, _alerting.start)
    delay = 1.0
    while True:  # the holder of partition 0 judges the global rules over every worker's facts
        try:
            if not _facts_topic_ready.is_set():
                await _ensure_facts_topic()
            await alert_facts.read_facts(_alerting, settings.kafka_bootstrap, facts_topic_name,
                                         **_client_kwargs())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Kafka away: read again from the position
            log.warning("reading the alert facts failed (%s); again in %.0f s",
                        redact(f"{type(exc).__name__}: {exc}")[:300], delay)
            await asyncio.sleep(delay)
            delay = min(STATE_RETRY_CAP, delay * 2)


@app.on_before_shutdown.connect
async def _save_on_stop(sender, **kwargs) -> None:  # noqa: ARG001 - Faust's signature
    """A clean stop (SIGTERM, ``docker compose stop``) saves the partitions whose state moved
    since their last save (those with no batch left unstored), so their next owner resumes
    from here, not from the last checkpoint tick or, before the first one, a fresh model
    (Faust stops the consumer without revoking the partitions, so ``_on_revoked`` does not)."""
    await _save_parts()


@app.on_before_shutdown.connect
async def _stop_alerting(sender, **kwargs) -> None:
    """A clean stop saves the alert engine's state (streams.runtime.alerting) for the next start."""
    if _alerting is not None:
        await asyncio.get_running_loop().run_in_executor(None, _alerting.stop)


@app.task
async def _serve_metrics() -> None:
    # a task runs when the app starts as a worker; Faust's other commands (`agents`, `tables`)
    # also send on_worker_init, and must not bind (or warn about) the worker's metrics port
    metrics.expose("pipeline", "worker")
    metrics.serve(settings.worker_metrics_port, settings.metrics_host, health=health)


@app.timer(interval=5.0)
async def incidents_tick() -> None:
    """Resolve incidents that went quiet (``streams.incidents``: nothing of them arrived for
    the quiet period) when this worker has nothing waiting in its partitions, and store the
    resolved snapshots (a failed write is retried at the next tick)."""
    global _unwritten_ticks
    if _lagging():
        return
    now = time.time()
    changed = [snap for part in list(parts.values()) for snap in part.pipeline.incidents.tick(now)]
    if changed or _unwritten_ticks:
        batch, _unwritten_ticks = _unwritten_ticks + changed, []
        try:
            # the one write (streams.runtime.stage.Sink: its failures show in the sink state),
            # one attempt: the next tick tries again
            await asyncio.get_running_loop().run_in_executor(
                None, sink().write, Batch([], [], None, [], batch))
        except Exception as exc:  # noqa: BLE001 - kept for the next tick
            _unwritten_ticks = batch
            log.warning("storing %d resolved incident(s) failed (%s); retried at the next tick",
                        len(batch), redact(f"{type(exc).__name__}: {exc}")[:300])


_unwritten_ticks: list[dict] = []


def _lagging() -> bool:
    """Whether records wait in an assigned partition of the raw topic (then a line that
    arrived before now may not be processed yet, and the tick waits)."""
    consumer = app.consumer
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == settings.kafka_topic]
    except Exception:  # noqa: BLE001 - consumer not started yet: nothing to tick for either
        return True
    for tp in assigned:
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet: nothing known to wait there
            continue
        if high and high > (committed_offset(consumer, tp) or 0):
            return True
    return False


_save_due = False  # a save waits for a partition's batch in flight: the agent takes it
_save_lock = asyncio.Lock()  # one save at a time, in order (created here: Python >= 3.10)


@app.timer(interval=settings.checkpoint_seconds)
async def checkpoint() -> None:
    """Save the state of the partitions that processed records since their last save (an idle
    worker writes nothing). A partition with a batch not yet stored waits: the agent then saves
    between two batches, once the write is done."""
    global _save_due
    if not await _save_parts():
        _save_due = True


async def _save_parts(only: set[int] | None = None) -> bool:
    """Save the partitions (``only`` those) whose state moved since their last save and that
    have no batch in flight; False when one had to wait. Each save is one transaction on the
    state topic; encoding it is synchronous (the state saved is the state at that instant)."""
    global _save_due
    _save_due = False
    done = True
    async with _save_lock:
        for p, part in list(parts.items()):
            if only is not None and p not in only:
                continue
            if part.applied is None or part.applied == part.saved_offset:
                continue
            if part.unstored:
                done = False
                continue
            await _save_part(part)
    return done


async def _save_part(part: Part) -> None:
    started = time.process_time()
    save = encode_save(part.pipeline, part.book, part.applied)
    cpu = time.process_time() - started
    try:  # with the alert facts not committed yet: a save never covers a batch without them
        await _commit(part, save.records, save.offset)
    except Exception as exc:  # noqa: BLE001 - the next save is whole; the stream goes on
        part.book.failed(save)
        log.error("partition %d: saving its state failed (%s); the next save rewrites it whole",
                  part.partition, redact(f"{type(exc).__name__}: {exc}")[:300])
        return
    part.saved_offset = save.offset
    log.info("partition %d: state saved at offset %d (%d records, %s, %.0f ms CPU)",
             part.partition, save.offset, len(save.records), "whole" if save.full else "changes",
             cpu * 1000)


@app.on_partitions_revoked.connect
async def _on_revoked(sender, revoked, **kwargs) -> None:  # noqa: ARG001 - Faust's signature
    """Before a rebalance: save the raw partitions being revoked (Faust waited for every
    delivered message to be acked, so none has a batch in flight unless a write is stuck)."""
    mine = {tp.partition for tp in revoked if tp.topic == settings.kafka_topic}
    if mine:
        await _save_parts(only=mine)
    if mine and _alerting is not None:  # and their part of the alert engine's state (its
        # groups are forgotten once the new assignment is known: Alerting.holds); with
        # partition 0, the facts wait for the new assignment (``Alerting.assigned``)
        await asyncio.get_running_loop().run_in_executor(
            None, partial(_alerting.save, clean=True, fence=True,
                          scopes=scopes_held(mine, settings.kafka_partitions)))


@app.on_partitions_assigned.connect
async def _on_assigned(sender, assigned, **kwargs) -> None:  # noqa: ARG001 - Faust's signature
    """After a rebalance: drop the state of the raw partitions this worker no longer holds
    (their new owner reads it back from the state topic); those it keeps stay in memory,
    nobody else held them in between, unless this worker missed a generation of the group
    (``_missed_generation``): then another worker may have held them, saved a newer state and
    fenced their writers, so they are read back from the state topic too (the old code kept
    them: a fenced writer never committed their facts or state again, the global rules never
    saw their batches until a restart)."""
    global _generation
    keep = {tp.partition for tp in assigned if tp.topic == settings.kafka_topic}
    before, generation = _generation, getattr(app, "consumer_generation_id", None)
    missed = _missed_generation(before, generation)
    _generation = generation
    try:
        for p in [p for p in parts if p not in keep or missed]:
            if p in keep:
                log.warning("partition %d: this worker missed a rebalance (generation %s, now "
                            "%s): another may have held it meanwhile, so its state is read back "
                            "from %s", p, before, generation, state_topic_name)
            else:
                log.info("partition %d: revoked; its state (%d lines learned, saved at offset "
                         "%s) goes with it", p, parts[p].pipeline.lines, parts[p].saved_offset)
            await _drop_part(p)
    finally:  # whatever happened above, the judging is not left fenced off; after a missed
        # generation the alert engine's parts are read back too (another may have saved them)
        if _alerting is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, partial(_alerting.assigned, retake=missed))


_generation: int | None = None  # the consumer group generation of this worker's last assignment
DROP_WAIT_SECONDS = 10.0  # how long a dropped partition's writer waits for its transaction


def _missed_generation(before: int | None, now: int | None) -> bool:
    """Whether the group went through a generation without this worker between its last
    assignment (``before``) and this one (``now``): it was out of the group meanwhile (frozen
    or starved past the session timeout), so another worker may have held, processed and saved
    the partitions it keeps, and fenced their writers.

    >>> _missed_generation(None, 3), _missed_generation(3, 4), _missed_generation(2, 4)
    (False, False, True)
    """
    return before is not None and now is not None and now != before + 1


async def _drop_part(p: int) -> None:
    """Forget raw partition ``p``'s state in memory (its owner, maybe this worker again,
    reads it back from the state topic) and stop its writer once no transaction of it runs."""
    part = parts.pop(p)
    for tp in [tp for tp in _expected if tp.partition == p and tp.topic == settings.kafka_topic]:
        del _expected[tp]  # its next message is a first one: continuity from the state read back
    held = False
    try:  # bounded: a transaction that never returns must not hold the rebalance
        await asyncio.wait_for(part.tx.acquire(), DROP_WAIT_SECONDS)
        held = True
    except asyncio.TimeoutError:
        log.error("partition %d: a transaction of its writer did not end in %.0f s; stopped "
                  "anyway", p, DROP_WAIT_SECONDS)
    try:
        await part.writer.stop()
    finally:
        if held:
            part.tx.release()


def main(argv: list[str] | None = None) -> None:
    """Run Faust's CLI on this app (default: `worker -l info`)."""
    import sys

    # with JSON logs every line on stderr is JSON: Faust's startup banner is left out
    quiet = ["--quiet"] if settings.logs_json else []
    args = list(argv or ["worker", "-l", "info"])
    if args[0] == "worker" and not any(a in ("--with-web", "--without-web") for a in args):
        # Faust's `worker` command turns its web server on (0.0.0.0:6066) whatever web_enabled
        # says; we serve nothing there (metrics have their own port), so keep it off
        args.insert(1, "--without-web")
    sys.argv = ["smartlogs-worker", *quiet, *args]
    app.main()


if __name__ == "__main__":  # pragma: no cover
    main()
