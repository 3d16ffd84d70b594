"""The layout's layers and the one direction imports point in (README, "Layout").

    streams/             pure core: parsing, templates, scoring, incidents, windows, alert rules
    streams/runtime/     runs the core: one stage, the embedded runner and shards, the Faust
                         worker, checkpoints and the state topic, alert delivery
    smartlogs/           the floor: settings, logs, metrics, security, API keys
    smartlogs/store/     stores: SQLite (embedded), Elasticsearch
    ingest_api/ bridge/  transports: receivers, the spool and RabbitMQ publisher, the bridge
    smartlogs/cli/, ingest_api/app.py and its routes, the console: the faces

A layer imports only from the layers listed for it here; the faces import anything. The core
does no I/O of its own: no files, sockets, threads or databases (checkpoints are bytes the
runtime writes; parsing's wall clock is a fallback for tools, never the pipeline's path).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLOOR = {"smartlogs", "smartlogs.settings", "smartlogs.metrics", "smartlogs.logs",
         "smartlogs.security", "smartlogs.urls", "smartlogs.auth"}
# ingest_api.openapi: what the schema says of refusals and times, declared by the receivers'
# routes (transports) as well as by the API's own (faces); it imports only FastAPI/pydantic
TRANSPORT_MODULES = {"ingest_api.transports", "ingest_api.publisher", "ingest_api.decode",
                     "ingest_api.timeouts", "ingest_api.onewrite", "ingest_api.pipeline_probe",
                     "ingest_api.openapi"}


def layer(module: str) -> str:
    if module.startswith("streams.runtime"):
        return "runtime"
    if module == "streams" or module.startswith("streams."):
        return "core"
    if module.startswith("smartlogs.store"):
        return "stores"
    if module.startswith("smartlogs.cli"):
        return "faces"
    if module in FLOOR:
        return "floor"
    if (module in TRANSPORT_MODULES or module.startswith("ingest_api.receivers")
            or module == "bridge" or module.startswith("bridge.")):
        return "transports"
    if module == "ingest_api" or module.startswith("ingest_api."):
        return "faces"
    raise AssertionError(f"{module}: in no layer; add it to tests/unit/test_layers.py")


ALLOWED = {
    "core": {"core"},
    "floor": {"floor", "core"},
    "stores": {"stores", "floor", "core"},
    "runtime": {"runtime", "stores", "floor", "core"},
    "transports": {"transports", "runtime", "stores", "floor", "core"},
    "faces": {"faces", "transports", "runtime", "stores", "floor", "core"},
}
# what the core may not import at all: I/O, concurrency, engines
CORE_FORBIDDEN = {"os", "io", "pathlib", "shutil", "tempfile", "sqlite3", "socket", "threading",
                  "asyncio", "subprocess", "multiprocessing", "httpx", "faust", "aiokafka",
                  "aio_pika", "elasticsearch", "fastapi", "starlette", "uvicorn"}
OURS = ("streams", "smartlogs", "ingest_api", "bridge")


def _modules() -> dict[str, Path]:
    out = {}
    for top in OURS:
        for path in (REPO / top).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if "proto" in parts:  # generated protobuf modules
                continue
            out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours an import names (``from a.b import c``: a.b.c when it is a module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module):
    mine = layer(module)
    wrong = []
    for imported in _imports(MODULES[module]):
        if imported.split(".")[0] in OURS:
            target = _resolve(imported, MODULES)
            if target is not None and layer(target) not in ALLOWED[mine]:
                wrong.append(f"{imported} ({layer(target)})")
        elif mine == "core" and imported.split(".")[0] in CORE_FORBIDDEN:
            wrong.append(f"{imported} (I/O in the core)")
    assert not wrong, f"{module} ({mine}) imports {', '.join(sorted(set(wrong)))}"


def test_every_layer_is_present():
    assert {layer(m) for m in MODULES} == set(ALLOWED)
