"""Fuzz the HTTP API: from its OpenAPI schema (Schemathesis), and with raw bodies (Hypothesis).

Promises under test (issue 8, "Bad input and hostile input"):

* no request, however malformed, gets a 5xx;
* no request hangs (every answer within ``MAX_RESPONSE_SECONDS``; a request that takes longer
  than ``REQUEST_TIMEOUT`` is cut and reported as a failure);
* every 4xx carries a body saying what is wrong: JSON ``{"error": ..., "detail": ...}`` on the
  API's own routes, the protocol's error shape on the receivers (``error_body_problem``);
* what was accepted does not wedge the pipeline: after each fuzz run a new event is stored
  and the runner has seen no error (a poisoned batch would be retried forever).

The apps are the embedded platform in-process (API + pipeline runner + SQLite store in a tmp
dir). Schemathesis reaches its app over ASGI and starts the lifespan itself on the first call
(its pytest plugin ends it after each test); the Hypothesis tests use a TestClient entered as a
context manager. ``/ingest`` and the receivers read their bodies raw, so the schema declares
none: the bodies are added here (``INGEST_REQUEST_BODY``, ``RECEIVER_REQUEST_BODIES``), with
strategies for NDJSON/_bulk and protobuf, which Schemathesis cannot make by itself.

Phases (issue 21): Schemathesis' examples, coverage and fuzzing phases per operation
(``test_api_fuzz``), and its stateful phase (``TestStatefulFuzz``: sequences of requests that
follow ``STATEFUL_LINKS``, the live stream left out); every numeric parameter is bounded in the
schema (``test_every_numeric_parameter_is_bounded``), so an out-of-range number is a 422.

Budget: fixed ``max_examples`` per operation and phase, fixed seed, deterministic generation,
no example database: the same requests on every run. ``SMARTLOGS_FUZZ_EXAMPLES`` raises the
budget for a deeper local run (e.g. ``SMARTLOGS_FUZZ_EXAMPLES=500``); with
``SMARTLOGS_FUZZ_REPORT=file.json`` the requests sent and the 5xx seen are written there.
"""

from __future__ import annotations

import atexit
import copy
import gzip
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from tests.ci import need_module

schemathesis = need_module("schemathesis")  # skips locally when missing; fails in CI
hypothesis = need_module("hypothesis")

from hypothesis import given
from hypothesis import strategies as st

from ingest_api.app import create_app
from smartlogs.settings import Settings
from tests.unit.test_properties import (
    api_line,
    budget,
    formatted_line,
    json_line,
    json_object,
    json_value,
    mangled,
)

EXAMPLES = int(os.environ.get("SMARTLOGS_FUZZ_EXAMPLES", "60"))
STATEFUL_STEPS = 8  # requests per stateful scenario; EXAMPLES // 2 scenarios
SEED = 20240608
MAX_RESPONSE_SECONDS = 5.0  # an answer slower than this is a hang as far as a client is concerned
REQUEST_TIMEOUT = 15.0  # cut a request that really hangs, so the test fails instead of hanging
MAX_BODY = 200_000
MAX_LINE = 4096

# What /ingest accepts. FastAPI cannot infer it (the body is read raw), so unless the route
# declares it (``openapi_extra={"requestBody": INGEST_REQUEST_BODY}``), it is added here to
# the schema Schemathesis fuzzes; once the route declares one, the route's own is used.
from ingest_api.decode import INGEST_REQUEST_BODY  # noqa: E402  (what the route declares)

# Elasticsearch _bulk bodies: action lines (some odd) each followed by a source line (or not)
bulk_action = st.one_of(
    st.sampled_from([{"index": {}}, {"create": {}}, {"index": {"_index": "logs"}},
                     {"delete": {"_id": "1"}}, {"update": {"_id": "1"}}, {}, {"bogus": {}}]),
    st.builds(lambda i: {"create": {"_id": i}}, st.text(max_size=20)),
    json_value,
)
BULK_BODY = st.lists(st.tuples(bulk_action, st.one_of(json_object(), json_value, api_line)),
                     min_size=1, max_size=4).map(lambda pairs: "".join(
                         json.dumps(a) + "\n" + (b if isinstance(b, str) else json.dumps(b)) + "\n"
                         for a, b in pairs).encode("utf-8", "surrogatepass"))
