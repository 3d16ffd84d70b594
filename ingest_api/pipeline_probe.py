"""How far the Kafka worker is behind: its consumer group's lag on the raw topic.

The API's readiness (``AmqpTransport.health``) uses it to tell a stuck pipeline (records
waiting for the worker, its committed offsets not moving) from an idle one. It reads what any
Kafka tool reads (``kafka-consumer-groups.sh --describe``): the group's committed offsets and
the topic's end offsets, with aiokafka's admin client and a group-less consumer, using the
same connection settings as every other Kafka client of SmartLogs. A batch the worker
processed is committed even when all its events were already stored, so a replay of stored
lines is progress too.
"""

from __future__ import annotations

import asyncio

from smartlogs.settings import Settings

__all__ = ["KafkaProgress"]

TIMEOUT = 10.0  # seconds for one reading


class KafkaProgress:
    """``await read()`` → ``(lag, committed)``: records on the raw topic not yet committed by
    the worker's group, and the sum of its committed offsets (grows as it makes progress).
    A partition without a committed offset counts from its first retained record."""

    def __init__(self, settings: Settings):
        from smartlogs.security import kafka_client_kwargs

        self.bootstrap = settings.kafka_bootstrap
        self.topic = settings.kafka_topic
        self.group = settings.worker_id
        self._kwargs = kafka_client_kwargs(settings)
        self._admin = None
        self._consumer = None

    async def _clients(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=int(TIMEOUT * 1000), **self._kwargs)
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                        enable_auto_commit=False,
                                        request_timeout_ms=int(TIMEOUT * 1000), **self._kwargs)
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    async def read(self) -> tuple[int, int]:
        try:
            return await asyncio.wait_for(self._read(), timeout=TIMEOUT * 2)
        except BaseException:
            await self.close()  # start afresh next time
            raise

    async def _read(self) -> tuple[int, int]:
        from aiokafka import TopicPartition

        admin, consumer = await self._clients()
        partitions = set()
        for topic in await admin.describe_topics([self.topic]):
            if topic.get("topic") == self.topic and not topic.get("error_code"):
                for part in topic.get("partitions", []):
                    partitions.add(part.get("partition", part.get("partition_index")))
        tps = [TopicPartition(self.topic, p) for p in sorted(p for p in partitions if p is not None)]
        if not tps:
            return 0, 0
        end = await consumer.end_offsets(tps)
        begin = await consumer.beginning_offsets(tps)
        done = await admin.list_consumer_group_offsets(self.group, partitions=tps)
        lag = committed = 0
        for tp in tps:
            meta = done.get(tp)
            at = meta.offset if meta is not None and meta.offset >= 0 else begin[tp]
            committed += at
            lag += max(0, end[tp] - at)
        return lag, committed

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (consumer, admin):
            if client is not None:
                try:
                    await asyncio.wait_for(client.stop() if client is consumer else client.close(),
                                           timeout=5)
                except Exception:  # noqa: BLE001 - closing a broken client may fail
                    pass
