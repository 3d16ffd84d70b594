"""SMARTLOGS_PARTITIONS (old name SMARTLOGS_KAFKA_PARTITIONS still read) and SMARTLOGS_SHARDS."""

from __future__ import annotations

import os

from smartlogs.settings import Settings


def test_partitions_new_name_old_name_and_default(monkeypatch):
    monkeypatch.delenv("SMARTLOGS_PARTITIONS", raising=False)
    monkeypatch.delenv("SMARTLOGS_KAFKA_PARTITIONS", raising=False)
    assert Settings().partitions == Settings().kafka_partitions == 4
    monkeypatch.setenv("SMARTLOGS_KAFKA_PARTITIONS", "6")
    assert Settings().partitions == Settings().kafka_partitions == 6
    monkeypatch.setenv("SMARTLOGS_PARTITIONS", "8")
    assert Settings().partitions == 8  # the new name wins
    assert Settings(partitions=3).partitions == Settings(kafka_partitions=3).partitions == 3


def test_shards_default_to_the_cores_at_most_one_per_partition(monkeypatch):
    monkeypatch.delenv("SMARTLOGS_SHARDS", raising=False)
    assert Settings(partitions=64).shard_count == min(os.cpu_count() or 1, 64)
    assert Settings(partitions=4, shards=16).shard_count == 4
    assert Settings(partitions=4, shards=1).shard_count == 1
    monkeypatch.setenv("SMARTLOGS_SHARDS", "3")
    assert Settings(partitions=4).shard_count == 3
