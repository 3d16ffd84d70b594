"""``python -m tests.integration.refuse_facts``: ``smartlogs worker`` whose Kafka transactions
that carry alert facts are refused (``streams.runtime.state_topic.StateWriter.write`` raises,
as when Kafka refuses a transaction): its batches are stored and acked, their facts wait in
memory (streams/runtime/alert_facts.py, ``Outbox``), and no state save of a partition with
facts waiting commits either. A transaction with no facts (a save with none waiting, the
mark alone) goes through. Test code only: it wraps the one writer of those transactions."""

from __future__ import annotations

import sys

from streams.runtime.state_topic import StateWriter

_write = StateWriter.write


async def _refuse_facts(self, records, *, facts=(), facts_topic=None):
    if facts:
        raise RuntimeError("refuse_facts: a transaction with alert facts refused (test)")
    return await _write(self, records, facts=facts, facts_topic=facts_topic)


StateWriter.write = _refuse_facts

if __name__ == "__main__":
    from smartlogs.cli import main

    sys.argv = ["smartlogs", "worker"]
    main()
