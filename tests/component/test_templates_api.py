"""The template catalog through the embedded API: GET /api/templates (sort, since, limit),
GET /api/templates/{id} (history, examples), POST /api/templates/{id}/feedback and its effect
on scoring from the next line (in-process: real SQLite store and runner)."""

from __future__ import annotations

import pytest

from tests.conftest import wait_stored

T0 = 1_700_000_000


def _client(tmp_path, **extra):
    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    settings = Settings(data_dir=tmp_path, max_body_bytes=2_000_000, checkpoint_seconds=0.5,
                        syslog_port=0, **extra)
    return TestClient(create_app(settings))


def _send(client, events, total):
    assert client.post("/ingest", json=events).status_code == 202
    res = wait_stored(client, total)
    assert res["total"] >= total
    return client.get("/api/events", params={"limit": 1000, "order": "arrival"}).json()["events"]


def _catalog(client):
    # three templates: "a" (3 lines, oldest), "b" (1 line, newest first seen), "c" (2 lines, seen last)
    events = [
        {"message": "cache warmed in region a1b2", "host": "h", "timestamp": T0},
        {"message": "cache warmed in region c3d4x", "host": "h", "timestamp": T0 + 10},
        {"message": "cache warmed in region e5f6yy", "host": "h", "timestamp": T0 + 20},
        {"message": "replica lagging behind primary", "host": "h", "timestamp": T0 + 5},
        {"message": "user session expired quietly", "host": "h", "timestamp": T0 + 300},
        {"message": "user session expired quietly", "host": "h", "timestamp": T0 + 30},
    ]
    stored = _send(client, events, 6)
    ids = {}
    for e in stored:
        ids.setdefault(e["message"].split()[0], e["template_id"])
    return ids["cache"], ids["replica"], ids["user"]


def test_templates_sort_since_and_limit(app_client):
    a, b, c = _catalog(app_client)
    get = lambda **p: app_client.get("/api/templates", params=p).json()["templates"]  # noqa: E731
    by_count = get()
    assert [t["id"] for t in by_count] == [a, c, b]
    assert [t["count"] for t in by_count] == [3, 2, 1]
    row = by_count[0]
    assert row["template"] == "cache warmed in region <*>"
    assert row["first_seen"] == "2023-11-14T22:13:20.000Z" and row["first_ts"] == T0
    assert row["last_seen"] == "2023-11-14T22:13:40.000Z" and row["mark"] is None
    assert [t["id"] for t in get(sort="first_seen")] == [c, b, a]  # newest first
    assert [t["id"] for t in get(sort="last_seen")] == [c, a, b]
    assert [t["id"] for t in get(since=str(T0 + 1))] == [c, b]  # new since
    assert [t["id"] for t in get(since=str(T0 + 6), sort="first_seen")] == [c]
    assert [t["id"] for t in get(limit=1, sort="last_seen")] == [c]


