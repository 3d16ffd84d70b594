"""The facts of the global alert rules in Kafka mode (``streams.alerts.facts_of``,
``streams.runtime.alerting.Alerting.on_facts``): a one-partition topic ``<worker id>-alert-facts``
that every worker not holding every raw partition writes to (one record per stored batch:
``{"lines": n, "events": [...]}``), and the reader the holder of raw partition 0 runs, which
hands the records to its alerting in order, from the position the global record of the
alert engine's state was saved at.

One partition, so the facts are read in one order by one reader, and a position is one
offset. Each batch's facts are sent once Elasticsearch took the batch, from the events it
newly took (``streams.runtime.stage.count_stored``), so a batch processed again after a crash
sends no fact twice. Kept a day (``retention.ms``): a reader resumes from a saved position
seconds old; a reader with no position (a first start) starts ``REWIND_SECONDS`` before it
took partition 0 (the facts sent while the first workers joined).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

__all__ = ["facts_topic_name", "ensure_facts_topic", "read_facts", "encode_facts"]

log = logging.getLogger(__name__)

RETENTION_MS = 24 * 3600 * 1000
REWIND_SECONDS = 60.0
IDLE_SECONDS = 0.2  # how often a worker that does not judge the facts asks whether it does now


def facts_topic_name(worker_id: str) -> str:
    """The facts topic of a deployment (its workers share their id).

    >>> facts_topic_name("smartlogs-worker")
    'smartlogs-worker-alert-facts'
    """
    return f"{worker_id}-alert-facts"


def encode_facts(lines: int, events: list[dict], alerts: list[dict] | None = None) -> bytes:
    """A facts record: a stored batch's ``lines`` and ``events`` (``streams.alerts.facts_of``),
    or a worker's alerts of partition-local rules (``alerts``, for the cap over every
    worker's firings: ``streams.alerts.AlertEngine.admit``)."""
    return orjson.dumps({"lines": lines, "events": events, **({"alerts": alerts} if alerts
                                                               else {})}, default=str)


async def ensure_facts_topic(bootstrap: str, topic: str, replication: int = 1, **client) -> None:
    """Create the facts topic (one partition, deleted after a day) if it does not exist."""
    from streams.runtime.topics import ensure_topic

    if await ensure_topic(bootstrap, topic, partitions=1, replication=replication,
                          configs={"cleanup.policy": "delete", "retention.ms": str(RETENTION_MS)},
                          **client):
        log.info("created the alert facts topic %s", topic)


async def read_facts(alerting, bootstrap: str, topic: str, **client) -> None:
    """Run forever: while ``alerting`` judges the facts (``facts_position`` is not None),
    read the topic from that position and hand each fetch to ``on_facts`` (off the event
    loop: it may write alerts to Elasticsearch); otherwise wait. A position that moved (a
    restore after taking partition 0) is sought again."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    loop = asyncio.get_running_loop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                client_id="smartlogs-worker-alert-facts",
                                auto_offset_reset="earliest", fetch_max_wait_ms=100, **client)
    await consumer.start()
    try:
        consumer.assign([tp])
        reading = None  # the offset the consumer was sought to or read up to
        while True:
            want = await loop.run_in_executor(None, alerting.facts_position)
            if want is None:
                reading = None
                await asyncio.sleep(IDLE_SECONDS)
                continue
            if want < 0 and reading is None:  # no saved position: from a minute ago
                since = int((time.time() - REWIND_SECONDS) * 1000)
                found = (await consumer.offsets_for_times({tp: since})).get(tp)
                start = found.offset if found is not None else (await consumer.end_offsets([tp]))[tp]
                consumer.seek(tp, start)
                reading = start
                log.info("alert facts: no saved position; reading %s from offset %d", topic, start)
            elif want >= 0 and want != reading:
                consumer.seek(tp, want)
                reading = want
                log.info("alert facts: reading %s from offset %d", topic, want)
            got = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            if not got:
                continue
            records = []
            for rec in got:
                try:
                    records.append((rec.offset, orjson.loads(rec.value)))
                except ValueError:  # (passed on empty, so the position moves past it)
                    log.error("alert facts: offset %d is not JSON; skipped", rec.offset)
                    records.append((rec.offset, {}))
            await loop.run_in_executor(None, alerting.on_facts, records)
            reading = got[-1].offset + 1
    finally:
        await consumer.stop()
