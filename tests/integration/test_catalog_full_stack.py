"""The template catalog in the full stack (API → RabbitMQ → bridge → Kafka → worker →
Elasticsearch): the worker stores the catalog's history records, the API serves the catalog
from Elasticsearch, and feedback given to the API reaches the worker's scoring."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.stack import stack_logs, wait_total

pytestmark = pytest.mark.engines
T0 = 1_700_000_000


def _post(url: str, events) -> None:
    r = httpx.post(f"{url}/ingest", json=events, timeout=30)
    assert r.status_code == 202, r.text


def _last_of(url: str, tid: str) -> dict:
    return httpx.get(f"{url}/api/events", params={"template": tid, "limit": 1}).json()["events"][0]


@pytest.mark.timeout(240)
def test_catalog_and_feedback_through_the_full_stack(stack):
    url, procs = stack["url"], stack["procs"]
    warm = [{"message": f"heartbeat ok from worker {i % 7}", "host": "h", "level": "INFO",
             "timestamp": T0 + i} for i in range(800)]
    warm += [{"message": f"cache warmed in region {r}", "host": "h", "timestamp": T0 + 800 + i}
             for i, r in enumerate(["a1b2", "c3d4x"])]
    _post(url, warm)
    assert wait_total(url, 802, procs=procs) == 802, stack_logs(stack)
    rows = httpx.get(f"{url}/api/templates", params={"sort": "last_seen"}).json()["templates"]
    cache = rows[0]
    assert cache["template"] == "cache warmed in region <*>" and cache["count"] == 2
    detail = None
    deadline = time.monotonic() + 20  # the catalog record is written with its batch
    while time.monotonic() < deadline:
        detail = httpx.get(f"{url}/api/templates/{cache['id']}").json()
        if [h["kind"] for h in detail["history"]] == ["created", "generalised"]:
            break
        time.sleep(0.5)
    assert [h["kind"] for h in detail["history"]] == ["created", "generalised"], detail
    assert detail["examples"] == ["cache warmed in region a1b2", "cache warmed in region c3d4x"]
    assert httpx.get(f"{url}/api/templates/T99999").status_code == 404

    r = httpx.post(f"{url}/api/templates/{cache['id']}/feedback", json={"mark": "always_alert"})
    assert r.status_code == 200 and "within 5 s" in r.json()["applies"], r.text
    assert httpx.get(f"{url}/api/templates/{cache['id']}").json()["mark"] == "always_alert"
    time.sleep(6)  # the worker reads the marks every 5 s
    _post(url, [{"message": "cache warmed in region e5f6yy", "host": "h", "timestamp": T0 + 900}])
    assert wait_total(url, 803, procs=procs) == 803, stack_logs(stack)
    flagged = _last_of(url, cache["id"])
    assert flagged["message"] == "cache warmed in region e5f6yy"
    assert flagged["anomaly"] and "is marked always-alert" in flagged["reason"], (flagged, stack_logs(stack))
    assert "template marks: 1 in force" in (stack["tmp"] / "worker.log").read_text()
