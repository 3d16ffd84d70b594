"""Kibana provisioning, checked without Kibana (it cannot run on these machines).

- kibana/smartlogs.ndjson parses, its objects are complete and their references resolve;
- every field the objects use exists in the Elasticsearch sink's real mapping
  (``smartlogs.store.elasticsearch.index_template``) with a type that fits the use;
- the data view's pattern is the sink's index pattern and matches the indices it writes;
- ``smartlogs kibana-setup`` sends the right requests to a stand-in Kibana that records them,
  waits while Kibana is starting, reports failures, and a re-run overwrites, never duplicates.
"""

from __future__ import annotations

import email.parser
import email.policy
import fnmatch
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from smartlogs.cli.kibana import (
    DATA_VIEW_ID,
    KibanaSetupError,
    kibana_setup_command,
    load_objects,
    setup_kibana,
)
from smartlogs.settings import Settings
from smartlogs.store.elasticsearch import index_template

NDJSON = Path(__file__).resolve().parents[2] / "kibana" / "smartlogs.ndjson"

NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float",
           "unsigned_long"}
AGGREGATABLE = NUMERIC | {"keyword", "boolean", "date", "date_nanos", "ip", "constant_keyword"}


# -- the objects ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def objects() -> list[dict]:
    out = []
    for n, line in enumerate(NDJSON.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"line {n} is blank"
        out.append(json.loads(line))
    return out


def _by_type(objects: list[dict], typ: str) -> list[dict]:
    return [o for o in objects if o["type"] == typ]


def _one(objects, typ, **attrs) -> dict:
    found = [o for o in _by_type(objects, typ)
             if all(o["attributes"].get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, f"expected one {typ} with {attrs}, found {len(found)}"
    return found[0]


def _lens_layers(obj: dict) -> dict:
    return obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]


def test_ndjson_parses_and_every_object_is_complete(objects):
    keys = [(o["type"], o["id"]) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate (type, id)"
    for o in objects:
        assert set(o) >= {"id", "type", "attributes", "references"}
        assert re.fullmatch(r"[a-z0-9-]+", o["id"]), "fixed, readable ids (re-imports overwrite them)"
        assert re.fullmatch(r"\d+\.\d+\.\d+", o["typeMigrationVersion"])
        assert o["coreMigrationVersion"] == "8.8.0"
        # nested JSON strings are JSON too
        attrs = o["attributes"]
        for key in ("panelsJSON", "optionsJSON", "fieldFormatMap", "fieldAttrs", "fields",
                    "runtimeFieldMap", "sourceFilters"):
            if key in attrs:
                json.loads(attrs[key])
        if "kibanaSavedObjectMeta" in attrs:
            json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
        # every reference points at an object of the right type in this file
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in keys, f"{o['id']}: dangling reference {ref}"

    dv = _one(objects, "index-pattern", name="logs")
    assert dv["id"] == DATA_VIEW_ID
    assert dv["attributes"]["timeFieldName"] == "@timestamp"

    search = _one(objects, "search", title="SmartLogs anomalies")
    src = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert src["query"] == {"query": "anomaly : true", "language": "kuery"}
    assert {"reason", "score", "message"} <= set(search["attributes"]["columns"])
    assert search["attributes"]["sort"] == [["@timestamp", "desc"]]
    assert {r["name"]: r["id"] for r in search["references"]} == {src["indexRefName"]: DATA_VIEW_ID}

    for lens in _by_type(objects, "lens"):
        refs = {r["name"]: r for r in lens["references"]}
        for layer_id, layer in _lens_layers(lens).items():
            assert refs[f"indexpattern-datasource-layer-{layer_id}"]["id"] == DATA_VIEW_ID
            assert sorted(layer["columnOrder"]) == sorted(layer["columns"])
        vis = lens["attributes"]["state"]["visualization"]
        cols = {c for layer in _lens_layers(lens).values() for c in layer["columns"]}
        if lens["attributes"]["visualizationType"] == "lnsXY":
            for layer in vis["layers"]:
                used = [*layer["accessors"], layer.get("xAccessor"), layer.get("splitAccessor")]
                assert {u for u in used if u} <= cols
                assert layer["layerId"] in _lens_layers(lens)
        elif lens["attributes"]["visualizationType"] == "lnsDatatable":
            assert {c["columnId"] for c in vis["columns"]} == cols
        else:
            pytest.fail(f"unexpected Lens type {lens['attributes']['visualizationType']}")


def test_dashboard_is_a_live_view_with_every_required_panel(objects):
    dash = _one(objects, "dashboard", title="SmartLogs live")
    a = dash["attributes"]
    assert a["timeRestore"] is True and a["timeFrom"] == "now-15m" and a["timeTo"] == "now"
    assert a["refreshInterval"]["pause"] is False and 0 < a["refreshInterval"]["value"] <= 10_000
    panels = json.loads(a["panelsJSON"])
    refs = {r["name"]: r for r in dash["references"]}
    by_id = {(o["type"], o["id"]): o for o in objects}
    shown = []
    for p in panels:
        ref = refs[f"{p['panelIndex']}:{p['panelRefName']}"]
        assert ref["type"] == p["type"]
        g = p["gridData"]
        assert g["i"] == p["panelIndex"] and 0 <= g["x"] and g["x"] + g["w"] <= 48
        shown.append(by_id[(ref["type"], ref["id"])])
    assert len({p["panelIndex"] for p in panels}) == len(panels)

    def columns(o):
        return [c for layer in _lens_layers(o).values() for c in layer["columns"].values()]

    def has(o, op, field=None, kql=None):
        return any(c["operationType"] == op and (field is None or c.get("sourceField") == field)
                   and (kql is None or (c.get("filter") or {}).get("query") == kql) for c in columns(o))

    lenses = [o for o in shown if o["type"] == "lens"]
    # volume by level over time
    assert any(has(o, "date_histogram", "@timestamp") and has(o, "terms", "level") and has(o, "count")
               for o in lenses)
    # anomaly score and anomaly count over time
    assert any(has(o, "date_histogram", "@timestamp") and has(o, "max", "score")
               and has(o, "count", kql="anomaly : true") for o in lenses)
    # top templates, hosts, components
    for field in ("template_id", "host", "component"):
        assert any(has(o, "terms", field) for o in lenses), f"no top-{field} panel"
    # the latest anomalies with their reasons
    assert any(o["type"] == "search" and o["attributes"]["title"] == "SmartLogs anomalies" for o in shown)


# -- fields against the sink's mapping ----------------------------------------------------------
def _mapping() -> dict:
    return index_template(Settings().es_index_prefix)["template"]["mappings"]


def _searchable(mapping: dict, name: str) -> bool:
    """A KQL query on the field works: it is indexed (fields kept only for display are not)."""
    node = mapping["properties"].get(name.partition(".")[0], {})
    return node.get("index", True) is not False


def _field_type(mapping: dict, name: str) -> str | None:
    """'message.keyword' → the type of the sub-field; None when the sink does not map it."""
    props = mapping["properties"]
    if name in props:
        return props[name].get("type", "object")
    head, _, sub = name.partition(".")
    if sub and head in props:
        node = props[head]
        if sub in node.get("fields", {}):
            return node["fields"][sub]["type"]
        if node.get("type") == "flattened":
            return "keyword"  # flattened sub-keys are keyword-like
        if sub in node.get("properties", {}):
            return node["properties"][sub].get("type", "object")
    return None


_KQL_FIELD = re.compile(r"(?<![\w.@])([@\w][\w.@]*)\s*:")


def _kql_fields(query: str) -> list[str]:
    return _KQL_FIELD.findall(query or "")


def _field_uses(objects: list[dict]) -> list[tuple[str, str, str]]:
    """(object id, field, what the use needs: date | numeric | aggregatable | mapped | boolean)."""
    uses = []
    for o in objects:
        a = o["attributes"]
        if o["type"] == "index-pattern":
            uses.append((o["id"], a["timeFieldName"], "date"))
            for field, fmt in json.loads(a.get("fieldFormatMap") or "{}").items():
                uses.append((o["id"], field, "numeric" if fmt["id"] == "number" else "mapped"))
            for field in json.loads(a.get("fieldAttrs") or "{}"):
                uses.append((o["id"], field, "mapped"))
        elif o["type"] == "search":
            for col in a["columns"]:
                uses.append((o["id"], col, "mapped"))
            for field, _ in a["sort"]:
                uses.append((o["id"], field, "aggregatable"))
            src = json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])
            for field in _kql_fields(src["query"]["query"]):
                uses.append((o["id"], field, "searchable"))
        elif o["type"] == "lens":
            st = a["state"]
            for field in _kql_fields(st["query"]["query"]):
                uses.append((o["id"], field, "searchable"))
            for layer in st["datasourceStates"]["formBased"]["layers"].values():
                for col in layer["columns"].values():
                    op, field = col["operationType"], col.get("sourceField")
                    need = {"date_histogram": "date", "terms": "aggregatable", "max": "numeric",
                            "min": "numeric", "average": "numeric", "sum": "numeric",
                            "median": "numeric", "unique_count": "aggregatable",
                            "last_value": "aggregatable", "count": None}[op]
                    if need and field != "___records___":
                        uses.append((o["id"], field, need))
                    if op == "last_value":
                        uses.append((o["id"], col["params"]["sortField"], "date"))
                    for f in _kql_fields((col.get("filter") or {}).get("query", "")):
                        uses.append((o["id"], f, "searchable"))
    return uses


def test_every_field_the_objects_use_is_in_the_sink_mapping_with_a_fitting_type(objects):
    mapping = _mapping()
    assert mapping.get("dynamic") in (False, "false", "strict"), \
        "with a dynamic mapping a typo'd field would silently be created instead of failing here"
    uses = _field_uses(objects)
    # the extraction really walked the objects
    assert {f for _, f, _ in uses} >= {"@timestamp", "level", "score", "anomaly", "template_id",
                                        "template", "host", "component", "reason", "message"}
    problems = []
    for oid, field, need in uses:
        typ = _field_type(mapping, field)
        ok = typ is not None and (
            need == "mapped"
            or (need == "searchable" and _searchable(mapping, field))
            or (need == "date" and typ in ("date", "date_nanos"))
            or (need == "numeric" and typ in NUMERIC)
            or (need == "aggregatable" and typ in AGGREGATABLE))
        if not ok:
            problems.append(f"{oid}: {field!r} is {typ or 'not mapped'}, needs {need}")
    assert not problems, "\n".join(problems)
    # the KQL filters compare with booleans where the sink has booleans
    assert _field_type(mapping, "anomaly") == "boolean"


def test_fields_check_catches_a_wrong_field():
    """The check above is not vacuous: an unknown field and a text field in a terms are caught."""
    mapping = _mapping()
    assert _field_type(mapping, "hostname") is None
    assert _field_type(mapping, "message") == "text" and "text" not in AGGREGATABLE
    assert _field_type(mapping, "message.keyword") is None  # schema 4: not indexed twice
    assert not _searchable(mapping, "message") and _searchable(mapping, "words")
    assert _field_type(mapping, "reason.keyword") == "keyword"
    assert _kql_fields('anomaly : true and host:"web 1" or @timestamp >= now') == ["anomaly", "host"]


def test_data_view_pattern_is_the_sink_index_pattern_and_matches_its_indices(objects):
    from smartlogs.store.elasticsearch import ElasticsearchStore

    title = _one(objects, "index-pattern", name="logs")["attributes"]["title"]
    prefix = Settings().es_index_prefix
    assert index_template(prefix)["index_patterns"] == [title]
    store = ElasticsearchStore("http://127.0.0.1:9", index_prefix=prefix)  # no request is made
    try:
        assert store.pattern == title
        for ts in (0.0, 1_118_762_161.0, 1_800_000_000.5):  # 1970, a 2005 loghub line, 2027
            event = {"id": "e1", "ts": ts, "received": ts, "message": "m", "anomaly": False}
            index = store._prepare(event, 1, 0).index
            assert fnmatch.fnmatchcase(index, title), (index, title)
            assert re.fullmatch(re.escape(prefix) + r"-\d{4}\.\d{2}\.\d{2}", index)
    finally:
        store.close()
    assert not fnmatch.fnmatchcase(".kibana_8.19.3_001", title)
    # a custom prefix moves the data view with it
    custom = {o["id"]: o for o in load_objects(NDJSON, index_prefix="acme-logs")}
    assert custom[DATA_VIEW_ID]["attributes"]["title"] == "acme-logs-*"
    assert index_template("acme-logs")["index_patterns"] == ["acme-logs-*"]


# -- the setup step against a stand-in Kibana ---------------------------------------------------
class FakeKibana:
    """Records every request; answers like Kibana 8.19 (503 while starting, then 200)."""

    def __init__(self, *, starting_polls: int = 2, import_result: dict | None = None,
                 always_starting: bool = False):
        self.requests: list[dict] = []
        self.saved: dict[tuple[str, str], dict] = {}  # what an import with overwrite leaves
        self.starting_polls = starting_polls
        self.always_starting = always_starting
        self.import_result = import_result
        self.default_data_view = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = {"method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                       "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                fake.requests.append(req)
                status, answer = fake.route(req)
                self._answer(status, answer)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def route(self, req: dict) -> tuple[int, dict]:
        path = re.sub(r"^/s/[^/]+", "", req["path"])
        if req["method"] == "GET" and path == "/api/status":
            polls = sum(1 for r in self.requests if r["path"].endswith("/api/status"))
            if self.always_starting or polls <= self.starting_polls:
                return 503, {"statusCode": 503, "error": "Service Unavailable",
                             "message": "Kibana server is not ready yet"}
            return 200, {"version": {"number": "8.19.3"}, "status": {"overall": {"level": "available"}}}
        if req["method"] == "POST" and path == "/api/saved_objects/_import":
            if "kbn-xsrf" not in req["headers"]:
                return 400, {"statusCode": 400, "error": "Bad Request",
                             "message": "Request must contain a kbn-xsrf header."}
            objects = [json.loads(line) for line in _multipart_file(req)["content"].splitlines() if line]
            if self.import_result is not None:
                return 200, self.import_result
            overwrite = req["query"].get("overwrite") == ["true"]
            errors = [{"type": o["type"], "id": o["id"], "error": {"type": "conflict"}}
                      for o in objects if (o["type"], o["id"]) in self.saved and not overwrite]
            if errors:
                return 200, {"success": False, "successCount": 0, "errors": errors}
            for o in objects:
                self.saved[(o["type"], o["id"])] = o
            return 200, {"success": True, "successCount": len(objects), "warnings": [],
                         "successResults": [{"type": o["type"], "id": o["id"]} for o in objects]}
        if req["method"] == "POST" and path == "/api/data_views/default":
            self.default_data_view = json.loads(req["body"])
            return 200, {"acknowledged": True}
        return 404, {"statusCode": 404, "error": "Not Found", "message": "Not Found"}


def _multipart_file(req: dict) -> dict:
    ctype = req["headers"]["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req["body"])
    parts = list(msg.iter_parts())
    assert len(parts) == 1
    part = parts[0]
    return {"name": part.get_param("name", header="content-disposition"),
            "filename": part.get_filename(), "content": part.get_payload(decode=True).decode()}


def _calls(fake: FakeKibana, path_end: str) -> list[dict]:
    return [r for r in fake.requests if r["path"].endswith(path_end)]


def test_setup_waits_imports_with_overwrite_and_sets_the_default_data_view(objects):
    log: list[str] = []
    with FakeKibana(starting_polls=2) as kb:
        result = setup_kibana(kb.url, objects_path=NDJSON, timeout=10, interval=0.05, log=log.append)
        assert result["success"] is True and result["successCount"] == len(objects)
        # waited through the 503s, and imported only once Kibana was up
        status = _calls(kb, "/api/status")
        assert len(status) == 3 and all(r["method"] == "GET" for r in status)
        first_import = kb.requests.index(_calls(kb, "/_import")[0])
        assert first_import == 3
        (imp,) = _calls(kb, "/api/saved_objects/_import")
        assert imp["method"] == "POST" and imp["query"] == {"overwrite": ["true"]}
        assert imp["headers"]["kbn-xsrf"]
        part = _multipart_file(imp)
        assert part["name"] == "file" and part["filename"].endswith(".ndjson")
        sent = [json.loads(line) for line in part["content"].splitlines()]
        assert sent == objects  # exactly the repository's objects, in order
        (dflt,) = _calls(kb, "/api/data_views/default")
        assert dflt["headers"]["kbn-xsrf"] and kb.default_data_view == {"data_view_id": DATA_VIEW_ID,
                                                                        "force": True}
        assert sorted(kb.saved) == sorted((o["type"], o["id"]) for o in objects)
        assert any("waiting for Kibana" in m for m in log) and any("8.19.3" in m for m in log)

        # a second run: same requests, the same objects overwritten, nothing added
        before = dict(kb.saved)
        setup_kibana(kb.url, objects_path=NDJSON, timeout=10, interval=0.05)
        imports = _calls(kb, "/api/saved_objects/_import")
        assert len(imports) == 2 and imports[1]["query"] == {"overwrite": ["true"]}
        assert _multipart_file(imports[1])["content"] == part["content"]
        assert kb.saved == before


def test_without_overwrite_a_rerun_would_conflict_so_overwrite_matters(objects):
    """The stand-in behaves like Kibana: the same ids imported again without overwrite conflict."""
    import httpx

    with FakeKibana(starting_polls=0) as kb:
        setup_kibana(kb.url, objects_path=NDJSON, timeout=5, interval=0.05)
        body = NDJSON.read_bytes()
        r = httpx.post(f"{kb.url}/api/saved_objects/_import", headers={"kbn-xsrf": "t"},
                       files={"file": ("x.ndjson", body, "application/ndjson")})
        assert r.json()["success"] is False and len(r.json()["errors"]) == len(objects)


def test_setup_reports_import_errors_and_a_kibana_that_never_comes_up():
    bad = {"success": False, "successCount": 0, "errors": [
        {"type": "lens", "id": "smartlogs-top-hosts",
         "error": {"type": "missing_references", "message": "index-pattern [x] not found"}}]}
    with FakeKibana(starting_polls=0, import_result=bad) as kb:
        with pytest.raises(KibanaSetupError, match="lens/smartlogs-top-hosts: missing_references"):
            setup_kibana(kb.url, objects_path=NDJSON, timeout=5, interval=0.05)
        assert not _calls(kb, "/api/data_views/default")
    with FakeKibana(always_starting=True) as kb:
        with pytest.raises(KibanaSetupError, match=r"not ready after .* \(HTTP 503\)"):
            setup_kibana(kb.url, objects_path=NDJSON, timeout=0.3, interval=0.05)
        assert not _calls(kb, "/_import")
    with pytest.raises(KibanaSetupError, match="not ready"):  # nothing listening at all
        setup_kibana("http://127.0.0.1:9", objects_path=NDJSON, timeout=0.2, interval=0.05)


@pytest.mark.parametrize("url", ["not-a-url", "ftp://kibana:5601", "http://", "http://[::1"])
def test_a_url_that_can_never_answer_is_refused_at_once(url):
    import time

    t0 = time.monotonic()
    with pytest.raises(KibanaSetupError, match="--kibana-url .*expected e.g. http://127.0.0.1:5601"):
        setup_kibana(url, objects_path=NDJSON, timeout=30, interval=0.05)
    assert time.monotonic() - t0 < 5  # not after waiting out the timeout


def test_command_line_entry_point_with_space_and_custom_prefix(tmp_path):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("kibana-setup")(kibana_setup_command)
    app.command("noop")(lambda: None)  # two commands: `kibana-setup` stays a named sub-command
    runner = CliRunner()
    with FakeKibana(starting_polls=0) as kb:
        res = runner.invoke(app, ["kibana-setup", "--kibana-url", kb.url, "--timeout", "5",
                                  "--space", "ops", "--index-prefix", "acme-logs"])
        assert res.exit_code == 0, res.output
        assert f"{kb.url}/s/ops/app/dashboards#/view/smartlogs-live" in res.output
        (imp,) = _calls(kb, "/_import")
        assert imp["path"] == "/s/ops/api/saved_objects/_import"
        sent = {o["id"]: o for o in map(json.loads, _multipart_file(imp)["content"].splitlines())}
        assert sent[DATA_VIEW_ID]["attributes"]["title"] == "acme-logs-*"
        assert _calls(kb, "/api/data_views/default")[0]["path"] == "/s/ops/api/data_views/default"

    broken = tmp_path / "broken.ndjson"
    broken.write_text('{"id": "x"\n')
    res = runner.invoke(app, ["kibana-setup", "--kibana-url", "http://127.0.0.1:9", "--objects", str(broken)])
    assert res.exit_code == 1 and "not JSON" in res.output