# Schemathesis cannot make NDJSON by itself: lines of events, of junk, of formatted log text,
# and _bulk action/source pairs (the same media type)
NDJSON_BODY = st.one_of(
    st.lists(st.one_of(json_line(), api_line, st.just("")), min_size=1, max_size=6).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    BULK_BODY,
)
schemathesis.openapi.media_type("application/x-ndjson", NDJSON_BODY)


@st.composite
def otlp_protobuf(draw) -> bytes:
    """An OTLP ExportLogsServiceRequest with odd values, serialised (valid protobuf)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

    text = st.text(st.characters(codec="utf-8"), max_size=40)
    value = st.one_of(st.builds(lambda v: AnyValue(string_value=v), text),
                      st.builds(lambda v: AnyValue(int_value=v), st.integers(-2**63, 2**63 - 1)),
                      st.builds(lambda v: AnyValue(double_value=v), st.floats()),
                      st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=20)),
                      st.just(AnyValue()))
    attrs = st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), text, value), max_size=3)
    records = st.lists(st.builds(
        lambda t, sn, stx, body, a: LogRecord(time_unix_nano=t, severity_number=sn,
                                              severity_text=stx, body=body, attributes=a),
        st.integers(0, 2**64 - 1), st.integers(0, 24), text, value, attrs), max_size=3)
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[
        ScopeLogs(log_records=draw(records))])])
    return request.SerializeToString()


PROTOBUF_BODY = st.one_of(st.binary(max_size=600), otlp_protobuf())
schemathesis.openapi.media_type("application/x-protobuf", PROTOBUF_BODY)


def _settings(tmp_path) -> Settings:
    # syslog_port=0: no syslog listener (the fuzzed apps must not hold a real port); one shard
    # in the API process over one partition: the API is what is fuzzed, and the tests below read
    # its runner (shard processes are tested in tests/component/test_shards.py and tests/e2e)
    return Settings(data_dir=tmp_path, max_body_bytes=MAX_BODY, max_line_length=MAX_LINE,
                    checkpoint_seconds=0.5, syslog_port=0, shards=1, partitions=1)


# The receivers read their bodies raw too: their routes declare what their clients send
# (``openapi_extra``), so the schema fuzzed here is the one the API serves.


# OpenAPI links for the stateful phase: what one answer gives the next request. The schema has
# no resource ids to follow, so the links are the values a client does carry over: the tail
# cursor (``last_seq``) and the template ids of stored events and of the template list.
STATEFUL_LINKS = {
    ("/api/events", "get"): {
        "NextTail": {"operationId": "events_api_events_get",
                     "parameters": {"query.after": "$response.body#/last_seq"}},
        "SameTemplate": {"operationId": "events_api_events_get",
                         "parameters": {"query.template": "$response.body#/events/0/template"}},
    },
    ("/api/templates", "get"): {
        "EventsOfTemplate": {"operationId": "events_api_events_get",
                             "parameters": {"query.template": "$response.body#/templates/0/id"}},
    },
    ("/ingest", "post"): {
        "FindAccepted": {"operationId": "events_api_events_get",
                         "parameters": {"query.order": "arrival", "query.limit": 10}},
    },
}


def _raw_schema(app) -> dict:
    raw = copy.deepcopy(app.openapi())
    raw["paths"]["/ingest"]["post"].setdefault("requestBody", copy.deepcopy(INGEST_REQUEST_BODY))
    for (path, method), links in STATEFUL_LINKS.items():
        responses = raw["paths"][path][method]["responses"]
        code = "202" if method == "post" else "200"
        responses.setdefault(code, {"description": "OK"}).setdefault("links", {}).update(
            copy.deepcopy(links))
    return raw


def _config():
    from schemathesis.config import SchemathesisConfig

    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "request-timeout": REQUEST_TIMEOUT,
        # GET /api/stream (server-sent events) runs for up to max_seconds by design: "no hang"
        # there means its first event comes promptly, so the stream is cut after one event
        "max-stream-events": 1,
        "generation": {
            "max-examples": EXAMPLES,
            "deterministic": True,
            "database": "none",
            "mode": "all",  # valid and invalid data
        },
        # the phases Schemathesis' own CLI runs (`st run --phases examples,fuzzing,stateful`)
        # plus its coverage phase (boundary values of every bounded parameter)
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
                   "fuzzing": {"enabled": True},
                   "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS}},
        "checks": {
            # the promises of this test; schema-conformance checks are reported separately
            "not_a_server_error": {"enabled": True},
            "max_response_time": MAX_RESPONSE_SECONDS,
        },
    })


# -- the checks beyond Schemathesis' own ------------------------------------------------------
def is_elasticsearch_path(path: str) -> bool:
    return path.endswith("/_bulk") or path in ("/_license", "/_xpack", "/_cluster/health")


def error_body_problem(path: str, status: int, ctype: str, content: bytes) -> str | None:
    """What is wrong with a 4xx answer's body, or None when it says what is wrong.

    The API's own routes answer JSON ``{"error": code, "detail": text}``. The receivers answer
    in their protocol's shape, which is what their clients read: Elasticsearch's
    ``{"error": {"type", "reason"}, "status"}`` on ``_bulk``, and on ``/v1/logs`` a
    ``google.rpc.Status`` with a message, in protobuf when the request was protobuf (OTLP/HTTP).
    """
    mime = ctype.split(";")[0].strip().lower()
    if path == "/v1/logs" and mime == "application/x-protobuf":
        from ingest_api.receivers.proto.rpc_status import Status

        st_ = Status()
        st_.ParseFromString(content)
        return None if st_.message else f"{status}: google.rpc.Status without a message"
    if mime != "application/json":
        return f"{status} with Content-Type {ctype!r}, expected application/json"
    try:
        body = json.loads(content)
    except ValueError:
        return f"{status} body is not JSON: {content[:200]!r}"
    if not isinstance(body, dict):
        return f"{status} body is not a JSON object: {body!r}"
    error = body.get("error")
    if is_elasticsearch_path(path) and isinstance(error, dict):
        if isinstance(error.get("type"), str) and error["type"] and error.get("reason"):
            return None
        return f"{status}: Elasticsearch error without type and reason: {body!r}"
    if not (isinstance(error, str) and error):
        return f"{status}: no 'error' code in {body!r}"
    if not body.get("detail"):
        return f"{status}: no 'detail' in {body!r}"
    return None


def four_xx_is_json_error(ctx, response, case):
    """Every 4xx carries a body that says what is wrong (see ``error_body_problem``)."""
    if not 400 <= response.status_code < 500:
        return
    ctype = response.headers.get("content-type", [""])
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    problem = error_body_problem(case.formatted_path, response.status_code, ctype or "",
                                 response.content)
    assert problem is None, problem


def no_server_error(ctx, response, case):
    """Zero 5xx, 503 included (the backlog bound is far away in this test)."""
    assert response.status_code < 500, (
        f"{response.status_code} on {case.method} {case.formatted_path}: {response.text[:500]}")


# -- what was sent (for the figures: fuzz requests sent, 5xx seen) ----------------------------
STATS: dict = {"requests": 0, "server_errors": 0, "by_status": {}, "by_operation": {}}


def _record(case, response) -> None:
    STATS["requests"] += 1
    code = str(response.status_code)
    STATS["by_status"][code] = STATS["by_status"].get(code, 0) + 1
    if response.status_code >= 500:
        STATS["server_errors"] += 1
    label = f"{case.method} {case.path}"
    STATS["by_operation"][label] = STATS["by_operation"].get(label, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    """Write the request counts to $SMARTLOGS_FUZZ_REPORT (JSON) when set."""
    t0 = time.monotonic()
    yield
    STATS["seconds"] = round(time.monotonic() - t0, 2)
    out = os.environ.get("SMARTLOGS_FUZZ_REPORT")
    if out:
        import json

        Path(out).write_text(json.dumps(STATS, indent=2, sort_keys=True))


# -- Schemathesis over the OpenAPI schema ------------------------------------------------------
# One app for the module (its lifespan is started by Schemathesis' ASGI client on the first
# call and ended after each test by Schemathesis' pytest plugin). Built at import time because
# ``schemathesis.pytest.from_fixture`` (the lazy loader) does not work with pytest 9.2 (it
# reads ``Node._nodeid``, which pytest 9.2 no longer has); building the app starts nothing.
_DATA_DIR = tempfile.mkdtemp(prefix="smartlogs-fuzz-")
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)
APP = create_app(_settings(Path(_DATA_DIR)))
SCHEMA = schemathesis.openapi.from_dict(_raw_schema(APP), config=_config())
SCHEMA.app = APP  # reach it in-process over ASGI, as ``schemathesis.openapi.from_asgi`` does
SCHEMA.location = "/openapi.json"


@SCHEMA.parametrize()
def test_api_fuzz(case):
    response = case.call()
    _record(case, response)
    case.validate_response(
        response,
        checks=[schemathesis.checks.not_a_server_error, no_server_error, four_xx_is_json_error,
                _max_response_time],
    )


# -- the schema says what the API does (issue 21) ----------------------------------------------
# Schemathesis' conformance checks: every status and Content-Type answered is declared, every
# body matches its declared schema, a request the schema forbids is refused (4xx) and one it
# allows is accepted. The schema declared none of the 404s (alerts off, no such incident), 400s
# and 415s of the receivers, nor the protobuf answers of /v1/logs; since/until took any string
# and refused all but times; /ingest refused nothing of ``"pid": null``, which it takes.
#
# "Allowed is accepted" holds where a JSON Schema can say what is valid. It cannot for: a q
# (a query language: "(" alone does not parse), a cursor (opaque: only one this server made is
# one), a rule between parameters (``after``, the tail's cursor, with order=time or arrival:
# OpenAPI 3 has no way to say one parameter excludes a value of another; the description says
# it), and bodies of a syntax of their own (NDJSON, _bulk action/source pairs, protobuf): those
# requests are held to every other check.
CONFORMANCE_CHECKS = [schemathesis.checks.status_code_conformance,
                      schemathesis.checks.content_type_conformance,
                      schemathesis.checks.response_schema_conformance,
                      schemathesis.checks.negative_data_rejection]
FREE_FORM_PARAMETERS = {"q", "cursor"}
FREE_FORM_BODIES = {"application/x-ndjson", "application/x-protobuf"}
FREE_FORM_PATHS = {"/_bulk", "/{index}/_bulk"}


def _schema_can_say_what_is_valid(case) -> bool:
    query = case.query or {}
    return not (FREE_FORM_PARAMETERS & set(query)
                or ("after" in query and query.get("order") in ("time", "arrival"))
                or (case.media_type or "").split(";")[0] in FREE_FORM_BODIES
                or case.path in FREE_FORM_PATHS)


def allowed_is_accepted(ctx, response, case):
    """positive_data_acceptance, where a JSON Schema can say what is valid (see above)."""
    if _schema_can_say_what_is_valid(case):
        return schemathesis.checks.positive_data_acceptance(ctx, response, case)
    return None


CONFORMANCE = SCHEMA.exclude(path="/api/stream")


@CONFORMANCE.parametrize()
def test_api_does_what_its_schema_says(case):
    response = case.call()
    _record(case, response)
    case.validate_response(response, checks=[*CONFORMANCE_CHECKS, allowed_is_accepted,
                                             no_server_error])


@pytest.mark.parametrize("value,accepted", [
    ("2024-02-29T10:00:00Z", True), ("2024-02-29", True), ("1999-12-31 23:59+01:00", True),
    ("1717171717.5", True), ("-3", True), ("1e9", True), ("15m", True), ("1.5 h", True),
    ("", True), ("2023-02-29", False), ("2024-13-01", False), ("0000-01-01", False),
    ("0000-02-29", False), ("0400-02-29", True), ("1900-02-29", False), ("2000-02-29", True),
    ("nan", False), ("inf", False), ("yesterday-ish", False), (" 15m", False),
    ("2024-W01-1", False),  # an ISO week date: Python reads it, the pattern does not
])
def test_since_takes_exactly_what_its_pattern_says(ingest_client, value, accepted):
    """The schema's pattern of since/until and what the API accepts are one rule."""
    import re

    raw = ingest_client.app.openapi()
    for path in ("/api/events", "/api/stats", "/api/templates", "/api/incidents"):
        [since] = [p for p in raw["paths"][path]["get"]["parameters"] if p["name"] == "since"]
        [text] = [k for k in since["schema"]["anyOf"] if k.get("type") == "string"]
        assert bool(re.search(text["pattern"], value)) is accepted, (path, value)
        r = ingest_client.get(path, params={"since": value})
        assert (r.status_code == 200) is accepted, (path, value, r.status_code, r.text)
        if not accepted:
            assert r.json()["error"] == "invalid_time" and r.json()["field"] == "since", r.text


