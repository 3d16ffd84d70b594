"""``python -m tests.integration.die_after_storing``: ``smartlogs worker``, which kills itself
with SIGKILL right after Elasticsearch took a batch holding a line whose message contains
``$SMARTLOGS_TEST_DIE_AFTER_STORING``: the instant between a batch's write and what the worker
does after it (its alert rules, its facts, its ack), which a signal sent from outside cannot
hit reliably. Test code only: it wraps the store's ``write_batch``, the interface every
runtime writes through (streams.runtime.stage.Sink), and nothing else."""

from __future__ import annotations

import os
import signal
import sys

from smartlogs.store.elasticsearch import ElasticsearchStore

WORDS = os.environ["SMARTLOGS_TEST_DIE_AFTER_STORING"]
_write_batch = ElasticsearchStore.write_batch


def _write_then_die(self, batch, **kwargs):
    new = _write_batch(self, batch, **kwargs)
    if any(WORDS in str(e.get("message", "")) for e in batch.events):
        sys.stderr.write(f"die_after_storing: {new} event(s) stored; SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return new


ElasticsearchStore.write_batch = _write_then_die

if __name__ == "__main__":
    from smartlogs.cli import main

    sys.argv = ["smartlogs", "worker"]
    main()
