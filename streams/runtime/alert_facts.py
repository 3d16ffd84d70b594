"""The facts of the global alert rules in Kafka mode (``streams.alerts.facts_of``,
``streams.runtime.alerting.Alerting.on_facts``): a one-partition topic ``<worker id>-alert-facts``
that every worker not holding every raw partition writes to (one record per stored batch:
``{"lines": n, "events": [...]}``), and the reader the holder of raw partition 0 runs, which
hands the records to its alerting in order, from the position the global record of the
alert engine's state was saved at.

One partition, so the facts are read in one order by one reader, and a position is one
offset. Kept a day (``retention.ms``): a reader resumes from a saved position seconds old; a
reader with no position (a first start) starts ``REWIND_SECONDS`` before it took partition 0
(the facts sent while the first workers joined).

**Exactly once per batch, whatever the crash point.** A batch's facts are written in a Kafka
transaction of the producer that saves its raw partition's state (``streams.runtime.state_topic``:
one transactional id per raw partition, which fences a dead or revoked owner out), together
with the partition's **facts mark** (``MARK_KEY`` in the state topic: the raw offset before
which every batch's global-rule input, facts or the worker's own judging, is committed).
A state save carries the facts not yet committed and the mark too, so a saved state never
covers a batch whose facts are not committed. The judge reads with
``isolation_level=read_committed``: facts of a transaction that aborted (its writer killed
mid-way, or fenced) are never judged. The new owner of a partition reads the mark back with
the state; it processes the batches after the state's offset again (``streams.runtime.worker``),
and the global rules see a batch again exactly when it lies at or past the mark: its stored
events (Elasticsearch absorbed the write; processing is deterministic) give the facts that
were lost. Per crash window of a batch *b* on worker W (old code → now):

1. W dies before Elasticsearch took *b*: the new owner stores *b* and sends its facts (same).
2. W dies after Elasticsearch took *b*, before its facts were sent: the old code built the
   facts from the events a write newly stored, and the new owner's write of *b* stores none,
   so *b* was **never judged** by the global rules. Now *b* is past the mark: judged once.
3. W dies mid-transaction (facts sent, not committed): aborted when the new owner initialises
   the same transactional id (or after the producer's transaction timeout); the judge never
   saw them (read_committed), *b* is past the mark: judged once. Until the abort, the judge's
   reading stops at the open transaction (the last stable offset): global alerts are late by
   the failover time (seconds), none is lost.
4. W dies after the commit, before *b*'s ack or the state save covering it: the new owner
   processes *b* again (the state is older), *b* is before the mark: not judged twice.
5. W dies after a state save covering *b*: *b* is not processed again (same).

A facts path that fails (Kafka refusing the transaction) never holds the pipeline: the
batch is acked, its facts wait in memory (``Outbox``) and go with the next transaction; if W
dies meanwhile, case 2 applies: the new owner processes the batch again from the partition's
saved state, which is older than any batch whose facts wait (a save carries them). That
holds from a partition's first batch on: a partition taken with no saved state is saved (a
fresh model at the offset it starts from, with the mark) before its first message is
processed (``streams.runtime.worker._first_save``); the old code saved it at the first
checkpoint, ``SMARTLOGS_CHECKPOINT_SECONDS`` later, and a worker killed before that left its
next owner to start at the group's committed offset, past a batch acked before its facts
were committed: lost to the global rules (tested with a worker whose facts transactions are
refused, killed -9 once the group's commit passed its batches).

**The partition-local rules** (host/incident: ``streams.alerts.placement``) are judged by the
worker holding the partition, their groups saved in Elasticsearch as that partition's part of
the alert engine's state (``streams.runtime.alerting``), with the raw offset from which the
partition's batches are not in it. A batch processed again by the new owner is judged by
them from its stored events when at or past that offset, and not at all before it (it is
counted in the part restored). The old code judged the events a write newly stored, so a
batch Elasticsearch took just before its worker was killed (cases 2-4) was never judged by
them. Alerts raised again are not recorded nor notified twice (the history records after
the part's save are restored with it).

**Forwarded alerts.** A worker that shares the partitions forwards the alerts of its
partition-local rules to the holder of partition 0, which notifies and records them: they go
into the partition's ``Outbox`` (``Outbox.forward``) and out in its next transaction with the
facts and the mark, read ``read_committed`` like the facts; and a part is not saved while an
alert its groups raised is not delivered (``Alerting.delivered``: recorded here, or its
transaction committed). A worker killed before the alert's transaction committed leaves a part
saved before the batch that raised it (or the tick that did): the new owner judges the batch
again (and ticks) and raises the alert again, with the same id; the judge drops a repeat of one
it recorded. The old code sent them by a plain send while the part could be saved, counting
the batch and the open alert: a kill -9 in between lost the alert (tested with a worker that
stops before the alert leaves, its parts saved meanwhile, then killed -9). Left: a part saved
older than the partition's state misses the counts of the batches in between (their alerts
were recorded); a part whose alerts wait for a transaction Kafka keeps refusing is not saved
meanwhile (its next owner starts from its last save, as the partition's state does).

Limits: a state saved before the mark existed has none, and every batch processed again
after it is judged (after a kill -9 during the upgrade, a few seconds' lines may count twice).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

__all__ = ["facts_topic_name", "ensure_facts_topic", "read_facts", "encode_facts", "Outbox",
           "MARK_KEY", "encode_mark", "decode_mark"]

log = logging.getLogger(__name__)

RETENTION_MS = 24 * 3600 * 1000
REWIND_SECONDS = 60.0
IDLE_SECONDS = 0.2  # how often a worker that does not judge the facts asks whether it does now
MARK_KEY = b"f"  # the facts mark's key in a raw partition's state (state_records ignores it)
OUTBOX_MAX = 10_000  # batches' facts kept while their transactions fail (then the oldest go)


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


def encode_mark(offset: int) -> bytes:
    """The facts mark's value.

    >>> decode_mark({MARK_KEY: encode_mark(42)})
    42
    """
    return b"%d" % offset


def decode_mark(records: dict[bytes, bytes | None]) -> int | None:
    """The facts mark of a partition's state records (None: none saved)."""
    value = records.get(MARK_KEY)
    return int(value) if value is not None else None


