"""Every private faust-streaming name SmartLogs relies on, in one place, for the pinned version.

The Kafka worker needs four things Faust keeps private (0.15.3 has no public API for them):

* ``faust.streams._current_event`` — the context variable that says which event a table update
  belongs to (its partition's changelog): :func:`attributed_to`;
* ``Consumer._add_gap`` — how the fetcher marks a jump in offsets as done: :func:`keep_gaps_open`
  turns it off for one topic, whose agent re-reads skipped offsets itself;
* ``Consumer._acked`` / ``_acked_index`` / ``_n_acked`` — the acknowledgement bookkeeping the
  commit offset is computed from: :func:`ack_offsets`;
* ``Consumer._committed_offset`` — the last committed offset per partition:
  :func:`committed_offset`.

``tests/unit/test_faust_internals.py`` pins their behaviour against the installed Faust, so an
upgrade that changes one fails there rather than losing data in production.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import faust
from faust.streams import _current_event
from faust.types.tuples import ack_lock

__all__ = ["PINNED_FAUST", "attributed_to", "keep_gaps_open", "ack_offsets", "committed_offset"]

PINNED_FAUST = "0.15.3"  # the version whose internals this module was written and tested against
if faust.__version__ != PINNED_FAUST:  # pragma: no cover - only on an unpinned install
    import warnings

    warnings.warn(f"faust-streaming {faust.__version__} is installed; SmartLogs' worker relies on "
                  f"internals of {PINNED_FAUST} (streams/runtime/faust_internals.py)", stacklevel=1)


@contextmanager
def attributed_to(event):
    """Table updates inside are attributed to ``event`` (its partition's changelog), as if it
    were the stream's current event."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def keep_gaps_open(consumer, topic: str) -> None:
    """Stop the fetcher from marking skipped offsets of ``topic`` as done (other topics keep
    Faust's gap-filling): the commit can then not move past an offset no agent processed."""
    if getattr(consumer, "_smartlogs_gap_guard", False):
        return
    add_gap = consumer._add_gap

    async def _add_gap(tp, offset_from: int, offset_to: int) -> None:
        if tp.topic != topic:
            await add_gap(tp, offset_from, offset_to)

    consumer._add_gap = _add_gap
    consumer._smartlogs_gap_guard = True


def ack_offsets(consumer, tp, first: int, end: int) -> None:
    """Ack offsets ``first..end-1`` of ``tp`` as ``Consumer.ack`` acks a message: the commit may
    move past them from now on. Offsets below the committed one, or acked already, are skipped."""
    with ack_lock:
        acked, index = consumer._acked[tp], consumer._acked_index[tp]
        for off in range(first, end):
            committed = consumer._committed_offset[tp]
            if (committed is None or off >= committed) and off not in index:
                index.add(off)
                acked.append(off)
                consumer._n_acked += 1


def committed_offset(consumer, tp) -> int | None:
    """The offset last committed for ``tp`` by this consumer (None before the first)."""
    return consumer._committed_offset.get(tp)
