"""POST /ingest through its direct route (ingest_api.app.DirectRoute): the route's own
endpoint, exception handlers and OpenAPI entry, without FastAPI's per-request layers."""

from __future__ import annotations

import asyncio
import sys

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from ingest_api.app import create_app
from ingest_api.decode import INGEST_REQUEST_BODY, IngestError
from ingest_api.receivers import LineBudget
from smartlogs import metrics
from smartlogs.settings import Settings


class StubTransport:
    """Takes everything at once, or raises what the test asks for."""

    mode = "embedded"

    def __init__(self, fail: BaseException | None = None):
        self.fail, self.batches = fail, []

    async def accept(self, items, batch_id):
        if self.fail is not None:
            raise self.fail
        self.batches.append(items)


def _app(tmp_path, transport) -> object:
    app = create_app(Settings(data_dir=tmp_path, syslog_port=0))
    app.state.transport = transport
    app.state.ingest_slots = LineBudget(10_000)
    return app


async def _request(app, body: bytes, content_type: bytes = b"text/plain") -> list[dict]:
    """One request straight through the ASGI app (no lifespan, no server): its messages."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/ingest", "raw_path": b"/ingest", "root_path": "",
             "query_string": b"", "headers": [(b"content-type", content_type)],
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return sent


def _post(app, body: bytes, content_type: bytes = b"text/plain") -> list[dict]:
    return asyncio.run(_request(app, body, content_type))


def test_a_one_line_request_runs_a_bounded_number_of_python_calls(tmp_path):
    """The work per small request, counted in Python function calls (deterministic, unlike a
    time): through FastAPI's routing, dependency solving and jsonable_encoder a one-line POST
    made 388 calls; the direct route makes 167. A bound with room for library updates
    that a return to the framework's path would break."""
    app = _app(tmp_path, StubTransport())
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    async def main():
        for _ in range(3):  # the first requests build the middleware stack and warm caches
            assert (await _request(app, b"a line\n"))[0]["status"] == 202
        sys.setprofile(count)
        try:
            return await _request(app, b"a line\n")
        finally:
            sys.setprofile(None)

    sent = asyncio.run(main())
    assert sent[0]["status"] == 202
    assert calls < 300, calls


def _calls_of_one_request(app, body: bytes = b"a line\n") -> tuple[list[dict], list[str]]:
    """The messages of one warmed-up request and the Python functions it called, in order."""
    called: list[str] = []

    def record(frame, event, arg):
        if event == "call":
            called.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    async def main():
        for _ in range(3):  # the first requests build the middleware stack and warm caches
            assert (await _request(app, body))[0]["status"] == 202
        sys.setprofile(record)
        try:
            return await _request(app, body)
        finally:
            sys.setprofile(None)

    return asyncio.run(main()), called


def test_a_one_line_request_asks_no_telemetry_provider_and_looks_up_no_metric_label(tmp_path):
    """Per-request bookkeeping that is not the request's: FastAPI asked the OpenTelemetry
    providers on every request whether one had been configured since (the app has none), and
    each metric's ``labels()`` checked and converted its label and took a lock again (the
    children are looked up once now, ``metrics.child``). Before: 171 calls a request in
    ``bench/bench_ingest_path.py``; after: 146."""
    sent, called = _calls_of_one_request(_app(tmp_path, StubTransport()))
    assert sent[0]["status"] == 202
    assert not [c for c in called if "/opentelemetry/" in c], called
    assert not [c for c in called if c.endswith("prometheus_client/metrics.py:labels")], called
    # and the request's own: its body taken without a timer when it is already here, its
    # headers read in one pass, one context manager for its line budget (before: 171 calls
    # in this test; now 109; the bound leaves room for library updates)
    assert len(called) < 135, len(called)


def test_the_direct_route_answers_as_the_route_documents(tmp_path):
    transport = StubTransport()
    app = _app(tmp_path, transport)
    sent = _post(app, b"first line\nsecond line\n")
    assert sent[0]["status"] == 202
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    import orjson

    answer = orjson.loads(sent[1]["body"])
    assert answer["accepted"] == 2 and len(answer["ids"]) == 2
    assert [i["raw"] for i in transport.batches[0]] == ["first line", "second line"]
    assert [i["id"] for i in transport.batches[0]] == answer["ids"]
    # the OpenAPI entry is the route's: 202, the request bodies it takes
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()["paths"]["/ingest"]["post"]
    assert "202" in spec["responses"] and "415" in spec["responses"]
    assert set(spec["requestBody"]["content"]) == set(INGEST_REQUEST_BODY["content"])


def test_refusals_are_the_apps_json_errors_counted_and_recorded(tmp_path):
    app = _app(tmp_path, StubTransport(IngestError(503, "backlog_full", "the pipeline is behind",
                                                   retry_after=2)))
    before = metrics.REQUESTS_REJECTED.labels("backlog_full")._value.get()
    sent = _post(app, b"a line\n")
    assert sent[0]["status"] == 503
    assert dict(sent[0]["headers"])[b"retry-after"] == b"2"
    import orjson

    assert orjson.loads(sent[1]["body"])["error"] == "backlog_full"
    assert metrics.REQUESTS_REJECTED.labels("backlog_full")._value.get() == before + 1
    newest = metrics.recent_rejections()[0]  # with the client and the request it refused
    assert (newest["reason"], newest["client"], newest["request"]) == (
        "backlog_full", "127.0.0.1:5555", "POST /ingest")
    # a bad body: the decoder's 415, from the same handler
    sent = _post(app, b"\x89PNG", content_type=b"image/png")
    assert sent[0]["status"] == 415
    assert orjson.loads(sent[1]["body"])["error"] == "unsupported_media_type"


def test_an_unexpected_error_is_the_apps_json_500(tmp_path):
    app = _app(tmp_path, StubTransport(RuntimeError("a bug")))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.app.state.transport = StubTransport(RuntimeError("a bug"))  # after the lifespan's
        r = client.post("/ingest", content=b"a line\n", headers={"Content-Type": "text/plain"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error",
                        "detail": "unexpected server error; see the server log"}


def test_other_methods_and_paths_go_through_the_app(tmp_path):
    app = _app(tmp_path, StubTransport())
    with TestClient(app) as client:
        r = client.post("/ingest/", content=b"a line\n", headers={"Content-Type": "text/plain"},
                        follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"].endswith("/ingest")
        r = client.get("/ingest")
        assert r.status_code == 405 and r.json()["error"] == "http_error"


def test_a_route_that_needs_fastapi_is_served_by_the_app_not_directly():
    """A route whose endpoint asks FastAPI for more than the request (a validated query
    parameter here) is not called directly: its validation still answers."""

    from ingest_api.app import DirectRoute

    app = FastAPI()
    app.add_middleware(DirectRoute, fastapi_app=app, method="POST", path="/x")

    @app.post("/x", status_code=201)
    async def x(request: Request, n: int):
        return {"n": n}

    with TestClient(app) as client:
        assert client.post("/x", params={"n": "3"}).json() == {"n": 3}
        r = client.post("/x", params={"n": "three"})
        assert r.status_code == 422
