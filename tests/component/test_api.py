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
    # (junk first: after a line with a timestamp it would continue that event, streams.multiline)
    text = ("complete junk that matches no header\n"
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=1.2.3.4\n")
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
    for q in ["a:b", "jk2_init", "a_b c-d", '"quote"', "(paren)", "paren*", "NOT x", "-x"]:
        r = app_client.get("/api/events", params={"q": q})
        assert r.status_code == 200, (q, r.text)
    for q in ['"', "(", "-", "😀", '""', "*"]:  # no word at all: a clear 422, never an FTS error
        r = app_client.get("/api/events", params={"q": q})
        assert r.status_code == 422 and r.json()["error"] == "invalid_query", (q, r.text)


@pytest.mark.parametrize("q, position", [
    ('"session opened', 1), ("(a b", 1), ("a b)", 4), ("AND", 1), ("a OR", 3), ("NOT", 1),
    ("a OR OR b", 3), ("rhost=218*", 1),
])
def test_an_unparseable_query_is_a_422_that_says_where(app_client, q, position):
    r = app_client.get("/api/events", params={"q": q})
    body = r.json()
    assert r.status_code == 422 and body["error"] == "invalid_query", (q, r.text)
    assert body["field"] == "q" and body["position"] == position
    assert f"character {position}" in body["detail"]


def test_query_terms_are_deduplicated_and_bounded(app_client):
    from smartlogs.store.query import MAX_TERMS

    app_client.post("/ingest", json={"message": "alpha beta"})
    wait_stored(app_client, 1)
    # 300 repeats of one word are one term: answered, and as cheap as the word alone
    r = app_client.get("/api/events", params={"q": " ".join(["alpha"] * 300)})
    assert r.status_code == 200 and r.json()["total"] == 1
    many = " ".join(f"w{i}" for i in range(MAX_TERMS + 1))
    r = app_client.get("/api/events", params={"q": many})
    body = r.json()
    assert r.status_code == 422 and body["error"] == "query_too_complex", r.text
    assert body["max_terms"] == MAX_TERMS and f"at most {MAX_TERMS}" in body["detail"]
    r = app_client.get("/api/events", params={"q": "x" * 3000})
    assert r.status_code == 422 and "2000" in r.text


def test_a_query_past_the_time_budget_is_a_503_that_says_so(tmp_path):
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    settings = Settings(data_dir=tmp_path, syslog_port=0, query_timeout=1e-6)
    with TestClient(create_app(settings)) as client:
        store = client.app.state.store
        store.write([{**_stored_event(i), "message": f"line {i} of many"} for i in range(20_000)],
                    window_seconds=60)
        r = client.get("/api/events", params={"q": "-many"})
        assert r.status_code == 503 and r.json()["error"] == "query_timeout", r.text
        assert "budget" in r.json()["detail"] and "query_timeout" in r.json()["detail"]
        r = client.get("/api/stats", params={"windows": 1000})
        assert r.status_code == 503 and r.json()["error"] == "query_timeout", r.text


def _stored_event(i: int) -> dict:
    return {"id": f"x{i}", "ts": 1_700_000_000.0 + i, "timestamp": "x", "received": 1.0,
            "source": "test", "host": "h", "component": None, "pid": None, "level": "INFO",
            "message": "", "raw": None, "template_id": "T1", "template": "t", "params": [],
            "score": 0.0, "anomaly": False, "reason": None, "warming_up": False,
            "parse_ok": True, "format": "syslog", "truncated": False, "fields": {}}


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


def _page_all(client, params: dict, between=None) -> list[dict]:
    out, cursor, pages = [], None, 0
    while True:
        r = client.get("/api/events", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["events"])
        pages += 1
        if between is not None and pages == 1:
            between()
        cursor = body["next"]
        if cursor is None:
            return out
        assert len(body["events"]) == params["limit"]


@pytest.mark.parametrize("order", [None, "arrival", "tail"])
def test_next_pages_through_everything_once_in_the_order_asked_for(app_client, order):
    # many events share an event time (ties are broken by arrival) and arrive out of time order
    items = [{"message": f"paged {i}", "timestamp": f"2026-01-01T00:00:{(i * 7) % 13:02d}Z",
              "host": "pg"} for i in range(57)]
    app_client.post("/ingest", json=items)
    wait_stored(app_client, 57)
    params = {"host": "pg", "limit": 10, **({"order": order} if order else {})}
    whole = app_client.get("/api/events", params={**params, "limit": 1000}).json()
    assert whole["next"] is None and len(whole["events"]) == 57

    def more_arrive():  # during paging: newer, older and equal event times
        app_client.post("/ingest", json=[
            {"message": f"late {i}", "host": "pg",
             "timestamp": ("2027-01-01T00:00:00Z", "2025-01-01T00:00:00Z",
                           "2026-01-01T00:00:05Z")[i % 3]} for i in range(9)])
        wait_stored(app_client, 66)

    paged = _page_all(app_client, params, between=more_arrive)
    ids = [e["id"] for e in paged]
    assert len(ids) == len(set(ids))  # nothing twice
    first = [e["id"] for e in whole["events"]]
    assert [i for i in ids if i in first] == first  # every earlier event, in the same order
    if order != "arrival":  # newest-first pages cannot show what arrived above the first page
        late = [e for e in paged if e["message"].startswith("late")]
        want = {None: 6, "tail": 9}[order]  # time: those not newer than page 1; tail: all
        assert len(late) == want


def test_a_bad_cursor_is_a_422_that_says_what_to_do(app_client):
    app_client.post("/ingest", json=[{"message": f"c {i}"} for i in range(3)])
    wait_stored(app_client, 3)
    nxt = app_client.get("/api/events", params={"limit": 1}).json()["next"]
    assert nxt
    for params in ({"cursor": "garbage!"}, {"cursor": "WzEsMl0"},
                   {"cursor": nxt, "order": "arrival"}, {"cursor": nxt, "after": 1}):
        r = app_client.get("/api/events", params=params)
        assert r.status_code == 422 and r.json()["error"] == "invalid_cursor", (params, r.text)
        assert r.json()["field"] == "cursor"
    r = app_client.get("/api/events", params={"cursor": nxt, "order": "time", "limit": 5})
    assert r.status_code == 200 and len(r.json()["events"]) == 2


def test_time_filters_and_windows_in_arrival_time(app_client):
    # lines from 2005 arriving now: "the last 2 hours" of arrival finds them, of event time not
    app_client.post("/ingest", json=[{"message": f"old line {i}", "host": "old",
                                      "timestamp": f"2005-06-14T15:16:{i:02d}Z"} for i in range(5)])
    wait_stored(app_client, 5)
    ev = app_client.get("/api/events", params={"since": "2h", "host": "old"}).json()
    assert ev["total"] == 0
    ar = app_client.get("/api/events", params={"since": "2h", "host": "old", "time": "arrival"})
    assert ar.status_code == 200 and ar.json()["total"] == 5
    assert app_client.get("/api/events", params={"until": "1h", "time": "arrival"}).json()["total"] == 0
    st = app_client.get("/api/stats", params={"since": "2h", "time": "arrival"}).json()
    assert st["time"] == "arrival" and st["totals"]["events"] == 5
    assert st["windows"][-1]["start"] >= time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    st = app_client.get("/api/stats", params={"since": "2h"}).json()
    assert st["time"] == "event" and st["totals"]["events"] == 0
    r = app_client.get("/api/stats", params={"time": "wall"})
    assert r.status_code == 422 and "time" in r.json()["detail"]


def test_out_of_range_parameters_are_422_and_kept_among_the_recent_rejections(app_client):
    """A number beyond 64 bits was a 500; now it is a 422 naming the parameter, and like every
    refusal it is kept among the last rejections that `smartlogs status` lists (it was not)."""
    r = app_client.get("/api/events", params={"after": 2**63})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
    assert "query.after" in r.json()["detail"]
    kept = app_client.get("/api/rejections").json()["rejections"][0]
    assert kept["reason"] == "invalid_request" and kept["request"] == "GET /api/events", kept
    assert "query.after" in kept["detail"]


def test_totals_stop_at_ten_thousand_and_say_so_while_pages_stay_exact(app_client):
    """Past 10,000 matches ``total`` is 10,000 with ``total_relation`` gte (Elasticsearch's
    default track_total_hits); ``exact_total=true`` counts them all; paging with ``next``
    still reaches every event once. The schema declares both fields."""
    n = 10_005
    for k in range(0, n, 2500):
        lines = [{"message": f"bulk line {i}" + (" rare" if i % 1000 == 7 else ""),
                  "timestamp": 1_700_000_000 + i} for i in range(k, min(k + 2500, n))]
        assert app_client.post("/ingest", json=lines).status_code == 202
    wait_stored(app_client, n, timeout=120)
    res = app_client.get("/api/events", params={"limit": 1}).json()
    assert (res["total"], res["total_relation"]) == (10_000, "gte")
    res = app_client.get("/api/events", params={"q": "bulk", "limit": 1}).json()
    assert (res["total"], res["total_relation"]) == (10_000, "gte")
    res = app_client.get("/api/events", params={"q": "rare", "limit": 1}).json()
    assert (res["total"], res["total_relation"]) == (10, "eq")
    res = app_client.get("/api/events", params={"limit": 1, "exact_total": "true"}).json()
    assert (res["total"], res["total_relation"]) == (n, "eq")
    seen, params = [], {"limit": 1000}
    while True:
        page = app_client.get("/api/events", params=params).json()
        assert page["total_relation"] == "gte"
        seen.extend(e["id"] for e in page["events"])
        if not page["next"]:
            break
        params = {"limit": 1000, "cursor": page["next"]}
    assert len(seen) == len(set(seen)) == n
    schema = app_client.get("/openapi.json").json()
    body = schema["paths"]["/api/events"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert body["properties"]["total_relation"]["enum"] == ["eq", "gte"]
    assert "exact_total" in {p["name"] for p in schema["paths"]["/api/events"]["get"]["parameters"]}
