"""Issue 22, item 5: a checkpoint is written only when lines were processed since the last one
(an idle server rewrote its whole model every 5 s: 7.85 s of CPU per idle 20 s with a 70 MB
checkpoint)."""

from __future__ import annotations

import os
import time

from smartlogs.store import SqliteStore
from streams.pipeline import PipelineConfig
from streams.runtime.embedded import EmbeddedRunner

CONFIG = PipelineConfig(hst_window=50)


def _items(n: int, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}:{i}", "raw": f"user u{i} logged in from host{i % 7}",
             "received": 1.7e9 + i, "source": "test"} for i in range(n)]


def _written(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns  # a save writes a new file and renames it over the old


def test_no_checkpoint_is_written_without_new_lines(tmp_path):
    ckpt = tmp_path / "ckpt"
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG, checkpoint_path=ckpt)
    runner.checkpoint()
    assert not ckpt.exists()  # a fresh model with nothing processed: nothing to keep
    store.spool_append(_items(100, "a"))
    runner.drain()
    runner.checkpoint()
    first = _written(ckpt)
    runner.checkpoint()
    assert _written(ckpt) == first
    store.spool_append(_items(10, "b"))
    runner.drain()
    runner.checkpoint()
    second = _written(ckpt)
    assert second != first
    # restored from that checkpoint, with nothing new: nothing to write either
    again = EmbeddedRunner(store, CONFIG, checkpoint_path=ckpt)
    again.checkpoint()
    assert _written(ckpt) == second


def test_an_idle_running_runner_does_not_rewrite_its_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    store = SqliteStore(tmp_path / "db")
    runner = EmbeddedRunner(store, CONFIG, checkpoint_path=ckpt, checkpoint_seconds=0.05)
    store.spool_append(_items(100, "a"))
    runner.start()
    try:
        runner.drain()
        deadline = time.monotonic() + 10
        while not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the checkpoint that covers the batch
        first = _written(ckpt)
        time.sleep(1.0)  # 20 checkpoint periods, idle
        assert _written(ckpt) == first
    finally:
        runner.stop()
    assert _written(ckpt) == first  # stopping has nothing new to write either
