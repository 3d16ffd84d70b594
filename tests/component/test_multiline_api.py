"""A real stack trace posted as text is one event: header from its first line, the trace kept."""

from __future__ import annotations

from tests.conftest import wait_stored
from tests.stacktraces import java_log, python_log


def test_a_java_trace_posted_as_text_is_one_event_with_its_header(app_client, tmp_path):
    text = java_log(tmp_path)
    r = app_client.post("/ingest", content=text.encode(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 202 and r.json()["accepted"] == 3
    wait_stored(app_client, 3)
    events = app_client.get("/api/events", params={"limit": 10}).json()["events"]
    crash = next(e for e in events if "crashed" in e["message"])
    first, _, trace = crash["message"].partition("\n")
    assert first.endswith("billing run crashed") and trace.startswith("java.lang.RuntimeException")
    assert "Caused by: java.lang.IllegalStateException" in crash["message"]
    assert "\n" not in crash["template"]  # the pattern is the first line's
    # the trace is searchable with its event
    found = app_client.get("/api/events", params={"q": "IllegalStateException"}).json()
    assert found["total"] == 1 and found["events"][0]["id"] == crash["id"]


def test_multiline_off_keeps_one_event_per_line(tmp_path):
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    text = python_log()
    with TestClient(create_app(Settings(data_dir=tmp_path, syslog_port=0, multiline=False))) as c:
        r = c.post("/ingest", content=text.encode(), headers={"Content-Type": "text/plain"})
        assert r.json()["accepted"] == len([x for x in text.splitlines() if x.strip()])
