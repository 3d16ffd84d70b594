"""``python -m tests.integration.die_before_forwarding``: ``smartlogs worker`` which, when it
forwards an alert of a partition-local rule to the holder of partition 0 (the record built by
``streams.runtime.alert_facts.encode_facts`` with ``alerts``) whose text contains
``$SMARTLOGS_TEST_DIE_BEFORE_FORWARDING``, stops its event loop for ``HOLD_SECONDS`` (the alert
engine's clock thread goes on and saves its parts meanwhile, every
``SMARTLOGS_CHECKPOINT_SECONDS``) and then kills itself with SIGKILL: before the forwarded
alert left, after a save of its partition's part could have counted the batch that raised it,
an instant a signal sent from outside cannot hit reliably. Test code only: it wraps the one
encoder of those records, and nothing else."""

from __future__ import annotations

import os
import signal
import sys
import time

from streams.runtime import alert_facts

WORDS = os.environ["SMARTLOGS_TEST_DIE_BEFORE_FORWARDING"]
HOLD_SECONDS = 5.0
_encode = alert_facts.encode_facts


def _encode_then_die(lines, events, alerts=None):
    if alerts and WORDS in str(alerts):
        sys.stderr.write(f"die_before_forwarding: {len(alerts)} alert(s) to forward; "
                         f"SIGKILL in {HOLD_SECONDS:.0f} s\n")
        sys.stderr.flush()
        time.sleep(HOLD_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)
    return _encode(lines, events, alerts)


alert_facts.encode_facts = _encode_then_die

if __name__ == "__main__":
    from smartlogs.cli import main

    sys.argv = ["smartlogs", "worker"]
    main()
