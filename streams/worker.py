"""Kafka mode: the same ``Pipeline`` driven by faust-streaming agents.

    smartlogs worker                     # or: faust -A streams.worker worker -l info
    faust -A streams.worker agents       # Faust's own commands keep working
    faust -A streams.worker tables

Topic ``smartlogs.raw`` carries batches of items (JSON arrays, up to a few hundred lines of
one source each, keyed by source: the bridge makes them). One Faust message per batch, not per
line: Faust's per-message cost (~200 µs, architecture.md) is then shared by the batch.

Per message the ``process`` agent runs the pipeline, writes the events to Elasticsearch
(bulk, ``op_type=create`` with the event id as ``_id``: a re-delivered batch is absorbed),
sends documents Elasticsearch rejects to the dead-letter topic, and adds the **new** events
(those the sink did not already have) to the ``window_counts`` table: one entry per (source
partition, window start) holding that window's counts per (dimension, key) — scoped by
partition so that each key has one writer and one changelog partition, whichever hosts share
a window — so a batch costs one changelog
record per window it touches rather than one per (window, dimension, key): ~6x fewer for a
replay of an old log whose lines each fall in a minute of their own, ~50x fewer for live
logs. The table is backed by its Kafka changelog, so a restarted worker recovers its
windows. The offset of a message is committed only after the agent moved past it, i.e.
after the sink acknowledged the write.

The private Faust names this module relies on live in ``streams.faust_internals`` (pinned by
tests/unit/test_faust_internals.py).

Model state (templates, trees, threshold) is checkpointed to the data directory every few
seconds when lines were processed since the last checkpoint (the same bounded ``Pipeline`` as
the embedded mode: capped templates and per-key state, a bounded search per line); after a restart the worker resumes from the last committed offset with the last
checkpoint, so in Kafka mode the model may relearn or skip a few seconds of lines (the
stored events are exact either way).

Incidents (``streams.incidents``) are part of that state: each batch's changed incident
snapshots are written to Elasticsearch after its events (``<prefix>.incidents``, upserted by
id, the newest ``rev`` wins), and a timer resolves the quiet ones when no records wait. After
a kill -9 the worker resumes from its last checkpoint and the committed offset, which may lie
past it: the lines in between are not processed again, so an incident's count may then
differ from the lines stored with its id (exact counts after a crash: embedded mode).
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
from streams.faust_internals import ack_offsets, attributed_to, committed_offset, keep_gaps_open
from streams.checkpoints import load_checkpoint, save_checkpoint
from streams.pipeline import Pipeline, PipelineConfig
from streams.stage import process_isolating
from streams.templates import MergeNotices
from streams.windows import count_windows, fold_window_counts, summarize_windows

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

# "partition|window start" → {"dimension|key": count}, over events the sink newly stored, per
# source partition (a window's totals are the sum over partitions). A dict value is replaced,
# never mutated in place: only an assignment writes the changelog.
window_counts = app.Table("window_counts_by_window", default=dict,
                          partitions=settings.kafka_partitions, key_type=str,
                          help="Events per window and dimension (host, component, level, "
                               "template, anomalies), per source partition")
                          # (no value_type: values go through the changelog as plain JSON objects)

_config = PipelineConfig.from_settings(settings)
_ckpt = settings.data_dir / "worker.ckpt"
pipeline: Pipeline = load_checkpoint(_ckpt, _config) or Pipeline(_config)
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
                                    client_kwargs=es_client_kwargs(settings))
    return _store


SINK_RETRY_CAP = 30.0  # seconds between attempts while Elasticsearch stays unavailable


_merges = MergeNotices()  # template merges this process has had the store apply


async def _merge_templates(loop, merges: dict) -> None:
    """Have the store rewrite ids merged away. A failure does not hold the stream (the events
    are stored; only their grouping by the old id is stale): it is logged, and the next batch
    asks again."""
    try:
        n = await loop.run_in_executor(None, store().merge_templates, merges)
        log.info("template merge: %d stored events now carry the surviving id", n)
    except Exception as exc:  # noqa: BLE001
        _merges.retry()
        log.error("template merge failed (%s); retried with the next batch",
                  redact(f"{type(exc).__name__}: {exc}")[:300])


async def _write_until_taken(loop, events: list[dict], merges: dict | None = None,
                             catalog: list | None = None,
                             incidents: list[dict] | None = None) -> None:
    """Write a batch to Elasticsearch, waiting for as long as it is unavailable or refusing.

    The agent must not move past a batch the sink has not taken: a crashed agent would be
    restarted by Faust past the message, losing it. So while Elasticsearch is down this batch
    waits (capped exponential backoff, logged, counted in ``smartlogs_sink_failures_total``);
    the rest waits in Kafka, durably, and the offset is not committed. Retries are idempotent
    (``op_type=create`` on the event id; events stored by an earlier attempt keep their ``seq``).
    """
    from smartlogs.store.elasticsearch import StoreUnavailable

    delay = 1.0
    while True:
        try:
            # blocking bulk write off the event loop; it retries briefly by itself first
            with metrics.SINK_SECONDS.labels("elasticsearch").time():
                await loop.run_in_executor(None, partial(store().write, events, window_seconds=WINDOW,
                                                         catalog=catalog))
                if incidents:  # after the events they count (a retry writes both again)
                    await loop.run_in_executor(None, store().write_incidents, incidents)
            if merges:  # after the batch: its events may carry the ids merged away
                await _merge_templates(loop, merges)
            _sink_state.update(ok=True, error=None, since=None)
            return
        except Exception as exc:  # noqa: BLE001 - whatever it is, never move past unwritten data
            # StoreUnavailable: Elasticsearch away or overloaded; anything else (a wrong password:
            # 401, a broken mapping, ...) needs a person, so it is logged as an error, but the
            # batch is held all the same: fixing the setting and restarting loses nothing
            _sink_state.update(ok=False, error=redact(f"{type(exc).__name__}: {exc}")[:300],
                               since=_sink_state.get("since") or time.time())
            metrics.SINK_FAILURES.labels("elasticsearch").inc()
            (log.warning if isinstance(exc, StoreUnavailable) else log.error)(
                "%s; holding this batch of %d and retrying in %.0f s (the rest waits in Kafka)",
                _sink_state["error"], len(events), delay)
            await asyncio.sleep(delay)
            delay = min(SINK_RETRY_CAP, delay * 2)


_sink_state: dict = {"ok": True, "error": None, "since": None}


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
    waiting = not _sink_state["ok"]
    detail = {"store": {"reachable": es_ok, **es},
              "kafka": {"assigned_partitions": assigned},
              "sink": {"waiting_for_elasticsearch_since": _sink_state["since"],
                       "error": _sink_state["error"]} if waiting else {"ok": True}}
    return es_ok and not waiting, detail


async def _finish(stream, pending) -> None:
    """Wait for a batch's write, then count it, fold its windows, dead-letter rejections and
    ack its message: the offset becomes committable only now, after the sink took it."""
    write, event, items, events = pending
    await write
    await _account(event, items, events)
    await stream.ack(event)


def _make_alerting():
    """Alert rules in the full stack (``SMARTLOGS_ALERT_RULES``): the same engine as embedded
    mode, fed with each batch once Elasticsearch took it, its history in Elasticsearch (the
    API lists it). Each rule is evaluated once however many workers share the topic
    (``streams.alerts.assign_rules``: with every partition, all rules over this worker's
    events; else host/incident rules over its events, and the global ones, from the store's
    window counts, by the holder of partition 0)."""
    if settings.alert_rules is None:
        return None
    from smartlogs.alerting import Alerting, EsAlertHistory, EsWindowCounts
    from streams.alerts import assign_rules

    alerting = Alerting.from_settings(
        settings, history=EsAlertHistory(store().client, settings.es_index_prefix))
    alerting.engine.marks_of = lambda: pipeline.scorer.marks
    alerting.engine.lines_learned_of = lambda: pipeline.lines
    alerting.busy = lambda: _lagging()  # windows close by the clock once nothing waits

    def raw_partitions() -> set[int]:
        try:
            return {tp.partition for tp in app.consumer.assignment()
                    if tp.topic == settings.kafka_topic}
        except Exception:  # noqa: BLE001 - consumer not started: no events to judge yet
            return set()

    alerting.plan = lambda: assign_rules(alerting.engine.rules, raw_partitions(),
                                         settings.kafka_partitions)
    alerting.global_counts = EsWindowCounts(store().client, store().pattern)
    return alerting


_alerting = _make_alerting()


async def _account(event, items: list[dict], events: list[dict]) -> None:
    """After a batch's write: count it, fold its windows (in ``event``'s partition's
    changelog), dead-letter what Elasticsearch rejected, and hand it to the alert rules."""
    new = [e for e in events if "seq" in e]
    if _alerting is not None and new:
        # off the event loop: the history is written to Elasticsearch (never raises)
        await asyncio.get_running_loop().run_in_executor(None, _alert_on, new)
    metrics.EVENTS_PROCESSED.labels("sink").inc(len(new))
    metrics.ANOMALIES.inc(sum(1 for e in new if e["anomaly"]))
    metrics.MODEL_WARMED_UP.set(1 if pipeline.scorer.warmed_up else 0)
    metrics.LAST_EVENT.labels("sink").set(time.time())
    log.info("stored %d new of %d events", len(new), len(events),
             extra={"correlation_id": correlation_ids(items)})
    with attributed_to(event):
        # keys scoped by the source partition: one writer per key, one changelog partition
        fold_window_counts(window_counts, count_windows(new, WINDOW),
                           scope=f"{event.message.partition}|")
    with _rejected_lock:
        rejected, _rejected[:] = list(_rejected), []
    for doc in rejected:
        await dead_letters.send(value=orjson.dumps(doc, default=str))
    metrics.DEAD_LETTERED.labels("elasticsearch").inc(len(rejected))


def _decode_and_process(value: bytes) -> tuple[list | None, list | None, list[dict]]:
    """A Kafka message's value → (items, events, dead letters). An undecodable value is one
    dead letter and no events; an item the pipeline cannot process is isolated
    (``streams.stage``): stored flagged, and dead-lettered alone, its batch-mates stored."""
    try:
        items = orjson.loads(value)
        if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i
                                                  for i in items):
            raise ValueError("expected a JSON array of items with ids")
    except ValueError as exc:
        return None, None, [{"error": f"undecodable batch: {exc}",
                             "body": value.decode("utf-8", "replace")}]
    result = process_isolating(pipeline, items)
    return items, result.events, result.dead_letters


def _incidents_of_batch() -> list[dict]:
    """The incident snapshots the last batch changed (``streams.incidents``), written after its
    events; in order with the other batches' writes, so a newer snapshot is never overtaken
    (and the store refuses an older ``rev`` anyway)."""
    return pipeline.take_incidents()


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
# delivered twice is not processed twice.
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


def _continuity(event, committed: int | None = None) -> tuple[int, int] | None:
    """(first, end) of offsets missing before ``event``, (x, x) for a message already seen by
    this process (a repeat), None when ``event`` is the next one expected. ``committed``: the
    group's committed offset, when Faust's own record of it is still empty."""
    msg = event.message
    gen = msg.generation_id
    seen = _expected.get(msg.tp)
    if seen is None or seen[0] != gen:  # first message of this assignment: from the commit on
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


async def _read_range(tp, first: int, end: int) -> list:
    """Records first..end-1 of ``tp``, read directly from Kafka (no consumer group)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from smartlogs.security import kafka_client_kwargs

    part = TopicPartition(tp.topic, tp.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, client_id="smartlogs-worker-gap",
                                **kafka_client_kwargs(settings))
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