def _max_response_time(ctx, response, case):
    assert response.elapsed <= MAX_RESPONSE_SECONDS, (
        f"{case.method} {case.formatted_path} took {response.elapsed:.2f}s")


# -- the stateful phase: sequences of requests chained by the links above --------------------
# The live tail is left out: it is a stream that runs until ``max_seconds`` by design.
STATEFUL = SCHEMA.exclude(path="/api/stream").as_state_machine()


class _Stateful(STATEFUL):
    def validate_response(self, response, case, **kwargs):
        _record(case, response)
        case.validate_response(response, checks=[no_server_error, four_xx_is_json_error,
                                                 _max_response_time])


TestStatefulFuzz = _Stateful.TestCase
TestStatefulFuzz.settings = hypothesis.settings(
    _Stateful.TestCase.settings, max_examples=max(1, EXAMPLES // 2),
    stateful_step_count=STATEFUL_STEPS, derandomize=True, database=None)


def test_stateful_phase_has_transitions():
    """The stateful phase follows links; without any it would only repeat the stateless one."""
    assert STATEFUL.bundles or STATEFUL._transitions.operations, "no links for the stateful phase"
    labels = {op for op, node in STATEFUL._transitions.operations.items() if node.outgoing}
    assert {"GET /api/events", "GET /api/templates", "POST /ingest"} <= labels, labels


def test_every_numeric_parameter_is_bounded():
    """An integer beyond what the store holds (``after=2**63``) was a 500: every number in the
    schema has a minimum and a maximum, so that it is refused with a 422 before any code runs."""
    unbounded = []
    for path, ops in APP.openapi()["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                kinds = [schema] + schema.get("anyOf", [])
                for kind in kinds:
                    if kind.get("type") in ("integer", "number") and not (
                            "maximum" in kind and "minimum" in kind):
                        unbounded.append(f"{method.upper()} {path} {param['name']}")
    assert not unbounded, unbounded


def _runner(app):
    return app.state.transport.runner


def test_schema_fuzz_went_through_a_started_app_whose_pipeline_still_works():
    """Runs after ``test_api_fuzz`` (file order). The requests reach a started app (lifespan
    ran: transport, runner and store exist), and the pipeline survived what the fuzz sent:
    the lifespan restarts replay the spool, so one poisoned batch would block this event."""
    word = "fuzzsentinelschema"
    post = SCHEMA["/ingest"]["POST"].Case(body=f"{word} after the schema fuzz",
                                          media_type="text/plain")
    response = post.call()
    assert response.status_code == 202, response.text
    assert APP.state.transport.health()[0], "pipeline runner is not running"
    search = SCHEMA["/api/events"]["GET"]
    deadline = time.monotonic() + 20
    while True:
        found = search.Case(query={"q": word}).call().json()
        if found["total"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    runner = _runner(APP)
    assert found["total"] >= 1, f"pipeline stuck after the fuzz: {runner.last_error}"
    assert runner.errors == 0, runner.last_error


def test_ingest_schema_declares_its_body():
    """/ingest should declare its request body, so that the schema tells clients (and fuzzers)
    what it takes. Until the route has ``openapi_extra={"requestBody": INGEST_REQUEST_BODY}``
    this test is an xfail and the fuzz test supplies the body itself."""
    app = create_app(Settings(data_dir="/nonexistent-unused"))
    post = app.openapi()["paths"]["/ingest"]["post"]
    if "requestBody" not in post:
        pytest.xfail("POST /ingest declares no requestBody (see INGEST_REQUEST_BODY)")
    assert set(post["requestBody"]["content"]) >= {"application/json", "text/plain"}


# -- /ingest with arbitrary bodies (Hypothesis) ----------------------------------------------
@pytest.fixture(scope="module")
def ingest_client(tmp_path_factory):
    """The embedded platform, lifespan started (TestClient as a context manager)."""
    from fastapi.testclient import TestClient

    app = create_app(_settings(tmp_path_factory.mktemp("ingest-fuzz")))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def post_and_check(client, body: bytes, headers: dict, path: str = "/ingest") -> int:
    t0 = time.monotonic()
    response = client.post(path, content=body, headers=headers)
    elapsed = time.monotonic() - t0
    STATS["requests"] += 1
    code = str(response.status_code)
    STATS["by_status"][code] = STATS["by_status"].get(code, 0) + 1
    label = f"POST {path} (hypothesis)"
    STATS["by_operation"][label] = STATS["by_operation"].get(label, 0) + 1
    if response.status_code >= 500:
        STATS["server_errors"] += 1
    where = f"POST {path} {headers} {body[:200]!r}"
    assert response.status_code < 500, f"{response.status_code} on {where}: {response.text[:500]}"
    assert elapsed < MAX_RESPONSE_SECONDS, f"{elapsed:.2f}s on {where}"
    if path == "/ingest" and response.status_code == 202:
        doc = response.json()
        assert doc["accepted"] >= 1 and len(doc["ids"]) == doc["accepted"], (where, doc)
    elif response.status_code >= 300:
        assert 400 <= response.status_code < 500, (response.status_code, where)
        problem = error_body_problem(path, response.status_code,
                                     response.headers.get("content-type", ""), response.content)
        assert problem is None, f"{problem} on {where}"
    return response.status_code


def assert_pipeline_alive(client, word: str) -> None:
    """Everything accepted so far has been processed: a new event is stored, no errors."""
    post_and_check(client, f"{word} end of fuzz".encode(), {"Content-Type": "text/plain"})
    runner = _runner(client.app)
    deadline = time.monotonic() + 20
    while client.get("/api/events", params={"q": word}).json()["total"] < 1:
        assert time.monotonic() < deadline, f"pipeline stuck after the fuzz: {runner.last_error}"
        time.sleep(0.05)
    assert runner.errors == 0, runner.last_error


CONTENT_TYPES = ["application/json", "application/x-ndjson", "application/jsonl", "text/plain",
                 "text/plain; charset=utf-8", "application/json; charset=utf-8",
                 "application/octet-stream", "text/csv", "", "application/x-www-form-urlencoded"]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
content_type = st.one_of(st.sampled_from(CONTENT_TYPES), header_text)
encoding = st.sampled_from([None, "gzip", "identity", "br", "deflate", "GZIP", "gzip, identity"])


def _headers(ctype, enc) -> dict:
    headers = {"Content-Type": ctype}
    if enc is not None:
        headers["Content-Encoding"] = enc
    return headers


def test_ingest_arbitrary_bytes(ingest_client):
    @budget(EXAMPLES * 2)
    @given(body=st.binary(max_size=2000), ctype=content_type, enc=encoding,
           compress=st.booleans())
    def run(body, ctype, enc, compress):
        if compress:  # a valid gzip stream of junk, declared or not
            body = gzip.compress(body)
        post_and_check(ingest_client, body, _headers(ctype, enc))

    run()
    assert_pipeline_alive(ingest_client, "fuzzsentinelbytes")


structured = st.one_of(
    st.builds(lambda o: json.dumps(o, allow_nan=True), json_value),
    st.builds(lambda o: json.dumps(o, allow_nan=True), json_object()),
    st.builds(lambda o: json.dumps(o, allow_nan=True), st.lists(json_object(), max_size=5)),
    st.builds("\n".join, st.lists(st.one_of(json_line(), api_line), max_size=6)),
    st.builds("\n".join, st.lists(mangled(formatted_line), min_size=1, max_size=6)),
)


def test_ingest_structured_bodies(ingest_client):
    """Bodies that get past the first checks: events with odd values, log lines of every format,
    NDJSON mixing events and junk; plain, gzip-encoded, or gzip cut short."""
    @budget(EXAMPLES * 2)
    @given(text=structured,
           ctype=st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]),
           enc=st.sampled_from([None, "gzip", "gzip-truncated"]))
    def run(text, ctype, enc):
        body = text.encode("utf-8", "surrogatepass")
        if enc is not None:
            body = gzip.compress(body)
            if enc == "gzip-truncated":
                body, enc = body[: len(body) // 2], "gzip"
        post_and_check(ingest_client, body, _headers(ctype, enc))

    run()
    assert_pipeline_alive(ingest_client, "fuzzsentinelstructured")


@pytest.mark.parametrize("body,headers,status", [
    (gzip.compress(b"a\n" * (MAX_BODY // 2 + 10)), {"Content-Type": "text/plain",
                                                    "Content-Encoding": "gzip"}, 413),  # a bomb
    (b"x" * (MAX_BODY + 1), {"Content-Type": "text/plain"}, 413),
    (zlib.compress(b"abc"), {"Content-Type": "text/plain", "Content-Encoding": "gzip"}, 400),
    (b"\xc2\xa0\n\xe3\x80\x80", {"Content-Type": "text/plain"}, 400),  # unicode blanks only
    (b'{"message": "m", "timestamp": "0001-01-01T00:00:00+01:00"}',
     {"Content-Type": "application/json"}, 422),  # an instant before year 1
    (b'{"msg": "a\\ud800b"}', {"Content-Type": "text/plain"}, 202),  # a JSON escape of a surrogate
    (b"x" * (MAX_LINE * 3), {"Content-Type": "text/plain"}, 202),  # over max_line_length: kept
])
def test_ingest_edge_cases(ingest_client, body, headers, status):
    assert post_and_check(ingest_client, body, headers) == status


def test_an_overlong_line_is_stored_truncated_and_flagged(ingest_client):
    word = "overlongsentinel"
    post_and_check(ingest_client, (word + " " + "y" * (MAX_LINE * 2)).encode(),
                   {"Content-Type": "text/plain"})
    deadline = time.monotonic() + 20
    while not (res := ingest_client.get("/api/events", params={"q": word}).json())["events"]:
        assert time.monotonic() < deadline, "the overlong line was not stored"
        time.sleep(0.05)
    [event] = res["events"]
    assert event["truncated"] is True
    assert len(event["message"]) <= MAX_LINE


QUERY_PARAMS = {
    "/api/events": ["q", "host", "level", "template", "anomaly", "since", "until", "after",
                    "limit"],
    "/api/stats": ["since", "until", "windows", "top"],
    "/api/templates": ["limit", "sort", "since"],
}
query_value = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.sampled_from([
        "", "0", "-1", "1", "1000", "1001", "1e400", "nan", "inf", "-inf", "true", "null", "15m",
        "0.5h", "9" * 30 + "w", "2024-02-30", "2024-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59.999999-01:00", "2024-01-01T25:00:00", '"', '""', "AND", "OR NOT",
        "NEAR(a b", "a*", "^a", "message:x", "{a b}", "(", ")", "-", "+a", "a'b", "%", "\x00",
    ]),
)


def test_queries_take_arbitrary_parameters(ingest_client):
    """The query API with any parameter values (full-text syntax, times, numbers): 200 or a 4xx
    that says what is wrong, never a 5xx, a hang, or an injection into the store's syntax."""
    @budget(EXAMPLES * 3)
    @given(data=st.data(), path=st.sampled_from(sorted(QUERY_PARAMS)))
    def run(data, path):
        names = data.draw(st.lists(st.sampled_from(QUERY_PARAMS[path]), unique=True, max_size=4))
        params = {n: data.draw(query_value, label=n) for n in names}
        t0 = time.monotonic()
        response = ingest_client.get(path, params=params)
        elapsed = time.monotonic() - t0
        STATS["requests"] += 1
        label = f"GET {path} (hypothesis)"
        STATS["by_operation"][label] = STATS["by_operation"].get(label, 0) + 1
        code = str(response.status_code)
        STATS["by_status"][code] = STATS["by_status"].get(code, 0) + 1
        where = f"GET {path} {params}"
        assert response.status_code < 500, f"{response.status_code} on {where}: {response.text}"
        assert elapsed < MAX_RESPONSE_SECONDS, f"{elapsed:.2f}s on {where}"
        if response.status_code != 200:
            problem = error_body_problem(path, response.status_code,
                                         response.headers.get("content-type", ""),
                                         response.content)
            assert problem is None, f"{problem} on {where}"

    post_and_check(ingest_client, b"some stored text to search 10.0.0.1 port 22\nmore text 42",
                   {"Content-Type": "text/plain"})
    run()


@pytest.mark.parametrize("method,path,headers,status", [
    ("GET", "/no/such/path", {}, 404),
    ("DELETE", "/ingest", {}, 405),
    ("GET", "/api/events?limit=abc", {}, 422),
    ("GET", "/api/events?since=yesterday-ish", {}, 422),
    ("GET", f"/api/events?after={2**63}", {}, 422),  # beyond 64 bits: was a 500
    ("GET", f"/api/stream?after={2**64}", {}, 422),
    ("POST", "/ingest", {"Content-Type": "text/plain", "Content-Length": str(MAX_BODY + 1)}, 413),
])
def test_refusals_outside_the_schema_are_json(ingest_client, method, path, headers, status):
    body = b"x" if method == "POST" else None
    response = ingest_client.request(method, path, headers=headers, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert isinstance(doc.get("error"), str) and doc["error"] and doc.get("detail"), doc


# -- the receivers (Elasticsearch _bulk, Loki push, OTLP/HTTP) with arbitrary bodies ----------------
loki_json = st.builds(
    lambda streams: json.dumps({"streams": streams}, allow_nan=True),
    st.lists(st.fixed_dictionaries({
        "stream": st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=20), json_value),
                                  max_size=3),
        "values": st.lists(st.lists(st.one_of(st.text("0123456789", max_size=21), api_line,
                                              json_value), max_size=3), max_size=3),
    }), max_size=3))
