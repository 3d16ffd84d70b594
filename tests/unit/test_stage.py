"""The poison policy both runtimes share (streams.runtime.stage): isolate the bad item, keep the rest."""

from __future__ import annotations

import orjson
import pytest

from streams.pipeline import Pipeline, PipelineConfig
from streams.runtime.stage import process_isolating


def _items(texts):
    return [{"id": f"i{k}", "raw": t, "received": 1_700_000_000.0} for k, t in enumerate(texts)]


@pytest.fixture
def poisoned(monkeypatch):
    pipeline = Pipeline(PipelineConfig())
    real = pipeline.process

    def process(items):
        if any("POISON" in i["raw"] for i in items):
            raise RuntimeError("cannot digest this")
        return real(items)

    monkeypatch.setattr(pipeline, "process", process)
    return pipeline


def test_a_poison_item_is_isolated_and_its_batch_mates_processed(poisoned):
    result = process_isolating(poisoned, _items(["fine one", "POISON line", "fine two"]))
    assert [e["id"] for e in result.events] == ["i0", "i1", "i2"]
    good, bad = [e for e in result.events if e["id"] != "i1"], result.events[1]
    assert all(e["format"] != "unprocessable" for e in good)
    assert bad["format"] == "unprocessable" and bad["raw"] == "POISON line"
    assert "cannot digest this" in bad["fields"]["processing_error"]
    assert [d["item"]["id"] for d in result.dead_letters] == ["i1"]


def test_a_clean_batch_has_no_dead_letters(poisoned):
    assert process_isolating(poisoned, _items(["a", "b"])).dead_letters == []


def test_the_kafka_worker_dead_letters_only_the_poison_item(poisoned, monkeypatch, tmp_path):
    """It used to send the whole batch, good lines included, to the dead-letter topic."""
    monkeypatch.setenv("SMARTLOGS_DATA_DIR", str(tmp_path))
    from streams.runtime import worker
    from streams.runtime.state_records import Book

    part = worker.Part(0, poisoned, None, Book(), writer=None)
    items, batch = worker._decode_and_process(
        orjson.dumps(_items(["fine one", "POISON line", "fine two"])), part)
    assert len(items) == 3
    assert [e["format"] == "unprocessable" for e in batch.events] == [False, True, False]
    assert [d["item"]["raw"] for d in batch.dead_letters] == ["POISON line"]
    items, dead = worker._decode_and_process(b"not json", part)
    assert items is None and dead[0]["error"].startswith("undecodable batch")


def test_run_stage_hands_the_store_what_the_batch_changed(poisoned):
    """What both runtimes take from the pipeline after a batch (streams.runtime.stage.run_stage)."""
    from streams.runtime.stage import count_stored, run_stage
    from streams.templates import MergeNotices

    batch = run_stage(poisoned, MergeNotices(), _items(["disk sda1 full", "POISON", "disk sda2 full"]))
    assert [e["id"] for e in batch.events] == ["i0", "i1", "i2"]
    assert [d["item"]["id"] for d in batch.dead_letters] == ["i1"]
    assert batch.catalog and poisoned.take_catalog() == []  # taken: the next batch has none
    assert batch.merges is None and batch.incidents == poisoned.take_incidents() == []
    stored = [{**batch.events[0], "seq": 1}, batch.events[2]]  # the store had the second
    assert count_stored(stored) == stored[:1]


def test_a_restored_partition_expects_the_offset_its_state_stops_at(monkeypatch, tmp_path):
    """The worker's catch-up rule (streams/runtime/worker.py ``_continuity``): on a partition's first
    message, the next offset expected is the one its restored state reflects, not the group's
    commit: records before it are repeats (acked, not processed twice), records after it are
    read again from Kafka and processed first (the model catches up)."""
    monkeypatch.setenv("SMARTLOGS_DATA_DIR", str(tmp_path))
    from types import SimpleNamespace

    from streams.runtime import worker
    from streams.pipeline import Pipeline, PipelineConfig
    from streams.runtime.state_records import Book

    def event(offset, generation=1):
        return SimpleNamespace(message=SimpleNamespace(tp=("raw", 0), partition=0, offset=offset,
                                                       generation_id=generation))

    monkeypatch.setattr(worker, "_expected", {})
    part = worker.Part(0, Pipeline(PipelineConfig()), 40, Book(), writer=None)
    assert worker._continuity(event(37), part, committed=37) == (37, 37)  # in the state: repeat
    assert worker._continuity(event(38), part) == (38, 38)
    assert worker._continuity(event(40), part) is None  # where the state stops: processed
    monkeypatch.setattr(worker, "_expected", {})
    assert worker._continuity(event(45, generation=2), part, committed=45) == (40, 45)  # catch up
    assert worker._continuity(event(46, generation=2), part) is None
