"""The full stack's readiness rules (``AmqpTransport.probe`` / ``degraded``), with the broker
and Kafka readings given: what each reading says, and when "no progress" starts counting.
The same rules run against the real engines in tests/integration/test_readiness.py."""

import asyncio
import time

from ingest_api.transports import AmqpTransport
from smartlogs.settings import Settings


class FakeKafka:
    topic, group = "raw", "workers"

    def __init__(self):
        self.reading = (0, 0)

    async def read(self):
        return self.reading

    async def close(self):
        pass


def transport(queue: dict, monkeypatch):
    from ingest_api.publisher import AmqpPublisher

    t = AmqpTransport(Settings(stuck_after_seconds=60))
    t._kafka = FakeKafka()
    monkeypatch.setattr(AmqpPublisher, "connected", property(lambda self: True))

    async def queue_state():
        return dict(queue)

    t.publisher.queue_state = queue_state
    return t


def test_readings_become_reasons_only_after_no_progress_for_stuck_after(monkeypatch):
    queue = {"messages": 0, "consumers": 1}
    t = transport(queue, monkeypatch)
    asyncio.run(t.probe())
    now = time.time()
    assert t.degraded(now + 600) == []  # nothing waits: idle, not stuck

    # records wait for the worker; it commits more at first, then nothing
    t._kafka.reading = (5, 100)
    asyncio.run(t.probe())
    t._kafka.reading = (3, 102)
    asyncio.run(t.probe())
    assert t.degraded(time.time() + 30) == []
    [why] = t.degraded(time.time() + 61)
    assert why.startswith("pipeline stuck: 3 records wait on Kafka topic 'raw'") and "'workers'" in why

    # ready messages that do not go down
    queue.update(messages=7)
    asyncio.run(t.probe())
    reasons = t.degraded(time.time() + 61)
    assert any("the bridge does not keep up with the ingest queue: 7 messages" in r for r in reasons)
    queue.update(messages=4)  # it took some: progress
    asyncio.run(t.probe())
    assert not any("bridge" in r for r in t.degraded(time.time() + 30))

    # nothing consumes the queue: said at once
    queue.update(consumers=0)
    asyncio.run(t.probe())
    assert any(r.startswith("no consumer on the ingest queue") for r in t.degraded())
    ok, detail = t.health()
    assert ok and detail["degraded"] and detail["pipeline"]["consumers"] == 0
