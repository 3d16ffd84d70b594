"""API keys, scopes, rate limits, and the refusal to run open beyond loopback."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from smartlogs.auth import (ROUTE_SCOPES, KeyStore, RateLimiter, parse_authorization,
                            required_scope, route_template)
from smartlogs.settings import Settings


@pytest.fixture
def secured(tmp_path):
    settings = Settings(data_dir=tmp_path, rate_limit_per_key=1000)
    keys = KeyStore(settings.keys_path)
    _, ingest = keys.create("shipper", "ingest")
    _, read = keys.create("viewer", "read")
    _, admin = keys.create("ops", "admin")
    with TestClient(create_app(settings)) as client:
        yield client, {"ingest": ingest, "read": read, "admin": admin}, keys


def bearer(k):
    return {"Authorization": f"Bearer {k}"}


def test_keys_are_stored_hashed(tmp_path):
    keys = KeyStore(tmp_path / "k.db")
    _, secret = keys.create("a", "read")
    assert secret.startswith("sl_") and len(secret) > 40
    assert secret.encode() not in (tmp_path / "k.db").read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        keys.create("a", "read")
    with pytest.raises(ValueError, match="scope"):
        keys.create("b", "root")


def test_scopes_are_enforced(secured):
    client, k, _ = secured
    r = client.post("/ingest", json={"message": "no key"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "keys create" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.post("/ingest", json={"message": "bad"}, headers=bearer("sl_nope")).status_code == 401
    assert client.post("/ingest", json={"message": "x"}, headers=bearer(k["read"])).status_code == 403
    assert client.post("/ingest", json={"message": "x"}, headers=bearer(k["ingest"])).status_code == 202
    assert client.post("/ingest", json={"message": "x"}, headers=bearer(k["admin"])).status_code == 202
    assert client.get("/api/events").status_code == 401
    assert client.get("/api/events", headers=bearer(k["ingest"])).status_code == 403
    assert client.get("/api/events", headers=bearer(k["read"])).status_code == 200
    # health, metrics and docs stay open for probes and scrapers
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_apikey_scheme_as_elasticsearch_clients_send_it(secured):
    client, k, _ = secured
    es_style = base64.b64encode(f"someid:{k['ingest']}".encode()).decode()
    assert client.post("/ingest", json={"message": "x"},
                       headers={"Authorization": f"ApiKey {es_style}"}).status_code == 202
    assert client.post("/ingest", json={"message": "x"},
                       headers={"Authorization": f"ApiKey {k['ingest']}"}).status_code == 202


def test_revoked_key_stops_working(secured):
    client, k, keys = secured
    keys.revoke("viewer")
    keys._checked = 0  # the server re-reads the key file every 2 s; don't wait in a test
    assert client.get("/api/events", headers=bearer(k["read"])).status_code == 401


def test_rate_limit_gives_429_with_retry_after(tmp_path):
    settings = Settings(data_dir=tmp_path, rate_limit_per_key=1)
    _, key = KeyStore(settings.keys_path).create("slow", "read")
    with TestClient(create_app(settings)) as client:
        codes = [client.get("/api/events", headers=bearer(key)).status_code for _ in range(5)]
        assert codes[:2] == [200, 200] and codes[-1] == 429
        r = client.get("/api/events", headers=bearer(key))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["error"] == "rate_limited"


def test_token_bucket():
    rl = RateLimiter(2, burst=2)
    assert rl.take("k", now=0) == 0 and rl.take("k", now=0) == 0
    assert rl.take("k", now=0) == pytest.approx(0.5)
    assert rl.take("k", now=0.5) == 0


@pytest.mark.parametrize("header,expected", [
    ("Bearer sl_abc", "sl_abc"), ("bearer  sl_abc ", "sl_abc"), ("ApiKey sl_abc", "sl_abc"),
    ("ApiKey " + base64.b64encode(b"id1:sl_abc").decode(), "sl_abc"), ("Basic dTpw", "p"),
    ("Basic " + base64.b64encode(b"fluentbit:sl_abc").decode(), "sl_abc"), ("Digest x", None), (None, None),
])
def test_parse_authorization(header, expected):
    assert parse_authorization(header) == expected


def test_required_scope_table():
    assert required_scope("POST", "/ingest") == "ingest"
    assert required_scope("POST", "/myindex/_bulk") == "ingest"
    assert required_scope("POST", "/v1/logs") == "ingest"
    assert required_scope("GET", "/api/events") == "read"
    assert required_scope("GET", "/") is None and required_scope("GET", "/healthz") is None
    assert required_scope("GET", "/_license") == "ingest"  # shippers probe it with their ingest key


# index names that start like an open route: a prefix check let them ingest without a key
_LOOKALIKES = ["docs", "docsx", "console", "metrics", "metrics2", "healthz", "healthzz", "redoc",
               "openapi.json", "favicon.ico", "api", "_cluster"]


def _app_routes():
    """(method, path template) of every route the app serves, routers included."""
    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                yield from walk(inner.routes)
            elif getattr(r, "methods", None):
                for m in r.methods:
                    yield m, r.path
    return sorted(set(walk(create_app(Settings()).routes)))


def test_every_route_of_the_app_has_a_declared_scope():
    """A route added to the app must be listed in ROUTE_SCOPES (else it is closed, and this fails)."""
    declared = {(m, t) for methods, t, _ in ROUTE_SCOPES for m in methods}
    served = set(_app_routes())
    assert served - declared == set(), "routes without a declared scope in smartlogs.auth"
    assert declared - served == set(), "ROUTE_SCOPES lists routes the app does not serve"
    for method, template in served:
        assert route_template(method, template.replace("{index}", "x").replace("{name}", "x")) == template


def _concrete(template: str) -> list[str]:
    if "{index}" in template:
        return [template.replace("{index}", name) for name in ["logs", *_LOOKALIKES]]
    if "{name}" in template:
        return [template.replace("{name}", "console.js")]
    return [template]


@pytest.mark.parametrize("method,template", _app_routes())
def test_every_route_answers_each_key_as_its_scope_says(secured, method, template):
    """Generated from the app's routes: without a key, with each scope's key and a wrong key."""
    client, secrets_, _keys = secured
    need = next(s for methods, t, s in ROUTE_SCOPES if t == template and method in methods)
    variants = {None: None, "wrong": "sl_" + "x" * 43, **{k: v for k, v in secrets_.items()}}
    for path in _concrete(template):
        for name, secret in variants.items():
            allowed = need is None or (name in ("admin", need))
            if allowed and template == "/api/stream":
                continue  # a live tail never ends; its denials are checked, its stream elsewhere
            headers = {"Authorization": f"Bearer {secret}"} if secret else {}
            r = client.request(method, path, headers=headers,
                               content=b"" if method in ("POST", "PUT") else None)
            if allowed:
                assert r.status_code not in (401, 403), (method, path, name, r.text)
            else:
                want = 401 if name in (None, "wrong") else 403
                assert r.status_code == want, (method, path, name, r.status_code, r.text)
                assert r.json()["error"] in ("unauthorized", "forbidden")


@pytest.mark.parametrize("index", _LOOKALIKES)
def test_bulk_under_an_index_named_like_an_open_route_needs_a_key(secured, index):
    client, secrets_, _keys = secured
    body = b'{"index":{}}\n{"message":"forged","host":"attacker"}\n'
    ctype = {"Content-Type": "application/x-ndjson"}
    assert client.post(f"/{index}/_bulk", content=body, headers=ctype).status_code == 401
    r = client.post(f"/{index}/_bulk", content=body, headers={**ctype, **bearer(secrets_["read"])})
    assert r.status_code == 403
    r = client.post(f"/{index}/_bulk", content=body, headers={**ctype, **bearer(secrets_["ingest"])})
    assert r.status_code == 200 and r.json()["errors"] is False


def _cli(*args, data_dir):
    env = {**os.environ, "SMARTLOGS_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "smartlogs.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_refuses_to_serve_open_beyond_loopback(tmp_path):
    r = _cli("up", "--host", "0.0.0.0", "--port", "1", data_dir=tmp_path)
    assert r.returncode == 1
    assert "refusing to listen on 0.0.0.0 without API keys" in r.stderr
    assert "smartlogs keys create" in r.stderr


def test_keys_cli_create_list_revoke(tmp_path):
    r = _cli("keys", "create", "--name", "ci", "--scope", "read", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    secret = next(line for line in r.stdout.splitlines() if line.startswith("sl_"))
    assert KeyStore(tmp_path / "keys.db").verify(secret).name == "ci"
    r = _cli("keys", "list", data_dir=tmp_path)
    assert "ci" in r.stdout and "active" in r.stdout and secret not in r.stdout
    assert _cli("keys", "revoke", "ci", data_dir=tmp_path).returncode == 0
    assert "revoked" in _cli("keys", "list", data_dir=tmp_path).stdout
    assert _cli("keys", "revoke", "ci", data_dir=tmp_path).returncode == 1


def test_console_stream_takes_the_key_as_a_query_parameter(secured):
    client, k, _ = secured
    assert client.get("/api/stream", params={"max_seconds": 1}).status_code == 401
    with client.stream("GET", "/api/stream", params={"max_seconds": 1, "key": k["read"]}) as r:
        assert r.status_code == 200
    # only the stream takes it: other queries still need the header
    assert client.get("/api/events", params={"key": k["read"]}).status_code == 401
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200  # the page itself is open; it asks for a key on 401


def test_the_console_page_and_its_files_load_without_a_key(secured):
    """A browser sends no key for <script>/<link>: the page's files must be open, or the page
    (which asks for the key) can never run."""
    import re

    client, _, _ = secured
    page = client.get("/", headers={"Accept": "text/html"}).text
    names = set(re.findall(r'(?:src|href)="console/([^"]+)"', page))
    assert {"console.js", "views.js", "incidents.js", "console.css", "favicon.svg"} <= names
    for name in names:  # every file the page names (a script it cannot load stops a view)
        r = client.get(f"/console/{name}")
        assert r.status_code == 200 and r.content, name
    # only the listed files: any other name is a 404, never a file from disk
    assert client.get("/console/../auth.py").status_code in (404, 401)
    assert client.get("/api/events").status_code == 401  # the data still needs a key


def test_revoking_every_key_does_not_reopen_the_api(secured):
    client, k, keys = secured
    for name in ("shipper", "viewer", "ops"):
        keys.revoke(name)
    keys._checked = 0  # the server re-reads the key file every 2 s; don't wait in a test
    r = client.post("/ingest", json={"message": "after the last revoke"})
    assert r.status_code == 401 and "every key of this server is revoked" in r.json()["detail"]
    assert client.get("/api/events").status_code == 401
    assert client.get("/healthz").status_code == 200  # open paths stay open


def test_revoking_the_last_key_warns_and_listing_creates_nothing(tmp_path):
    assert "API keys" in _cli("keys", "list", data_dir=tmp_path).stdout
    assert not (tmp_path / "keys.db").exists()
    _cli("keys", "create", "--name", "only", "--scope", "admin", data_dir=tmp_path)
    r = _cli("keys", "revoke", "only", data_dir=tmp_path)
    assert r.returncode == 0 and "no active key left" in r.stdout, r.stdout
    # beyond loopback the server still counts as secured (it refuses everything protected)
    from smartlogs.cli import _guard_bind

    _guard_bind(Settings(host="0.0.0.0", data_dir=tmp_path), insecure=False)  # no refusal


def test_otlp_protobuf_clients_get_auth_answers_in_protobuf(secured):
    """An OTLP exporter reads the answer in its request's encoding (a google.rpc.Status)."""
    from ingest_api.receivers.proto.rpc_status import Status

    client, k, _ = secured
    r = client.post("/v1/logs", content=b"", headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/x-protobuf"
    status = Status.FromString(r.content)
    assert status.code == 16 and "missing API key" in status.message
    r = client.post("/v1/logs", content=b"", headers={"Content-Type": "application/x-protobuf",
                                                      **bearer(k["read"])})
    assert r.status_code == 403 and Status.FromString(r.content).code == 7
    r = client.post("/v1/logs", json={}, headers={})  # OTLP/JSON: the API's JSON error
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def _stream_until(client, headers: dict | None, params: dict, then) -> list[str]:
    """Open the live tail, call ``then()`` once it is ready, and return the event names seen."""
    names = []
    with client.stream("GET", "/api/stream", params={"max_seconds": 15, "interval": 0.2, **params},
                       headers=headers or {}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
                if names == ["ready"]:
                    then()
                if names[-1] == "unauthorized":
                    break
    return names


def test_an_open_live_tail_ends_when_its_key_is_revoked(secured):
    client, k, keys = secured
    names = _stream_until(client, bearer(k["read"]), {}, lambda: keys.revoke("viewer"))
    assert names[-1] == "unauthorized"  # within the key file's 2 s re-read, not at max_seconds


def test_a_keyless_live_tail_ends_when_keys_are_turned_on(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        names = _stream_until(client, None, {},
                              lambda: KeyStore(settings.keys_path).create("late", "read"))
    assert names[-1] == "unauthorized"


def test_refused_keys_are_kept_among_the_recent_rejections(secured):
    """A shipper with a revoked or wrong key, or a key of the wrong scope, was refused without a
    trace in `smartlogs status`: 401 and 403 are kept among the last rejections too."""
    client, k, _ = secured
    assert client.post("/ingest", json={"message": "x"}, headers=bearer("sl_nope")).status_code == 401
    assert client.post("/ingest", json={"message": "x"}, headers=bearer(k["read"])).status_code == 403
    kept = client.get("/api/rejections", headers=bearer(k["read"])).json()["rejections"]
    assert [r["reason"] for r in kept[:2]] == ["forbidden", "unauthorized"], kept
    assert kept[0]["request"] == "POST /ingest" and "viewer" in kept[0]["detail"], kept[0]
    assert kept[1]["request"] == "POST /ingest" and "unknown or revoked" in kept[1]["detail"]
    assert "sl_nope" not in str(kept)  # a secret sent is never kept