@pytest.mark.parametrize("params,field", [
    ({"sort": "size"}, "sort"), ({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"),
    ({"since": "yesterday"}, "since"),
])
def test_bad_list_parameters_are_a_422_that_names_them(app_client, params, field):
    r = app_client.get("/api/templates", params=params)
    assert r.status_code == 422
    assert field in r.json()["detail"]


def test_one_template_with_history_and_examples(app_client):
    a, b, _ = _catalog(app_client)
    t = app_client.get(f"/api/templates/{a}").json()
    assert t["id"] == a and t["count"] == 3 and t["template"] == "cache warmed in region <*>"
    kinds = [h["kind"] for h in t["history"]]
    assert kinds == ["created", "generalised"]
    created, gen = t["history"]
    assert created["example"] == "cache warmed in region a1b2" and created["at"] == T0
    assert created["template"] == "cache warmed in region a1b2"
    assert gen["previous"] == "cache warmed in region a1b2"
    assert gen["template"] == "cache warmed in region <*>"
    assert gen["example"] == "cache warmed in region c3d4x" and gen["time"] == "2023-11-14T22:13:30.000Z"
    assert t["examples"] == ["cache warmed in region a1b2", "cache warmed in region c3d4x",
                             "cache warmed in region e5f6yy"]
    single = app_client.get(f"/api/templates/{b}").json()
    assert [h["kind"] for h in single["history"]] == ["created"]
    assert single["examples"] == ["replica lagging behind primary"]


def test_unknown_and_malformed_template_ids(app_client):
    r = app_client.get("/api/templates/T99999")
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_template" and "T99999" in r.json()["detail"]
    r = app_client.get("/api/templates/abc")
    assert r.status_code == 422 and "template_id" in r.json()["detail"]
    r = app_client.post("/api/templates/T99999/feedback", json={"mark": "expected"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_template"


@pytest.mark.parametrize("body,where", [
    ({"mark": "ignore"}, "mark"), ({}, "mark"), ({"mark": "expected", "colour": "red"}, "colour"),
    ({"mark": "expected", "note": "x" * 501}, "note"), ([1, 2], "body"),
])
def test_bad_feedback_is_a_422_that_says_what(app_client, body, where):
    a, _, _ = _catalog(app_client)
    r = app_client.post(f"/api/templates/{a}/feedback", json=body)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_request" and where in r.json()["detail"]


def test_feedback_is_stored_in_the_history_and_survives_a_restart(tmp_path):
    with _client(tmp_path) as client:
        a, _, _ = _catalog(client)
        r = client.post(f"/api/templates/{a}/feedback", json={"mark": "always-alert",
                                                                "note": "pager duty"})
        assert r.status_code == 200 and r.json()["mark"] == "always_alert"
        r = client.post(f"/api/templates/{a}/feedback", json={"mark": "expected"})
        assert r.json()["mark"] == "expected"
        assert client.app.state.transport.runner.marks() == {a: "expected"}
    with _client(tmp_path) as client:  # a restart: the mark is the store's
        assert client.app.state.transport.runner.marks() == {a: "expected"}
        t = client.get(f"/api/templates/{a}").json()
        assert t["mark"] == "expected"
        fb = [h for h in t["history"] if h["kind"] == "feedback"]
        assert [(h["mark"], h["note"]) for h in fb] == [("always_alert", "pager duty"),
                                                         ("expected", None)]
        assert client.get("/api/templates").json()["templates"][0]["mark"] == "expected"
        client.post(f"/api/templates/{a}/feedback", json={"mark": "none"})
        assert client.get(f"/api/templates/{a}").json()["mark"] is None
        assert client.app.state.transport.runner.marks() == {}
        # the id survived the restart: a new line of the template gets it
        again = _send(client, [{"message": "cache warmed in region delta", "host": "h",
                                "timestamp": T0 + 400}], 7)
        assert again[0]["template_id"] == a


def _warm_then_new(client):
    """A warmed-up model (800 routine lines), then a line of a new pattern: flagged."""
    warm = [{"message": f"heartbeat ok from worker {i % 7}", "host": "h", "level": "INFO",
             "timestamp": T0 + i} for i in range(800)]
    _send(client, warm, 800)
    [first] = _send(client, [{"message": "disk controller reset on bus 0", "host": "h",
                              "level": "INFO", "timestamp": T0 + 800}], 801)[:1]
    assert first["anomaly"] and "first time this message pattern" in first["reason"]
    return first["template_id"]


def _next(client, k, total):
    return _send(client, [{"message": f"disk controller reset on bus {k}", "host": "h",
                           "level": "INFO", "timestamp": T0 + 800 + k}], total)[0]


@pytest.mark.parametrize("mark", [None, "expected"])
def test_marking_a_template_expected_stops_its_next_line_being_flagged(tmp_path, mark):
    # the floor lowered so that the second line of a new pattern is flagged as rare unmarked
    with _client(tmp_path, min_anomaly_score=0.3) as client:
        tid = _warm_then_new(client)
        if mark:
            assert client.post(f"/api/templates/{tid}/feedback",
                               json={"mark": mark}).status_code == 200
        second = _next(client, 1, 802)
        assert second["template_id"] == tid
        if mark is None:  # the control: without the mark, its rarity flags it
            assert second["anomaly"] and "novelty" in second["reason"]
        else:
            assert not second["anomaly"] and second["score"] < 0.1


def test_always_alert_flags_the_next_line_and_clearing_it_stops(tmp_path):
    with _client(tmp_path) as client:
        tid = _warm_then_new(client)
        assert not _next(client, 1, 802)["anomaly"]
        client.post(f"/api/templates/{tid}/feedback", json={"mark": "always_alert"})
        flagged = _next(client, 2, 803)
        assert flagged["anomaly"] and f"pattern {tid} is marked always-alert" in flagged["reason"]
        client.post(f"/api/templates/{tid}/feedback", json={"mark": "none"})
        assert not _next(client, 3, 804)["anomaly"]


def test_feedback_needs_an_admin_key_once_keys_exist(tmp_path):
    from smartlogs.auth import KeyStore
    from smartlogs.settings import Settings

    store = KeyStore(Settings(data_dir=tmp_path).keys_path)
    _, read = store.create("reader", "read")
    _, admin = store.create("ops", "admin")
    h = lambda k: {"Authorization": f"Bearer {k}"}  # noqa: E731
    with _client(tmp_path) as client:
        client.headers.update(h(admin))
        a, _, _ = _catalog(client)
        assert client.get(f"/api/templates/{a}", headers=h(read)).status_code == 200
        r = client.post(f"/api/templates/{a}/feedback", json={"mark": "expected"}, headers=h(read))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = client.post(f"/api/templates/{a}/feedback", json={"mark": "expected"})
        assert r.status_code == 200
        fb = client.get(f"/api/templates/{a}", headers=h(read)).json()["history"][-1]
        assert fb["kind"] == "feedback" and fb["by"] == "ops"


AUTH = "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=10.0.0.{} user={}"


def test_a_merged_id_answers_404_naming_the_template_it_was_merged_into(app_client):
    users = ["root", "ftp", "git", "mysql"]
    stored = _send(app_client, [{"message": AUTH.format(i, u), "host": "h", "timestamp": T0 + i}
                                for i, u in enumerate(users)], 4)
    siblings = {e["template_id"] for e in stored}
    assert len(siblings) == 4  # an enumeration: four templates
    _send(app_client, [{"message": AUTH.format(9, "uucp"), "host": "h", "timestamp": T0 + 9}], 5)
    [survivor] = [t["id"] for t in app_client.get("/api/templates").json()["templates"]]
    for old in siblings - {survivor}:
        r = app_client.get(f"/api/templates/{old}")
        assert r.status_code == 404
        assert r.json()["error"] == "merged_template" and r.json()["merged_into"] == survivor
        assert f"merged into {survivor}" in r.json()["detail"]
        r = app_client.post(f"/api/templates/{old}/feedback", json={"mark": "expected"})
        assert r.status_code == 404 and r.json()["merged_into"] == survivor
    history = app_client.get(f"/api/templates/{survivor}").json()["history"]
    assert sorted(h["template_id"] for h in history if h["kind"] == "merged") == sorted(siblings - {survivor})


def test_the_full_stack_api_answers_503_not_500_when_elasticsearch_is_away(tmp_path):
    """The store's routes of `smartlogs api` (full mode) with no Elasticsearch behind them: a
    503 with Retry-After that says the store cannot answer (no engine needed: nothing listens)."""
    import socket

    from fastapi.testclient import TestClient

    from ingest_api.app import create_app
    from smartlogs.settings import Settings

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    settings = Settings(data_dir=tmp_path, syslog_port=0, es_url=f"http://127.0.0.1:{ports[0]}",
                        amqp_url=f"amqp://guest:guest@127.0.0.1:{ports[1]}/")
    with TestClient(create_app(settings, mode="full")) as client:
        for method, path, body in (("GET", "/api/templates", None), ("GET", "/api/templates/T1", None),
                                   ("POST", "/api/templates/T1/feedback", {"mark": "expected"}),
                                   # every other read of the store, not only the catalog's
                                   ("GET", "/api/events", None), ("GET", "/api/events?q=panic", None),
                                   ("GET", "/api/stats", None), ("GET", "/api/incidents", None),
                                   ("GET", "/api/incidents/i1", None)):
            r = client.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"] == "store_unavailable" and r.headers["Retry-After"] == "5"