async def _repair(loop, event, first: int, end: int) -> None:
    """Process the messages first..end-1 of ``event``'s partition that Faust did not deliver."""
    tp = event.message.tp
    records = await _read_range(tp, first, end)
    log.warning("partition %s: offsets %d-%d were not delivered by the stream; re-read %d "
                "message(s) from Kafka and processed them before offset %d",
                tp.partition, first, end - 1, len(records), end)
    metrics.GAPS_REPAIRED.inc(len(records))
    for rec in records:
        items, events, dead = _decode_and_process(rec.value)
        await _send_dead_letters(dead)
        if events is None:
            continue
        metrics.EVENTS_PROCESSED.labels("pipeline").inc(len(events))
        await _write_until_taken(loop, events, _merges.news(pipeline.miner), pipeline.take_catalog(),
                                 _incidents_of_batch())
        await _account(event, items, events)
    ack_offsets(app.consumer, tp, first, end)  # now the commit may move past them


@app.agent(raw_topic)
async def process(batches):
    """One Kafka message = one batch. Acks are manual: a message is acknowledged only after
    Elasticsearch took its events (``_finish``); template ids merged away while processing a
    batch are rewritten in the store after its write (``merge_templates``). Two batches
    overlap: while batch N is being written (Elasticsearch indexing on its own core, the write
    in a thread), batch N+1 goes through the pipeline; N is finished before N+1's write
    starts, so writes, window folds and acks stay in order."""
    loop = asyncio.get_running_loop()
    stream = batches.noack()
    keep_gaps_open(app.consumer, settings.kafka_topic)
    pending = None  # (write task, event, items, events) of the batch being written
    try:
        async for event in stream.events():
            committed = None
            if _needs_start(event) and committed_offset(app.consumer, event.message.tp) is None:
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
            gap = _continuity(event, committed)
            if gap is not None:
                if pending is not None:  # keep writes and acks in order
                    await _finish(stream, pending)
                    pending = None
                first, end = gap
                if first == end:  # delivered again: processed already, ack once more
                    log.info("partition %s: offset %d delivered again; not processed twice",
                             event.message.partition, first)
                    await stream.ack(event)
                    continue
                await _repair(loop, event, first, end)
            # the pipeline runs while the pending batch is written
            items, events, dead = _decode_and_process(event.value)
            await _send_dead_letters(dead)
            if events is None:  # undecodable: nothing to store
                if pending is not None:  # keep acks in order
                    await _finish(stream, pending)
                    pending = None
                await stream.ack(event)
                continue
            metrics.EVENTS_PROCESSED.labels("pipeline").inc(len(events))
            if pending is not None:
                await _finish(stream, pending)
            pending = (asyncio.ensure_future(_write_until_taken(
                loop, events, _merges.news(pipeline.miner), pipeline.take_catalog(),
                _incidents_of_batch())),
                event, items, events)
            if not stream.channel.empty():  # more is waiting: overlap with the next batch
                continue
            await _finish(stream, pending)  # idle: finish now rather than at the next message
            pending = None
    finally:
        if pending is not None and not pending[0].done():
            pending[0].cancel()  # stopping: not acked, so Kafka redelivers it (ids absorb it)


