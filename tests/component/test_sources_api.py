"""Every event has a source, shown and filtered by the API (issue 19): the API key's name for a
line that names nothing else, the replay's file name, the shipped file's path; ``source=`` on
``GET /api/events``; a store written before sources gets them when opened."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from smartlogs.auth import KeyStore
from smartlogs.settings import Settings
from smartlogs.store.base import EventQuery
from smartlogs.store.sqlite import SqliteStore
from tests.conftest import wait_stored

HOSTLESS = "disk almost full on /var, 97% used"


def _ndjson(rows: list[dict]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows)


def test_the_api_keys_name_is_the_source_of_a_line_that_names_nothing_else(tmp_path):
    settings = Settings(data_dir=tmp_path, rate_limit_per_key=1000, syslog_port=0)
    keys = KeyStore(settings.keys_path)
    _, ingest = keys.create("edge-shipper", "ingest")
    _, read = keys.create("viewer", "read")
    with TestClient(create_app(settings)) as client:
        r = client.post("/ingest", content=_ndjson([
            {"id": "k1", "raw": HOSTLESS},
            {"id": "k2", "raw": HOSTLESS, "stream": "/var/log/app.log"}]),
            headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {ingest}"})
        assert r.status_code == 202, r.text
        auth = {"Authorization": f"Bearer {read}"}
        events = {}
        for _ in range(200):
            got = client.get("/api/events", params={"limit": 10}, headers=auth).json()["events"]
            events = {e["id"]: e for e in got}
            if len(events) == 2:
                break
            import time
            time.sleep(0.05)
        assert (events["k1"]["source"], events["k1"]["receiver"]) == ("edge-shipper", "http")
        assert events["k2"]["source"] == "/var/log/app.log"  # the file it names comes first


def test_replayed_and_shipped_files_name_their_lines_and_source_filters(app_client):
    c = app_client
    # a replay names its file with X-SmartLogs-Stream; `smartlogs ship` puts the path on each line
    assert c.post("/ingest", content=_ndjson([{"id": f"r{i}", "raw": f"{HOSTLESS} {i}"}
                                              for i in range(3)]),
                  headers={"Content-Type": "application/x-ndjson",
                           "X-SmartLogs-Stream": "server_2k.log"}).status_code == 202
    assert c.post("/ingest", content=_ndjson(
        [{"id": f"s{i}", "raw": f"{HOSTLESS} {i}", "stream": "/srv/app/current.log"}
         for i in range(2)]), headers={"Content-Type": "application/x-ndjson",
                                       "X-SmartLogs-Source": "file"}).status_code == 202
    assert c.post("/ingest", json=[
        {"id": "h1", "message": "payment refused", "host": "web-1", "service": "billing"},
        {"id": "v1", "message": "payment refused", "service": "billing"},
    ]).status_code == 202
    wait_stored(c, 7)

    def ids(**params) -> list[str]:
        res = c.get("/api/events", params={"limit": 100, **params})
        assert res.status_code == 200, res.text
        return sorted(e["id"] for e in res.json()["events"])

    assert ids(source="server_2k.log") == ["r0", "r1", "r2"]
    assert ids(source="/srv/app/current.log") == ["s0", "s1"]
    assert ids(source="web-1") == ["h1"]  # a host is its events' source
    assert ids(source="billing") == ["v1"]  # a service without a host
    assert ids(source="nowhere") == []
    assert ids(source="billing", host="web-1") == []  # filters combine
    shipped = c.get("/api/events", params={"source": "/srv/app/current.log"}).json()["events"][0]
    assert shipped["receiver"] == "file"
    # bounds: an empty or over-long source is a 422 with a JSON body naming the parameter
    for bad in ("", "x" * 1025):
        r = c.get("/api/events", params={"source": bad})
        assert r.status_code == 422 and "source" in r.text


def test_a_store_written_before_sources_gets_them_when_opened(tmp_path):
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    base = {"timestamp": "x", "received": 1.0, "component": None, "pid": None, "level": None,
            "raw": None, "template_id": "T1", "template": "m", "params": [], "score": 0.1,
            "anomaly": False, "reason": None, "warming_up": False, "parse_ok": True,
            "format": "syslog", "truncated": False, "fields": {}}
    # events as the pipeline made them before: ``source`` held the receiver, no ``receiver``
    store.write([{**base, "id": "a", "ts": 1.0, "source": "syslog_tcp", "host": "db-1",
                  "message": "m a"},
                 {**base, "id": "b", "ts": 2.0, "source": "file", "host": None, "message": "m b"}],
                window_seconds=60)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)  # back to the layout before sources
    conn.execute("DROP INDEX events_source_ts")
    conn.execute("ALTER TABLE events DROP COLUMN source")
    conn.close()

    store = SqliteStore(path)
    got = {e["id"]: e for e in store.search(EventQuery(limit=10)).events}
    assert (got["a"]["source"], got["a"]["receiver"]) == ("db-1", "syslog_tcp")
    assert (got["b"]["source"], got["b"]["receiver"]) == ("file", "file")
    assert [e["id"] for e in store.search(EventQuery(source="file")).events] == ["b"]
    assert [e["id"] for e in store.search(EventQuery(source="db-1")).events] == ["a"]
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM meta WHERE key = 'sources_filled'").fetchone()[0] == 0
    conn.close()


@pytest.mark.parametrize("route", ["/api/events", "/api/stream"])
def test_source_is_declared_with_bounds_in_the_openapi_schema(app_client, route):
    params = app_client.get("/openapi.json").json()["paths"][route]["get"]["parameters"]
    source = next(p for p in params if p["name"] == "source")
    schema = source["schema"].get("anyOf", [source["schema"]])[0]
    assert schema["maxLength"] == 1024
