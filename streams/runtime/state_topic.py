"""The Kafka side of per-partition state (``streams.runtime.state_records``): a compacted topic whose
partition *p* holds the learned state of raw partition *p*.

* :func:`ensure_state_topic` creates it (as many partitions as the raw topic,
  ``cleanup.policy=compact``, ``max.message.bytes`` above the largest record this project
  writes: a chunk of pickle is at most ``CHUNK``);
* :class:`StateWriter` writes one save as **one transaction**, with a transactional producer
  per partition whose id names the partition: the worker that takes a partition over
  initialises the same id, which aborts a transaction the previous owner left open (kill -9
  mid-save) and fences that owner out, so a partition's state has one writer at a time;
* the same transactions carry the partition's alert facts and their mark
  (``streams.runtime.alert_facts``), so they commit or abort with the state they go with;
* :func:`read_state` reads a partition to its end (``read_committed``: aborted saves are
  not seen), the latest value per key.

Why a topic of our own rather than a Faust table: a Faust table changelog writes one record
per key *change*, with no way to group the records of one save (a kill -9 halfway leaves a
model whose rows and pickle disagree), no transaction across keys, and a table's values live
in memory (or RocksDB) a second time beside the model. Here a save is the rows that changed
since the previous one plus a head, committed together, and restoring reads them once.
"""

from __future__ import annotations

import logging

from streams.runtime.state_records import CHUNK

__all__ = ["ensure_state_topic", "StateWriter", "read_state", "MAX_RECORD"]

log = logging.getLogger(__name__)

MAX_RECORD = 4 * CHUNK  # max.message.bytes of the topic and the producer's max_request_size


async def ensure_state_topic(bootstrap: str, topic: str, partitions: int, replication: int = 1,
                             **client) -> None:
    """Create the compacted state topic if it does not exist."""
    from streams.runtime.topics import ensure_topic

    if await ensure_topic(bootstrap, topic, partitions=partitions, replication=replication,
                          configs={"cleanup.policy": "compact",
                                   "max.message.bytes": str(MAX_RECORD),
                                   "min.cleanable.dirty.ratio": "0.2",
                                   "segment.ms": "600000"}, **client):
        log.info("created state topic %s (%d partitions, compacted)", topic, partitions)


class StateWriter:
    """Transactional writes of one partition's saves (see the module)."""

    def __init__(self, bootstrap: str, topic: str, partition: int, group: str, **client):
        self.topic, self.partition = topic, partition
        self._kwargs = dict(bootstrap_servers=bootstrap, transactional_id=f"{group}-state-{partition}",
                            enable_idempotence=True, max_request_size=MAX_RECORD,
                            client_id=f"smartlogs-state-{partition}", **client)
        self._producer = None

    async def start(self) -> None:
        """Initialise the transactional id: fences a previous owner, aborts its open save."""
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(**self._kwargs)
        await self._producer.start()

    async def write(self, records: list[tuple[bytes, bytes | None]], *, facts: list[bytes] = (),
                    facts_topic: str | None = None) -> None:
        """All of ``records`` or none of them (one transaction), with ``facts``: records for
        partition 0 of ``facts_topic`` (``streams.runtime.alert_facts``), sent last so that
        topic's open transaction, which holds its read_committed reader back, is short."""
        producer = self._producer
        async with producer.transaction():
            futures = [await producer.send(self.topic, key=k, value=v, partition=self.partition)
                       for k, v in records]
            futures += [await producer.send(facts_topic, value=v, partition=0) for v in facts]
            for f in futures:  # a failed send fails the others too: none left unretrieved
                f.add_done_callback(_retrieved)
            for f in futures:
                await f

    def fenced(self) -> bool:
        """Whether no transaction of this writer can commit any more: its producer met a fatal
        error (``ProducerFenced``: another producer initialised the same transactional id, i.e.
        another worker took the partition; or the broker timed its transaction out), or it
        is stopped."""
        producer = self._producer
        if producer is None:
            return True
        txn = getattr(producer, "_txn_manager", None)  # aiokafka's: no public accessor
        return txn is not None and txn.is_fatal_error()

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await producer.stop()
            except Exception as exc:  # noqa: BLE001 - closing: nothing left to lose
                log.warning("state producer of partition %d: %s", self.partition, exc)


def _retrieved(future) -> None:
    if not future.cancelled():
        future.exception()


async def read_state(bootstrap: str, topic: str, partition: int,
                     **client) -> dict[bytes, bytes | None]:
    """The latest committed value per key of one partition of the state topic."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                client_id="smartlogs-state-reader", max_partition_fetch_bytes=MAX_RECORD,
                                fetch_max_bytes=4 * MAX_RECORD, **client)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
        out: dict[bytes, bytes | None] = {}
        while await consumer.position(tp) < end:
            got = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
            for rec in got:
                if rec.offset >= end:
                    break
                if rec.value is None:
                    out.pop(rec.key, None)
                else:
                    out[rec.key] = rec.value
        return out
    finally:
        await consumer.stop()