if settings.retention_days > 0:
    from streams.retention import Retention

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
    the API; the worker reads the marks every MARKS_SECONDS and scores the next lines with them
    (in the event loop, between two batches: a batch is scored with one set of marks)."""
    try:
        marks = await asyncio.get_running_loop().run_in_executor(None, store().template_marks)
    except Exception as exc:  # noqa: BLE001 - the marks in force stay; read again next time
        log.warning("could not read the template marks (%s)", redact(f"{type(exc).__name__}: {exc}")[:200])
        return
    if marks != pipeline.scorer.marks:
        log.info("template marks: %d in force", len(marks))
        pipeline.scorer.marks = marks
    await _adopt_aliases()


async def _adopt_aliases() -> None:
    """The catalog's aliases (ids another worker's template text made aliases, streams.catalog)
    handed to the miner, so the next lines carry the canonical ids (the store maps the ids it
    is given meanwhile). Between two batches, like the marks."""
    try:
        aliases = await asyncio.get_running_loop().run_in_executor(None, store().template_aliases)
    except Exception as exc:  # noqa: BLE001 - read again next time
        log.warning("could not read the template aliases (%s)",
                    redact(f"{type(exc).__name__}: {exc}")[:200])
        return
    renamed = pipeline.adopt_aliases(aliases)
    if renamed:
        log.info("template catalog: %d template(s) renamed to their canonical id", len(renamed))


_last_summary: tuple | None = None


@app.timer(interval=2.0)
async def table_summary() -> None:
    """Log the windows table's size when it changes (after a restart: what was recovered)."""
    global _last_summary
    summary = summarize_windows(window_counts.values())
    if summary != _last_summary:
        _last_summary = summary
        log.info("window_counts: %d keys, total=%d events", summary[0], summary[1])


