"""Shared fixtures. Sample data is read where the CLI finds it (never copied here):
$SMARTLOGS_LOGHUB_DIR, else data/loghub (`smartlogs data fetch`), else ../shared/data/loghub."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def loghub_path() -> Path:
    from smartlogs.cli.datasets import default_loghub_dir

    return default_loghub_dir().resolve()


@pytest.fixture(scope="session")
def loghub() -> Path:
    path = loghub_path()
    if not (path / "Linux" / "Linux_2k.log").exists():
        pytest.fail(f"loghub samples not found at {path}: set SMARTLOGS_LOGHUB_DIR or run "
                    "`smartlogs data fetch --dest <dir>`")
    return path


@pytest.fixture
def app_client(tmp_path):
    """The embedded platform in-process (API + runner + SQLite store in tmp_path)."""
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    settings = Settings(data_dir=tmp_path, max_body_bytes=1_000_000, checkpoint_seconds=0.5,
                        syslog_port=0)
    with TestClient(create_app(settings)) as client:
        client.settings = settings
        yield client


def wait_stored(client, n: int, timeout: float = 10.0) -> dict:
    """Poll /api/events until at least n events are stored."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        res = client.get("/api/events", params={"limit": 1, "exact_total": "true"}).json()
        if res["total"] >= n or time.monotonic() > deadline:
            return res
        time.sleep(0.05)
