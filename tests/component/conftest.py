"""Component tests run the embedded platform in the test's own process, as one model: one
shard in the API process (SMARTLOGS_SHARDS=1) over one partition (SMARTLOGS_PARTITIONS=1), so
a test can reach the runner and its pipeline, and detection tests see every source in one
model. Partitions and shard processes (the product's default: 4 partitions, a shard per
core) are tested in tests/component/test_shards.py and tests/e2e/ (real `smartlogs up`)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_shard_one_partition(monkeypatch):
    monkeypatch.setenv("SMARTLOGS_SHARDS", "1")
    monkeypatch.setenv("SMARTLOGS_PARTITIONS", "1")
