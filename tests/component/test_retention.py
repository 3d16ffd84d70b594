"""SMARTLOGS_RETENTION_DAYS in the embedded store: old events go in small steps, recent stay."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from ingest_api.app import create_app
from smartlogs.settings import Settings
from streams.runtime.retention import Retention, cutoff
from tests.conftest import wait_stored


def test_retention_deletes_events_older_than_the_cutoff_in_bounded_steps(tmp_path):
    settings = Settings(data_dir=tmp_path, checkpoint_seconds=0.5, syslog_port=0, retention_days=30)
    now = time.time()
    old = [{"message": f"ancient disk failure {i}", "host": "old", "timestamp": now - 90 * 86400 + i}
           for i in range(25)]
    new = [{"message": f"recent disk failure {i}", "host": "new", "timestamp": now - 86400 + i}
           for i in range(5)]
    with TestClient(create_app(settings)) as client:
        retention = client.app.state.transport.retention
        assert isinstance(retention, Retention)
        assert client.post("/ingest", json=old + new).status_code == 202
        wait_stored(client, 30)
        store = client.app.state.transport.store
        steps = []
        retention.step = lambda cut: steps.append(store.delete_before(cut, limit=10)) or steps[-1]
        assert retention.run_once() == 25
        assert steps == [10, 10, 5, 0]  # bounded steps, each its own short transaction
        assert client.get("/api/events", params={"limit": 100}).json()["total"] == 5
        assert client.get("/api/events", params={"q": "ancient"}).json()["total"] == 0
        assert client.get("/api/events", params={"q": "recent disk"}).json()["total"] == 5
        for basis in ("event", "arrival"):  # the window counts agree with what is stored
            stats = client.get("/api/stats", params={"time": basis, "windows": 1000}).json()
            assert sum(w["total"] for w in stats["windows"]) == 5, basis
        assert retention.run_once() == 0  # nothing left to delete


def test_retention_is_off_by_default(app_client):
    assert app_client.app.state.transport.retention is None


def test_cutoff_is_aligned_to_whole_windows():
    assert cutoff(1_000_000.0, 1, 60) == 913_560.0
    assert cutoff(1_000_000.0, 1, 60) % 60 == 0
