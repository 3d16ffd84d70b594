"""The embedded platform through its HTTP API (in-process, real SQLite store and runner)."""

from __future__ import annotations

import gzip
import time

import pytest

from tests.conftest import wait_stored


def test_curl_example_is_accepted_stored_scored_and_searchable(app_client):
    r = app_client.post("/ingest", json={"message": "This is a test log message from curl"})
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 1 and len(body["ids"]) == 1
    res = wait_stored(app_client, 1, timeout=1.0)  # "within a second"
    assert res["total"] == 1
    found = app_client.get("/api/events", params={"q": "curl"}).json()
    assert found["total"] == 1
    e = found["events"][0]
    assert e["id"] == body["ids"][0]
    assert e["message"] == "This is a test log message from curl"
    assert e["template_id"].startswith("T") and isinstance(e["score"], float)
    assert e["parse_ok"] is True


def test_array_ndjson_text_and_gzip_bodies(app_client):
    r1 = app_client.post("/ingest", json=[
        {"message": "disk full", "host": "web1", "level": "error", "timestamp": "2024-05-01T10:00:00Z",
         "service": "nginx", "extra_key": 7},
        {"message": "ok", "host": "web2", "timestamp": 1714557600000},
    ])
    assert r1.status_code == 202 and r1.json()["accepted"] == 2
    nd = b'{"message": "a from ndjson", "host": "h1"}\n\n{"message": "b from ndjson", "host": "h1"}\n'
    r2 = app_client.post("/ingest", content=nd, headers={"Content-Type": "application/x-ndjson"})
    assert r2.status_code == 202 and r2.json()["accepted"] == 2
    text = ("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=1.2.3.4\n"
            "complete junk that matches no header\n")
    r3 = app_client.post("/ingest", content=gzip.compress(text.encode()),
                         headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
    assert r3.status_code == 202 and r3.json()["accepted"] == 2
    wait_stored(app_client, 6)

    web1 = app_client.get("/api/events", params={"host": "web1"}).json()["events"][0]
    assert web1["level"] == "ERROR" and web1["component"] == "nginx"
    assert web1["timestamp"] == "2024-05-01T10:00:00.000Z"
    assert web1["fields"] == {"extra_key": 7}
    web2 = app_client.get("/api/events", params={"host": "web2"}).json()["events"][0]
    assert web2["timestamp"] == "2024-05-01T10:00:00.000Z"  # epoch milliseconds

    combo = app_client.get("/api/events", params={"host": "combo"}).json()["events"][0]
    assert combo["component"] == "sshd(pam_unix)" and combo["pid"] == "19939"
    assert combo["parse_ok"] is True and combo["format"] == "syslog"
    junk = app_client.get("/api/events", params={"q": "junk"}).json()["events"][0]
    assert junk["parse_ok"] is False and junk["raw"] == "complete junk that matches no header"


def test_filters_and_order(app_client):
    events = [{"message": f"event number {i}", "host": "a" if i % 2 else "b",
               "level": "ERROR" if i == 3 else "INFO", "timestamp": 1_700_000_000 + i * 30}
              for i in range(10)]
    assert app_client.post("/ingest", json=events).status_code == 202
    wait_stored(app_client, 10)
    res = app_client.get("/api/events").json()
    assert res["total"] == 10
    ts = [e["timestamp"] for e in res["events"]]
    assert ts == sorted(ts, reverse=True)  # newest first
    assert app_client.get("/api/events", params={"host": "a"}).json()["total"] == 5
    assert app_client.get("/api/events", params={"level": "error"}).json()["total"] == 1
    r = app_client.get("/api/events", params={"since": "1700000060", "until": "2023-11-14T22:15:30Z"})
    assert [e["message"] for e in r.json()["events"]] == ["event number 4", "event number 3", "event number 2"]
    assert app_client.get("/api/events", params={"limit": 3}).json()["events"].__len__() == 3
    tid = res["events"][0]["template_id"]
    assert app_client.get("/api/events", params={"template": tid}).json()["total"] == 10
    assert app_client.get("/api/events", params={"anomaly": "false"}).json()["total"] == 10
    # tailing cursor: only what was stored after it, oldest first
    cursor = res["last_seq"]
    app_client.post("/ingest", json={"message": "late one"})
    wait_stored(app_client, 11)
    tail = app_client.get("/api/events", params={"after": cursor}).json()
    assert [e["message"] for e in tail["events"]] == ["late one"]


def test_stats_counts_windows(app_client):
    events = [{"message": f"x {i}", "host": "h", "level": "INFO", "timestamp": 1_700_000_000 + i}
              for i in range(90)]  # 1_700_000_000 is 20 s into a minute: spans two windows
    app_client.post("/ingest", json=events)
    wait_stored(app_client, 90)
    st = app_client.get("/api/stats").json()
    assert st["window_seconds"] == 60
    assert st["totals"]["events"] == 90
    assert [w["total"] for w in st["windows"]] == [40, 50]
    assert st["windows"][0]["levels"] == {"INFO": 40}
    assert st["top_hosts"] == [{"key": "h", "count": 90}]
    assert st["top_templates"][0]["count"] == 90 and st["top_templates"][0]["template"]


def test_healthz(app_client):
    r = app_client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["pipeline"]["running"] is True


def test_healthz_says_why_processed_and_lines_differ(app_client):
    app_client.post("/ingest", json={"id": "twice", "message": "same id twice"})
    app_client.post("/ingest", json={"id": "twice", "message": "same id twice"})
    wait_stored(app_client, 1)
    p = app_client.get("/healthz").json()["pipeline"]
    assert "processed" in p and "lines" in p
    assert "processed: new events" in p["counts"] and "lines: every line" in p["counts"]


def test_same_id_is_stored_once(app_client):
    ev = {"id": "client-key-1", "message": "retried message"}
    assert app_client.post("/ingest", json=ev).status_code == 202
    assert app_client.post("/ingest", json=ev).status_code == 202
    app_client.post("/ingest", json={"message": "marker"})
    wait_stored(app_client, 2)
    import time
    time.sleep(0.3)
    assert app_client.get("/api/events", params={"q": "retried"}).json()["total"] == 1
    st = app_client.get("/api/stats").json()
    assert st["totals"]["events"] == 2  # windows count stored events, not requests


BAD = [
    # (description, content, headers, status, error)
    ("empty body", b"", {"Content-Type": "application/json"}, 400, "empty_body"),
    ("whitespace body", b"  \n", {"Content-Type": "text/plain"}, 400, "empty_body"),
    ("invalid json", b'{"message": ', {"Content-Type": "application/json"}, 400, "invalid_json"),
    ("empty array", b"[]", {"Content-Type": "application/json"}, 400, "empty_body"),
    ("json string", b'"hello"', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("array of numbers", b"[1, 2]", {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("no message", b'{"host": "a"}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("message wrong type", b'{"message": {"a": 1}}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("host wrong type", b'{"message": "m", "host": ["a"]}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("bad timestamp", b'{"message": "m", "timestamp": "yesterday"}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("bool timestamp", b'{"message": "m", "timestamp": true}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("fields not object", b'{"message": "m", "fields": 3}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("id too long", b'{"message": "m", "id": "' + b"x" * 300 + b'"}', {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("bad ndjson line", b'{"message": "a"}\nnot json\n', {"Content-Type": "application/x-ndjson"}, 400, "invalid_json"),
    ("non utf-8", b"caf\xe9 au lait\n", {"Content-Type": "text/plain"}, 400, "invalid_utf8"),
    ("unknown content type", b"<log/>", {"Content-Type": "application/xml"}, 415, "unsupported_media_type"),
    ("no content type", b"hello", {}, 415, "unsupported_media_type"),
    ("bad gzip", b"not gzip at all", {"Content-Type": "text/plain", "Content-Encoding": "gzip"}, 400, "invalid_gzip"),
    ("unknown encoding", b"x", {"Content-Type": "text/plain", "Content-Encoding": "br"}, 415, "unsupported_encoding"),
    ("too large", b"x" * 1_000_001, {"Content-Type": "text/plain"}, 413, "body_too_large"),
    ("gzip bomb", gzip.compress(b"a\n" * 600_000), {"Content-Type": "text/plain", "Content-Encoding": "gzip"}, 413, "body_too_large"),
    ("fields nested 260 deep", b'{"message": "m", "fields": ' + b'{"a": ' * 260 + b'1' + b'}' * 261,
     {"Content-Type": "application/json"}, 422, "invalid_event"),
    ("extra key nested 260 deep", b'{"message": "m", "extra": ' + b'[' * 260 + b']' * 260 + b'}',
     {"Content-Type": "application/json"}, 422, "invalid_event"),
]


@pytest.mark.parametrize("desc,content,headers,status,error", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_json_4xx(app_client, desc, content, headers, status, error):
    r = app_client.post("/ingest", content=content, headers=headers)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["detail"]
    assert app_client.get("/api/events").json()["total"] == 0  # nothing half-stored


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "abc"}, {"since": "next tuesday"},
                                    {"anomaly": "maybe"}, {"after": "-1"}, {"q": "!!!"}, {"q": "🚀"}])
def test_bad_query_parameters_get_422_json(app_client, params):
    r = app_client.get("/api/events", params=params)
    assert r.status_code == 422
    assert r.json()["detail"]


def test_a_search_without_words_says_why_instead_of_matching_everything(app_client):
    app_client.post("/ingest", json={"message": "deploy done !!! 🚀"})
    wait_stored(app_client, 1)
    r = app_client.get("/api/events", params={"q": "🚀"})
    assert r.status_code == 422 and "no words to search for" in r.json()["detail"]
    assert app_client.get("/api/events", params={"q": "deploy !!!"}).json()["total"] == 1
    assert app_client.get("/api/events", params={"q": ""}).json()["total"] == 1  # empty: no filter


def test_unknown_route_and_method_are_json(app_client):
    r = app_client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]
    r = app_client.get("/ingest")
    assert r.status_code == 405 and r.json()["error"]


def test_fts_query_syntax_never_errors(app_client):
    app_client.post("/ingest", json={"message": 'quote " and (paren) AND OR NOT *'})
    wait_stored(app_client, 1)
    for q in ["AND", "NOT *", "a:b", "jk2_init", "a_b c-d", '"quote"', "(paren)"]:
        r = app_client.get("/api/events", params={"q": q})
        assert r.status_code == 200, (q, r.text)
    for q in ['"', "(", "-", "😀"]:  # no word at all: a clear 422, never an FTS syntax error
        r = app_client.get("/api/events", params={"q": q})
        assert r.status_code == 422 and r.json()["error"] == "invalid_query", (q, r.text)


def test_metrics_move_when_events_flow(app_client):
    def value(name: str) -> float:
        text = app_client.get("/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    before_acc = value('smartlogs_events_accepted_total{source="http"}')
    before_rej = value('smartlogs_requests_rejected_total{reason="invalid_json"}')
    before_sink = value('smartlogs_events_processed_total{stage="sink"}')
    app_client.post("/ingest", json=[{"message": "m1"}, {"message": "m2"}])
    app_client.post("/ingest", content=b"{", headers={"Content-Type": "application/json"})
    wait_stored(app_client, 2)
    assert value('smartlogs_events_accepted_total{source="http"}') == before_acc + 2
    assert value('smartlogs_requests_rejected_total{reason="invalid_json"}') == before_rej + 1
    import time
    deadline = time.monotonic() + 5  # the counter moves just after the commit that made them visible
    while value('smartlogs_events_processed_total{stage="sink"}') < before_sink + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "smartlogs_queue_publish_seconds_bucket" in app_client.get("/metrics").text


def test_order_arrival_lists_what_was_stored_last_first(app_client):
    """The console's tail starts from what arrived last, not from the newest event time (a log
    dated next month would otherwise hide every event sent now)."""
    app_client.post("/ingest", json={"message": "from the future", "timestamp": time.time() + 20 * 86400})
    wait_stored(app_client, 1)
    app_client.post("/ingest", json={"message": "sent now"})
    wait_stored(app_client, 2)
    by_time = app_client.get("/api/events").json()["events"]
    by_arrival = app_client.get("/api/events", params={"order": "arrival"}).json()["events"]
    assert [e["message"] for e in by_time] == ["from the future", "sent now"]
    assert [e["message"] for e in by_arrival] == ["sent now", "from the future"]
    assert app_client.get("/api/events", params={"order": "random"}).status_code == 422


def test_a_bad_time_names_its_parameter(app_client):
    for path in ("/api/events", "/api/stats"):
        r = app_client.get(path, params={"since": "1h", "until": "next tuesday"})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_time" and body["field"] == "until"
        assert body["detail"].startswith("until='next tuesday' is not a time")
