"""Kafka topics the worker makes for itself (its state topic, its alert facts topic).

One helper, :func:`ensure_topic`, so every such topic is created the same way: only when it
does not exist, a race with another worker creating it at the same moment being no error.
"""

from __future__ import annotations

__all__ = ["ensure_topic"]


async def ensure_topic(bootstrap: str, topic: str, *, partitions: int, configs: dict[str, str],
                       replication: int = 1, **client) -> bool:
    """Create ``topic`` with ``partitions`` and the topic ``configs`` unless it exists; True when
    this call created it (False: it was there, or another worker made it meanwhile)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return False
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                                replication_factor=replication,
                                                topic_configs=configs)])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        await admin.close()
