"""Pins the faust-streaming internals the worker relies on (streams/runtime/faust_internals.py).

Each test checks what the worker needs of one private name on the installed Faust, with a real
Consumer object (not started: no broker is contacted). An upgrade that changes one fails here.
"""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP

from streams.runtime import faust_internals as fi


@pytest.fixture
def consumer():
    app = faust.App("pin-internals", broker="kafka://127.0.0.1:1")
    return app.consumer


def test_the_installed_faust_is_the_pinned_one():
    assert faust.__version__ == fi.PINNED_FAUST


def test_acked_offsets_become_the_commit_offset(consumer):
    """What ack_offsets writes is what Faust's own commit computation reads."""
    tp = TP("raw", 0)
    consumer._committed_offset[tp] = 5
    fi.ack_offsets(consumer, tp, 3, 8)  # 3 and 4 are below the commit: ignored
    assert sorted(consumer._acked[tp]) == [5, 6, 7] and consumer._n_acked == 3
    fi.ack_offsets(consumer, tp, 6, 9)  # repeats are not counted twice
    assert sorted(consumer._acked[tp]) == [5, 6, 7, 8] and consumer._n_acked == 4
    assert consumer._new_offset(tp) == 9
    assert fi.committed_offset(consumer, tp) == 5
    assert fi.committed_offset(consumer, TP("raw", 1)) is None


def test_a_gap_before_an_ack_lets_the_commit_jump_unless_kept_open(consumer):
    """Faust marks a jump in offsets as done (the data-loss path); keep_gaps_open stops it for
    the raw topic only."""
    raw, other = TP("raw", 0), TP("other", 0)
    for tp in (raw, other):
        consumer._committed_offset[tp] = 10
    fi.keep_gaps_open(consumer, "raw")
    fi.keep_gaps_open(consumer, "raw")  # idempotent
    for tp in (raw, other):
        asyncio.run(consumer._add_gap(tp, 11, 15))  # offsets 11..14 skipped by the fetcher
        fi.ack_offsets(consumer, tp, 15, 16)
    assert consumer._new_offset(other) == 16  # Faust's gap-filling: moved past 11..14
    assert consumer._new_offset(raw) is None  # kept open: 11..14 not acked, no commit past them
    fi.ack_offsets(consumer, raw, 11, 15)  # the agent re-read and processed them
    assert consumer._new_offset(raw) == 16


def test_attributed_to_sets_the_streams_current_event():
    from faust.streams import current_event

    class Event:  # weak-referenceable stand-in: only identity matters here
        pass

    ev = Event()
    assert current_event() is None
    with fi.attributed_to(ev):
        assert current_event() is ev
    assert current_event() is None
