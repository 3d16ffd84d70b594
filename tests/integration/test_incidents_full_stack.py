"""Incidents in the full stack: API → RabbitMQ → bridge → Kafka → worker (the same pipeline and
incident state as the embedded mode) → Elasticsearch (``<prefix>.incidents``), read back
through the same API routes."""

from __future__ import annotations

import time

import httpx

from tests.component.test_incidents_api import burst, normal
from tests.integration.stack import cli, stack_logs, wait_total


def _incidents(url: str, **params) -> list[dict]:
    return httpx.get(f"{url}/api/incidents", params={"limit": 1000, **params},
                     timeout=10).json()["incidents"]


def _settled(url: str, timeout: float = 30) -> list[dict]:
    """The incidents once every count equals the events stored with its id."""
    deadline = time.monotonic() + timeout
    while True:
        incs = _incidents(url)
        counts = [httpx.get(f"{url}/api/events", params={"incident": i["id"], "limit": 1},
                            timeout=10).json()["total"] for i in incs]
        if incs and counts == [i["count"] for i in incs]:
            return incs
        assert time.monotonic() < deadline, (incs, counts)
        time.sleep(0.5)


def test_the_worker_writes_incidents_to_elasticsearch(stack):
    url = stack["url"]
    events = normal() + burst()
    for i in range(0, len(events), 250):
        assert httpx.post(f"{url}/ingest", json=events[i:i + 250], timeout=30).status_code == 202
    assert wait_total(url, len(events), procs=stack["procs"]) == len(events), stack_logs(stack)
    incs = _settled(url)
    main = max(incs, key=lambda i: i["count"])
    assert main["count"] >= 30 and main["status"] == "open" and main["source"] == "web1"
    flagged = httpx.get(f"{url}/api/events", params={"anomaly": "true", "limit": 1}).json()["total"]
    assert sum(i["count"] for i in incs) == flagged
    one = httpx.get(f"{url}/api/incidents/{main['id']}").json()
    assert one["id"] == main["id"] and "authentication failure" in one["examples"][0]["message"]
    assert httpx.get(f"{url}/api/incidents/Inope").status_code == 404

    # later lines of web1, past the quiet period in event time: the incident is resolved
    later = burst()[-1]["timestamp"] + 400
    more = normal(50, start=later)
    assert httpx.post(f"{url}/ingest", json=more, timeout=30).status_code == 202
    assert wait_total(url, len(events) + 50, procs=stack["procs"]) == len(events) + 50
    deadline = time.monotonic() + 30
    while main["id"] not in [i["id"] for i in _incidents(url, status="resolved")]:
        assert time.monotonic() < deadline, stack_logs(stack)
        time.sleep(0.5)
    assert httpx.get(f"{url}/api/incidents/{main['id']}").json()["count"] == main["count"]
    r = cli(stack, "incidents", "--status", "resolved")
    assert r.returncode == 0 and main["id"] in r.stdout, r.stdout + r.stderr


def test_the_worker_resolves_a_quiet_incident_on_its_tick(tmp_path, rabbitmq, kafka, elasticsearch):
    """Live lines (event time = now): nothing later comes from the host, so only the worker's
    periodic tick (arrival time, when no records wait) can resolve the incident."""
    from tests.integration.stack import run_stack

    gen = run_stack(tmp_path, rabbitmq, kafka, elasticsearch,
                    extra_env={"SMARTLOGS_INCIDENT_QUIET_SECONDS": "5"})
    stack = next(gen)
    try:
        url = stack["url"]
        now = time.time()
        events = normal(start=now - 3100) + burst(start=now - 40)
        for i in range(0, len(events), 250):
            assert httpx.post(f"{url}/ingest", json=events[i:i + 250], timeout=30).status_code == 202
        assert wait_total(url, len(events), procs=stack["procs"]) == len(events), stack_logs(stack)
        main = max(_settled(url), key=lambda i: i["count"])
        assert main["count"] >= 30
        deadline = time.monotonic() + 40  # quiet 5 s + a tick every 5 s + a refresh
        while (httpx.get(f"{url}/api/incidents/{main['id']}").json()["status"] != "resolved"
               or _incidents(url, status="open")):
            assert time.monotonic() < deadline, (_incidents(url, status="open"), stack_logs(stack))
            time.sleep(0.5)
        assert httpx.get(f"{url}/api/incidents/{main['id']}").json()["count"] == main["count"]
    finally:
        next(gen, None)