class Outbox:
    """One raw partition's global-rule input not committed yet, and its facts mark (see the
    module). ``resume``: the mark read back with the partition's state; a batch before it was
    seen by the global rules already (``seen``). Not thread-safe: the worker's event loop.

    >>> box = Outbox(resume=10)
    >>> box.seen(9), box.seen(10)
    (True, False)
    >>> box.add(11, b"{}"); box.add(12, None)
    >>> mark, records, n = box.take(at_least=5)
    >>> mark, records, n
    (12, [b'{}'], 2)
    >>> box.committed(n, mark), box.mark, box.pending
    ([], 12, [])
    >>> box.forward(b"a", [("p1", "id", "firing")]); box.add(13, None)
    >>> mark, records, n = box.take()
    >>> box.committed(n, mark), box.mark
    ([('p1', 'id', 'firing')], 13)
    """

    def __init__(self, resume: int | None = None) -> None:
        self.resume = resume
        self.mark = resume or 0
        self.pending: list[tuple[int, bytes | None]] = []  # (batch end offset, facts record)
        self._keys: dict[int, list] = {}  # id of a forwarded alerts record → its keys

    def seen(self, offset: int) -> bool:
        """Whether the global rules saw the batch at raw ``offset`` before this process took
        the partition (it is processed again: not twice)."""
        return self.resume is not None and offset < self.resume

    def add(self, end: int, record: bytes | None) -> None:
        """A batch ending before ``end`` was seen by the global rules: its facts ``record``
        (None: judged here, only the mark moves) go with the next transaction."""
        if len(self.pending) >= OUTBOX_MAX:
            lost = self.pending.pop(0)
            self._keys.pop(id(lost[1]), None)
            log.error("alert facts: %d batches wait for a transaction; the facts of the batch "
                      "before offset %d are dropped (the global rules miss it)",
                      len(self.pending) + 1, lost[0])
        self.pending.append((end, record))

    def forward(self, record: bytes, keys: list) -> None:
        """Alerts of the partition's partition-local rules for the holder of partition 0
        (``encode_facts(0, [], alerts)``), raised by this process: they go with the next
        transaction; ``committed`` returns their ``keys`` once it committed. The mark does
        not move for them."""
        self.add(0, record)
        self._keys[id(record)] = keys  # (the record is alive while pending: its id is its)

    def take(self, at_least: int = 0) -> tuple[int, list[bytes], int]:
        """What the next transaction writes: (the mark, the facts records, how many pending
        entries they are); ``at_least``: the offset a state save in it reflects."""
        n = len(self.pending)
        mark = max([self.mark, at_least] + [end for end, _ in self.pending])
        return mark, [r for _, r in self.pending if r is not None], n

    def committed(self, n: int, mark: int) -> list:
        """The transaction of ``take``'s answer committed: the keys of the forwarded alerts
        it carried (``forward``)."""
        keys = [k for _, r in self.pending[:n] if r is not None for k in self._keys.pop(id(r), ())]
        del self.pending[:n]
        self.mark = max(self.mark, mark)
        return keys


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
                                # a transaction's facts only once it committed (see the module)
                                isolation_level="read_committed",
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