otlp_json = st.builds(
    lambda attrs, records: json.dumps({"resourceLogs": [{
        "resource": {"attributes": attrs}, "scopeLogs": [{"logRecords": records}]}]},
        allow_nan=True),
    st.lists(st.fixed_dictionaries({"key": st.text(max_size=10),
                                    "value": st.one_of(json_value, st.builds(
                                        lambda v: {"stringValue": v}, api_line))}), max_size=3),
    st.lists(st.fixed_dictionaries({}, optional={
        "timeUnixNano": st.one_of(st.integers(), st.text("0123456789", max_size=25), json_value),
        "severityText": st.text(max_size=10),
        "severityNumber": st.one_of(st.integers(-5, 40), json_value),
        "body": st.one_of(st.builds(lambda v: {"stringValue": v}, api_line), json_value),
        "attributes": json_value,
    }), max_size=3))
RECEIVER_PATHS = ["/_bulk", "/logs-fuzz/_bulk", "/loki/api/v1/push", "/v1/logs"]
receiver_body = st.one_of(
    st.binary(max_size=1500),
    otlp_protobuf(),
    BULK_BODY,
    loki_json.map(lambda t: t.encode("utf-8", "surrogatepass")),
    otlp_json.map(lambda t: t.encode("utf-8", "surrogatepass")),
)
receiver_type = st.one_of(st.sampled_from(
    ["application/json", "application/x-ndjson", "application/x-protobuf", "application/protobuf",
     "application/octet-stream", "text/plain", "",
     "application/vnd.elasticsearch+x-ndjson; compatible-with=8"]), header_text)


