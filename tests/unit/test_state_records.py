"""A partition's state as records of a compacted topic (streams.runtime.state_records): a chain of
incremental saves, applied as compaction would keep them, restores the model exactly (same
rows, same results on what comes next), with the raw-topic offset each save reflects; a save
whose transaction failed is followed by a whole one that leaves no stale row behind."""

from __future__ import annotations

import random

from streams.pipeline import Pipeline
from streams.runtime.state_records import CHUNK, HEAD, Book, decode_state, encode_save
from tests.unit.test_checkpoints import CONFIG, _batch, _miner_shape, _results, _rows


def _apply(topic: dict, records) -> None:
    """What a compacted topic keeps: the latest value per key, a tombstone deletes."""
    for key, value in records:
        if value is None:
            topic.pop(key, None)
        else:
            topic[key] = value


def _small_bounds(p: Pipeline) -> Pipeline:
    p.scorer.pairs.max_keys = 40  # keys are forgotten (maps reordered) too
    p.scorer.templates.max_keys = 30
    p.miner.cache_size = 150  # the miner's memos are cleared when full
    p.miner.max_templates = 60  # and templates are evicted
    return p


def test_a_chain_of_saves_restores_the_model_and_its_offset_exactly():
    rng = random.Random(3)
    topic: dict = {}
    live, book = _small_bounds(Pipeline(CONFIG)), Book()

    for b in range(12):
        live.process(_batch(rng, b * 150, 150))
        save = encode_save(live, book, offset=b + 1)
        _apply(topic, save.records)
        assert all(v is None or len(v) <= CHUNK for _, v in save.records)
        restored, offset, _ = decode_state(dict(topic), CONFIG)
        assert offset == b + 1
        assert _rows(restored) == _rows(live), f"after save {b + 1}"
        assert _miner_shape(restored.miner) == _miner_shape(live.miner), f"after save {b + 1}"
    assert save.records[-1][0] == HEAD
    following = _batch(rng, 5000, 300)
    assert _results(restored.process(following)) == _results(live.process(following))


def test_a_restored_model_continues_the_chain_with_the_book_it_read():
    rng = random.Random(4)
    topic: dict = {}
    first, book = Pipeline(CONFIG), Book()
    first.process(_batch(rng, 0, 500))
    _apply(topic, encode_save(first, book, offset=10).records)
    second, offset, book2 = decode_state(dict(topic), CONFIG)  # another worker takes over
    batch = _batch(rng, 500, 3)
    second.process(batch)
    first.process(batch)
    save = encode_save(second, book2, offset=11)
    # the rows of three lines, not the model (the miner's template rows are compared with
    # what was read, at most once each: streams.keyed.DiffRows)
    scorer = [k for k, _ in save.records if k.startswith(b"r|scorer.")]
    assert not save.full and 0 < len(scorer) <= 12, scorer
    _apply(topic, save.records)
    third, offset, _ = decode_state(dict(topic), CONFIG)
    assert offset == 11 and _rows(third) == _rows(first)


def test_after_a_failed_save_the_next_is_whole_and_leaves_no_stale_rows():
    rng = random.Random(5)
    topic: dict = {}
    live, book = _small_bounds(Pipeline(CONFIG)), Book()
    live.process(_batch(rng, 0, 400))
    _apply(topic, encode_save(live, book, offset=1).records)
    live.process(_batch(rng, 400, 400))
    lost = encode_save(live, book, offset=2)  # its transaction aborts: never in the topic...
    book.failed(lost)
    half = lost.records[: len(lost.records) // 2]  # ...or (worst case for the book) half of it
    _apply(topic, half)
    live.process(_batch(rng, 800, 400))
    again = encode_save(live, book, offset=3)
    assert again.full
    _apply(topic, again.records)
    restored, offset, _ = decode_state(dict(topic), CONFIG)
    assert offset == 3 and _rows(restored) == _rows(live)


def test_no_head_means_no_state():
    assert decode_state({}, CONFIG) is None
