"""Logs of any format through the embedded platform's real API (issue 17): every loghub sample
replayed as a named stream, then the stored template ids read back and scored; the learned
layouts are visible at GET /api/sources."""

from __future__ import annotations

import csv

import orjson
import pytest

from smartlogs.cli.evaluation import find_samples, grouping_accuracy
from tests.conftest import loghub_path, wait_stored

SAMPLES = sorted(find_samples(loghub_path())) if loghub_path().is_dir() else []


def _replay(client, name: str, lines: list[str]) -> None:
    for k in range(0, len(lines), 1000):
        body = b"\n".join(orjson.dumps({"id": f"{name}:{i}", "raw": line})
                          for i, line in enumerate(lines[k:k + 1000], start=k))
        r = client.post("/ingest", content=body, headers={
            "Content-Type": "application/x-ndjson", "X-SmartLogs-Stream": f"{name}.log"})
        assert r.status_code == 202, r.text


def _stored(client) -> list[dict]:
    out, after = [], 0
    while True:
        page = client.get("/api/events", params={"after": after, "limit": 1000}).json()
        if not page["events"]:
            return out
        out += page["events"]
        after = max(e["seq"] for e in page["events"])


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_through_the_api(app_client, loghub, name):
    log, structured = find_samples(loghub)[name]
    lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    with open(structured, newline="", encoding="utf-8", errors="replace") as f:
        truth = [r["EventId"] for r in csv.DictReader(f)]
    _replay(app_client, name, lines)
    assert wait_stored(app_client, len(lines), timeout=120)["total"] == len(lines)
    events = {e["id"]: e for e in _stored(app_client)}
    assert len(events) == len(lines)  # nothing lost, nothing twice
    got = [events[f"{name}:{i}"] for i in range(len(lines))]
    parsed = sum(e["parse_ok"] for e in got) / len(got)
    ga = grouping_accuracy(truth, [e["template_id"] for e in got])
    assert parsed >= 0.99, parsed
    assert ga >= 0.95, ga
    sources = app_client.get("/api/sources").json()["sources"]
    mine = next(s for s in sources if s["source"] == f"{name}.log")
    assert mine["lines"] == len(lines) and mine["parsed_share"] >= 0.99


def test_sources_show_each_stream_layout_and_event_time(app_client, loghub):
    samples = find_samples(loghub)
    for name in ("Hadoop", "Android"):
        lines = samples[name][0].read_text().splitlines()[:100]
        _replay(app_client, name, lines)
    wait_stored(app_client, 200)
    sources = {s["source"]: s for s in app_client.get("/api/sources").json()["sources"]}
    assert sources["Hadoop.log"]["layout"] == "ts:iso level bracket comp message"
    assert sources["Android.log"]["layout"] == "ts:md int int level comp message"
    assert sources["Hadoop.log"]["parsed_share"] == 1.0
    first = app_client.get("/api/events", params={"after": 0, "limit": 1}).json()["events"][0]
    assert first["timestamp"] == "2015-10-18T18:01:47.978Z"  # the line's own time
    assert first["component"] == "org.apache.hadoop.mapreduce.v2.app.MRAppMaster"
    assert first["level"] == "INFO" and first["format"] == "inferred"


def test_a_stack_trace_posted_as_text_is_one_event(app_client):
    from tests.unit.test_multiline import JAVA

    r = app_client.post("/ingest", content=JAVA.encode(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 202 and r.json()["accepted"] == 3
    wait_stored(app_client, 3)
    events = app_client.get("/api/events", params={"after": 0}).json()["events"]
    assert len(events) == 3
    trace = events[1]
    assert trace["level"] == "ERROR" and trace["timestamp"] == "2024-03-05T06:07:09.456Z"
    assert trace["message"].endswith("\t... 58 common frames omitted")
    assert "Caused by: java.net.ConnectException: Connection refused" in trace["message"]
