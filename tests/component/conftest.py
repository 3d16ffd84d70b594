"""Component tests run the embedded platform in the test's own process: one shard, in the API
process (SMARTLOGS_SHARDS=1), so a test can reach the runner and its pipelines. Shard
processes are tested in tests/component/test_shards.py and tests/e2e/ (real `smartlogs up`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_shard_in_process(monkeypatch):
    monkeypatch.setenv("SMARTLOGS_SHARDS", "1")