def test_receivers_take_arbitrary_bodies(ingest_client):
    """Each receiver, any body, any declared type and encoding: never a 5xx or a hang, every
    refusal says what is wrong in the protocol's error shape, the pipeline keeps going."""
    @budget(EXAMPLES * 3)
    @given(path=st.sampled_from(RECEIVER_PATHS), body=receiver_body, ctype=receiver_type,
           enc=st.sampled_from([None, "gzip", "snappy", "identity", "br"]), compress=st.booleans())
    def run(path, body, ctype, enc, compress):
        if compress:
            body = gzip.compress(body)
        post_and_check(ingest_client, body, _headers(ctype, enc), path=path)

    run()
    assert_pipeline_alive(ingest_client, "fuzzsentinelreceivers")


def test_refusals_match_the_schema_the_api_declares(ingest_client):
    """The schema declared FastAPI's default 422 body (``detail``: a list) while the API sends
    ``{"error", "detail", ...}``: Schemathesis' conformance checks (and /docs) saw a body the
    schema did not allow on every refused parameter. The declared 422 is the real one."""
    import jsonschema_rs

    raw = ingest_client.app.openapi()
    ref = raw["paths"]["/api/events"]["get"]["responses"]["422"]["content"][
        "application/json"]["schema"]["$ref"]
    schema = raw["components"]["schemas"][ref.rsplit("/", 1)[1]]
    validator = jsonschema_rs.validator_for(schema)
    for params in ({"after": 2**63}, {"since": "yesterday-ish"}, {"q": '"open'},
                   {"cursor": "not-a-cursor"}):
        r = ingest_client.get("/api/events", params=params)
        assert r.status_code == 422, (params, r.text)
        errors = [e.message for e in validator.iter_errors(r.json())]
        assert errors == [], (params, r.json(), errors)
