"""Incidents through the HTTP API of the embedded platform (real runner and SQLite store)."""

from __future__ import annotations

import time

from tests.conftest import wait_stored

TS0 = 1_700_000_000.0


def normal(n: int = 1500, start: float = TS0) -> list[dict]:
    return [{"message": f"session opened for user u{i % 7} by (uid=0)", "host": f"web{i % 5}",
             "level": "INFO", "timestamp": start + 2.0 * i} for i in range(n)]


def burst(n: int = 40, start: float = TS0 + 3000) -> list[dict]:
    return [{"message": "authentication failure for root from 203.0.113.9", "host": "web1",
             "level": "ERROR", "timestamp": start + i} for i in range(n)]


def _post(client, events: list[dict], total: int) -> None:
    for i in range(0, len(events), 500):
        assert client.post("/ingest", json=events[i:i + 500]).status_code == 202
    res = wait_stored(client, total, timeout=60)
    assert res["total"] >= total


def test_a_burst_through_the_api_is_one_incident_with_its_lines_and_it_resolves(app_client):
    _post(app_client, normal(), 1500)
    _post(app_client, burst(), 1540)
    flagged = app_client.get("/api/events", params={"anomaly": "true", "limit": 100}).json()
    burst_lines = [e for e in flagged["events"] if "authentication failure" in e["message"]]
    assert len(burst_lines) >= 30
    assert all(e["incident_id"] for e in flagged["events"])  # every flagged line links to one
    res = app_client.get("/api/incidents").json()["incidents"]
    by_id = {i["id"]: i for i in res}
    assert {e["incident_id"] for e in burst_lines} <= set(by_id)
    main = max(res, key=lambda i: i["count"])
    # far fewer incidents than flagged lines, and the burst's incident counts its lines
    assert len(res) <= 4 and main["count"] >= 30 and main["status"] == "open"
    assert main["source"] == "web1" and main["host"] == "web1"
    assert sum(i["count"] for i in res) == flagged["total"]
    assert main["first_seen"].startswith("2023-11-14") and main["resolved_at"] is None
    lines = app_client.get("/api/events", params={"incident": main["id"], "limit": 1000}).json()
    assert lines["total"] == main["count"]
    assert {e["incident_id"] for e in lines["events"]} == {main["id"]}

    one = app_client.get(f"/api/incidents/{main['id']}").json()
    assert one["id"] == main["id"] and 1 <= len(one["examples"]) <= 5
    assert "authentication failure" in one["examples"][0]["message"]
    assert one["template_id"] == burst_lines[0]["template_id"]
    assert app_client.get("/api/incidents", params={"status": "resolved"}).json()["incidents"] == []
    mine = app_client.get("/api/incidents", params={"template": one["template_id"],
                                                    "source": "web1"}).json()["incidents"]
    assert main["id"] in [i["id"] for i in mine]
    assert all(i["template_id"] == one["template_id"] and i["source"] == "web1" for i in mine)
    assert app_client.get("/api/incidents", params={"source": "nohost"}).json()["incidents"] == []

    # later lines of the same host, past the quiet period (event time): resolved, count kept
    later = burst()[-1]["timestamp"] + app_client.settings.incident_quiet_seconds + 60
    _post(app_client, normal(50, start=later), 1590)
    deadline = time.monotonic() + 10
    while app_client.get(f"/api/incidents/{main['id']}").json()["status"] != "resolved":
        assert time.monotonic() < deadline, "not resolved"
        time.sleep(0.05)
    done = app_client.get(f"/api/incidents/{main['id']}").json()
    assert done["count"] == main["count"] and done["resolved_at"] is not None
    assert main["id"] in [i["id"] for i in app_client.get(
        "/api/incidents", params={"status": "resolved"}).json()["incidents"]]


def test_incident_routes_refuse_bad_input_with_json(app_client):
    r = app_client.get("/api/incidents/Inope0000")
    assert r.status_code == 404 and r.json()["error"] == "unknown_incident"
    for params in ({"status": "maybe"}, {"limit": 0}, {"limit": 10**9}, {"since": "yesterday"},
                   {"since": "nan"}, {"since": "inf"}):
        r = app_client.get("/api/incidents", params=params)
        assert r.status_code == 422, params
        assert "error" in r.json() or "detail" in r.json()
    assert app_client.get("/api/incidents/bad%20id").status_code == 422
    assert app_client.get("/api/incidents").json() == {"incidents": []}


def test_the_embedded_runner_resolves_a_quiet_incident_when_idle(tmp_path):
    """Nothing later comes from the host: the runner's idle tick (arrival time) resolves it."""
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    settings = Settings(data_dir=tmp_path, syslog_port=0, incident_quiet_seconds=1.0,
                        incident_gap_seconds=300.0)
    with TestClient(create_app(settings)) as client:
        now = time.time()
        _post(client, normal(start=now - 3100) + burst(start=now - 40), 1540)
        deadline = time.monotonic() + 15
        while True:
            incs = client.get("/api/incidents").json()["incidents"]
            if incs and all(i["status"] == "resolved" for i in incs):
                break
            assert time.monotonic() < deadline, incs
            time.sleep(0.1)
        assert max(i["count"] for i in incs) >= 30


def test_incidents_list_in_arrival_time_when_asked(app_client):
    """GET /api/incidents?time=arrival: what was flagged last first, whatever the dates the
    lines carry; the default stays event time; the answer says when the last line arrived."""
    from tests.component.test_incidents_store import FUTURE, LIVE

    app_client.app.state.store.write_incidents([FUTURE, LIVE])
    ids = lambda **p: [i["id"] for i in app_client.get("/api/incidents", params=p).json()["incidents"]]
    assert ids() == ids(time="event") == ["Ifuture", "Ilive"]
    assert ids(time="arrival") == ["Ilive", "Ifuture"]
    assert ids(time="arrival", since=str(1.8e9 + 60)) == ["Ilive"]
    live = app_client.get("/api/incidents", params={"time": "arrival"}).json()["incidents"][0]
    assert live["last_arrival"] == "2027-01-15T08:01:40.000Z", live
    r = app_client.get("/api/incidents", params={"time": "received"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