def _alert_on(events: list[dict]) -> None:
    try:
        _alerting.on_stored(events)
    except Exception:  # noqa: BLE001 - alerting must never hold the pipeline
        log.exception("alert rules failed on a batch")


@app.task
async def _start_alerting() -> None:
    if _alerting is not None:  # restores the engine's state from Elasticsearch: off the loop
        await asyncio.get_running_loop().run_in_executor(None, _alerting.start)


@app.on_before_shutdown.connect
async def _stop_alerting(sender, **kwargs) -> None:
    """A clean stop saves the alert engine's state (smartlogs.alerting) for the next start."""
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
    changed = pipeline.incidents.tick(time.time())
    if changed or _unwritten_ticks:
        batch, _unwritten_ticks = _unwritten_ticks + changed, []
        try:
            await asyncio.get_running_loop().run_in_executor(None, store().write_incidents, batch)
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


_saved_lines = pipeline.lines  # what the checkpoint on disk covers (nothing new: no write)


@app.timer(interval=settings.checkpoint_seconds)
async def checkpoint() -> None:
    """The model, when lines were processed since the last checkpoint (an idle worker writes
    nothing; the caps of streams/templates.py and streams/scoring.py bound its size)."""
    global _saved_lines
    if pipeline.lines == _saved_lines:
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lines = pipeline.lines
    save_checkpoint(pipeline, _ckpt)
    _saved_lines = lines


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
