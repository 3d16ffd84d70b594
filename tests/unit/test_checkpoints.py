"""Issue 22 item 5: checkpoints written incrementally (only the keyed rows that changed, plus
the rest of the model), and a model restored from any chain of them is the model that was
saved: same rows in the same order, same results on what comes next."""

from __future__ import annotations

import hashlib
import pickle
import random
import string

from streams.runtime.checkpoints import checkpoint_generation, load_checkpoint, save_checkpoint
from streams.pipeline import Pipeline, PipelineConfig

CONFIG = PipelineConfig(hst_window=50)


def _batch(rng: random.Random, start: int, n: int) -> list[dict]:
    hosts = [f"h{i}" for i in range(12)]
    out = []
    for k in range(start, start + n):
        if rng.random() < 0.2:  # a unique line now and then: new templates, new pairs
            words = " ".join("".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(4))
            raw = f"Dec  7 10:{k // 60 % 60:02d}:{k % 60:02d} {rng.choice(hosts)} app[1]: {words}"
        else:  # enumerations: a pool of user names (a fifth value merges the siblings)
            user = rng.choice(["root", "alice", "bob", "carol", "dave", "erin", "frank"][
                :3 + (k // 400) % 5])
            level = rng.choice(["error", "failure", "session opened"])
            raw = (f"Dec  7 10:{k // 60 % 60:02d}:{k % 60:02d} {rng.choice(hosts)} sshd[{k}]: "
                   f"{level} for user {user} from 10.0.0.{k % 200}")
        out.append({"id": f"i{k}", "raw": raw, "received": 1.7e9 + k, "source": "t"})
    return out


def _rows(p: Pipeline) -> dict:
    out = {}
    for name, view in p.keyed_maps().items():
        compute = getattr(view.owner, "compute", None)  # rows made when a save begins
        rows = compute() if compute is not None else view.rows
        out[name] = sorted(((repr(k), view.encode(v)) for k, v in rows.items())) \
            if compute is not None else [(k, view.encode(v)) for k, v in rows.items()]
    return out


def _miner_shape(m) -> tuple:
    """The miner's structures, by template id: leaves, young and old (in order), enumerations
    and the index of their words, every kept template's fields."""
    def fam(f):
        return None if f is None else (f.pos, [g.cluster_id for g in f.members])

    groups = {**m._young, **m._old}
    return ({k: [g.cluster_id for g in v] for k, v in m._leaves.items()},
            list(m._young), list(m._old),
            {w: [fam(f) for f in fs] for w, fs in m._families.items()},
            {cid: (g.tokens, g.size, g.key, g.last, g.evicted, g.template, fam(g.family))
             for cid, g in groups.items()},
            m._count, m._held, m.clusters_counter, dict(m.aliases))


def _results(events: list[dict]) -> list[tuple]:
    return [(e["id"], e["template_id"], e["score"], e["anomaly"], e["reason"]) for e in events]


def test_a_chain_of_incremental_checkpoints_restores_the_model_exactly(tmp_path):
    rng = random.Random(3)
    path = tmp_path / "model.ckpt"
    live = Pipeline(CONFIG)
    live.scorer.pairs.max_keys = 40  # small bounds: keys are forgotten (maps reordered) too
    live.scorer.templates.max_keys = 30
    live.miner.cache_size = 150  # and the miner's memos are cleared when full
    live.miner.max_templates = 60  # and templates are evicted
    written = []
    for b in range(12):
        live.process(_batch(rng, b * 150, 150))
        written.append(save_checkpoint(live, path))
        restored = load_checkpoint(path, CONFIG)
        assert _rows(restored) == _rows(live), f"after save {b + 1}"
        assert _miner_shape(restored.miner) == _miner_shape(live.miner), f"after save {b + 1}"
    assert written[0]["full"] and not any(w["full"] for w in written[1:])
    assert checkpoint_generation(path) == 12
    # what comes next gives the same results on the restored model as on the live one
    following = _batch(rng, 5000, 300)
    assert _results(restored.process(following)) == _results(live.process(following))


def test_a_save_writes_the_rows_that_changed_not_the_whole_model(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "model.ckpt"
    p = Pipeline(CONFIG)
    for b in range(10):
        p.process(_batch(rng, b * 500, 500))
    first = save_checkpoint(p, path)
    total = sum(len(rows) for rows in _rows(p).values())
    assert first["rows"] == total and total > 300
    line = _batch(rng, 9000, 1)
    p.process(line)
    second = save_checkpoint(p, path)
    # its host, template, pair and errors rates, its message and its new tokens in the memos
    assert not second["full"] and second["rows"] <= 6 + len(line[0]["raw"].split()), second
    assert _rows(load_checkpoint(path, CONFIG)) == _rows(p)


def test_a_model_that_does_not_follow_the_file_rewrites_it_whole(tmp_path):
    rng = random.Random(7)
    path = tmp_path / "model.ckpt"
    old = Pipeline(CONFIG)
    old.process(_batch(rng, 0, 400))
    save_checkpoint(old, path)
    restored = load_checkpoint(path, CONFIG)
    old.process(_batch(rng, 400, 400))
    save_checkpoint(old, path)  # the file moved on: the restored copy is a generation behind
    restored.process(_batch(rng, 800, 50))
    assert save_checkpoint(restored, path)["full"]
    assert _rows(load_checkpoint(path, CONFIG)) == _rows(restored)
    fresh = Pipeline(CONFIG)  # a fresh model (a lost checkpoint): none of the old rows remain
    fresh.process(_batch(rng, 900, 20))
    assert save_checkpoint(fresh, path)["full"]
    assert _rows(load_checkpoint(path, CONFIG)) == _rows(fresh)


def test_a_checkpoint_of_the_older_format_is_read_and_replaced(tmp_path):
    rng = random.Random(9)
    p = Pipeline(CONFIG)
    p.process(_batch(rng, 0, 300))
    body = pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)
    path = tmp_path / "pipeline.ckpt"
    path.write_bytes(b"SMARTLOGS-CKPT-1\n" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    restored = load_checkpoint(path, CONFIG)
    assert _rows(restored) == _rows(p)
    restored.process(_batch(rng, 300, 10))
    assert save_checkpoint(restored, path)["full"]
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    assert _rows(load_checkpoint(path, CONFIG)) == _rows(restored)


def test_a_damaged_checkpoint_starts_a_fresh_model(tmp_path, caplog):
    rng = random.Random(11)
    p = Pipeline(CONFIG)
    p.process(_batch(rng, 0, 300))
    path = tmp_path / "model.ckpt"
    save_checkpoint(p, path)
    data = path.read_bytes()
    for damaged in (data[: len(data) // 2], data[:100] + b"\x00" * 4000 + data[4100:]):
        path.write_bytes(damaged)
        assert load_checkpoint(path, CONFIG) is None
    assert "unusable" in caplog.text


def test_a_checkpoint_with_sequential_ids_loads_with_its_ids(tmp_path):
    """tests/unit/data/checkpoint-v5.ckpt was written by the release before ids came from the
    templates' text (miner state version 5: T1, T2, ...; 40 lines each of a job pattern, a
    user= enumeration that merged T4-T6 into T2, and a cache pattern). Its templates keep their
    ids and aliases; new templates get text-derived ids; it saves and loads again."""
    import shutil
    from pathlib import Path

    from streams.templates import template_id_for

    path = tmp_path / "model.ckpt"
    shutil.copy(Path(__file__).parent / "data" / "checkpoint-v5.ckpt", path)
    config = PipelineConfig(hst_trees=2, hst_height=3, hst_window=20)
    p = load_checkpoint(path, config)
    assert p is not None and p.lines == 120
    m = p.miner
    assert sorted(m._young) + sorted(m._old) == sorted(["T1", "T2", "T3"])
    assert m.merges() == {"T4": "T2", "T5": "T2", "T6": "T2"}

    def run(pipeline, raws):
        return [e["template_id"] for e in pipeline.process(
            [{"id": f"n{i}", "raw": r, "received": 1.8e9 + i} for i, r in enumerate(raws)])]

    lines = ["job 99 finished on node1 in 3 ms", "session opened for user=sshd by uid 0",
             "cache miss for key 4242", "a pattern never seen before 7"]
    got = run(p, lines)
    assert got[:3] == ["T1", "T2", "T3"]
    assert got[3] == template_id_for(["a", "pattern", "never", "seen", "before", "<NUM>"])
    assert save_checkpoint(p, path)["full"]  # every row again, keyed by the new ids
    import sqlite3

    with sqlite3.connect(path) as conn:
        keys = [k for (k,) in conn.execute("SELECT k FROM rows WHERE map = 'miner.groups'")]
    assert sorted(keys) == ["'T1'", "'T2'", "'T3'", repr(got[3])]
    again = load_checkpoint(path, config)
    assert run(again, lines) == got
    assert again.miner.resolve("T5") == "T2"
