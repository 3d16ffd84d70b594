"""Provision Kibana for SmartLogs: no manual step between `docker compose up` and a live dashboard.

``smartlogs kibana-setup`` (the compose one-shot service ``kibana-setup``):

1. waits until Kibana answers ``GET /api/status`` with 200 (it answers 503 while it starts);
2. imports the saved objects of ``kibana/smartlogs.ndjson`` with
   ``POST /api/saved_objects/_import?overwrite=true`` (multipart, ``kbn-xsrf`` header): the data
   view ``logs`` on the sink's indices (time field ``@timestamp``), the "SmartLogs live"
   dashboard and the "SmartLogs anomalies" saved search. The objects have fixed ids, so a
   re-run overwrites them instead of adding copies;
3. makes ``logs`` the default data view (``POST /api/data_views/default``), so Discover opens on it.

With a non-default ``SMARTLOGS_ES_INDEX_PREFIX`` the data view's pattern follows the prefix.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import orjson
import typer

__all__ = [
    "DATA_VIEW_ID",
    "DEFAULT_OBJECTS",
    "KibanaSetupError",
    "import_saved_objects",
    "kibana_setup_command",
    "load_objects",
    "set_default_data_view",
    "setup_kibana",
    "wait_for_kibana",
]

DATA_VIEW_ID = "smartlogs-logs"
DASHBOARD_ID = "smartlogs-live"
_DEFAULT_PREFIX = "smartlogs-events"
_REPO_OBJECTS = Path(__file__).resolve().parents[1] / "kibana" / "smartlogs.ndjson"
DEFAULT_OBJECTS = _REPO_OBJECTS


class KibanaSetupError(RuntimeError):
    """Kibana could not be provisioned; the message says why."""


def _find_objects(path: Path | None) -> Path:
    candidates = [path] if path else [
        Path(os.environ["SMARTLOGS_KIBANA_OBJECTS"]) if os.environ.get("SMARTLOGS_KIBANA_OBJECTS") else None,
        _REPO_OBJECTS, Path.cwd() / "kibana" / "smartlogs.ndjson", Path("/kibana/smartlogs.ndjson")]
    for p in candidates:
        if p is not None and p.is_file():
            return p
    tried = ", ".join(str(p) for p in candidates if p is not None)
    raise KibanaSetupError(f"saved objects not found (tried {tried}); pass --objects PATH")


def load_objects(path: Path | None = None, *, index_prefix: str | None = None) -> list[dict]:
    """The saved objects, one dict per NDJSON line; the data view follows ``index_prefix``."""
    objects = []
    src = _find_objects(path)
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            objects.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise KibanaSetupError(f"{src}:{n}: not JSON ({exc})") from exc
    if index_prefix and index_prefix != _DEFAULT_PREFIX:
        for obj in objects:
            if obj.get("type") == "index-pattern" and obj.get("id") == DATA_VIEW_ID:
                obj["attributes"]["title"] = f"{index_prefix}-*"
    return objects


def _client(kibana_url: str, *, username: str | None, password: str | None,
            api_key: str | None, timeout: float) -> httpx.Client:
    headers = {"kbn-xsrf": "smartlogs", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    auth = (username, password or "") if username else None
    return httpx.Client(base_url=kibana_url.rstrip("/"), headers=headers, auth=auth, timeout=timeout)


def _space(path: str, space: str | None) -> str:
    return f"/s/{space}{path}" if space and space != "default" else path


def wait_for_kibana(client: httpx.Client, *, timeout: float = 300.0, interval: float = 2.0,
                    log: Callable[[str], None] = lambda _: None) -> dict:
    """Poll ``GET /api/status`` until it answers 200; return its body."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    announced = False
    while True:
        try:
            r = client.get("/api/status")
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    return {}
            if r.status_code in (401, 403):
                raise KibanaSetupError(f"Kibana refused the credentials ({r.status_code}): "
                                       "set --username/--password or --api-key")
            last = f"HTTP {r.status_code}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise KibanaSetupError(f"Kibana at {client.base_url} not ready after {timeout:g} s ({last})")
        if not announced:
            log(f"waiting for Kibana at {client.base_url} ({last})")
            announced = True
        time.sleep(interval)


def _retrying(what: str, fn: Callable[[], httpx.Response], *, attempts: int = 5,
              delay: float = 2.0) -> httpx.Response:
    """Kibana may still be finishing its start-up after /api/status said 200: retry 5xx and
    connection errors a few times; 4xx answers are final."""
    for attempt in range(1, attempts + 1):
        try:
            r = fn()
            if r.status_code < 500 or attempt == attempts:
                return r
        except httpx.TransportError as exc:
            if attempt == attempts:
                raise KibanaSetupError(f"{what}: {type(exc).__name__}: {exc}") from exc
        time.sleep(delay * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    return str(body.get("message") or body.get("error") or body)[:500]


def import_saved_objects(client: httpx.Client, objects: list[dict], *, space: str | None = None,
                         retry_delay: float = 2.0) -> dict:
    """``POST /api/saved_objects/_import?overwrite=true`` with the objects as an NDJSON file."""
    body = b"".join(orjson.dumps(o) + b"\n" for o in objects)

    def post() -> httpx.Response:
        files = {"file": ("smartlogs.ndjson", io.BytesIO(body), "application/ndjson")}
        return client.post(_space("/api/saved_objects/_import", space), params={"overwrite": "true"},
                           files=files)

    r = _retrying("import saved objects", post, delay=retry_delay)
    if r.status_code != 200:
        raise KibanaSetupError(f"saved-objects import answered {r.status_code}: {_detail(r)}")
    result = r.json()
    if not result.get("success"):
        errors = "; ".join(
            f"{e.get('type')}/{e.get('id')}: {(e.get('error') or {}).get('type')}"
            f" {(e.get('error') or {}).get('message') or ''}".rstrip()
            for e in result.get("errors") or [])
        raise KibanaSetupError(f"saved-objects import failed: {errors or result}")
    return result


def set_default_data_view(client: httpx.Client, data_view_id: str = DATA_VIEW_ID, *,
                          space: str | None = None, retry_delay: float = 2.0) -> None:
    r = _retrying("set the default data view", lambda: client.post(
        _space("/api/data_views/default", space), json={"data_view_id": data_view_id, "force": True}),
        delay=retry_delay)
    if r.status_code != 200:
        raise KibanaSetupError(f"setting the default data view answered {r.status_code}: {_detail(r)}")


def _check_url(url: str) -> None:
    from smartlogs.urls import http_url_problem

    problem = http_url_problem(url, "--kibana-url", "http://127.0.0.1:5601")
    if problem:
        raise KibanaSetupError(problem)


def setup_kibana(kibana_url: str, *, objects_path: Path | None = None, index_prefix: str | None = None,
                 timeout: float = 300.0, interval: float = 2.0, space: str | None = None,
                 default_data_view: bool = True, username: str | None = None,
                 password: str | None = None, api_key: str | None = None,
                 log: Callable[[str], None] = lambda _: None) -> dict:
    """Wait for Kibana, import the saved objects (overwrite), set the default data view.
    Idempotent. Returns the import result (``successCount``, ``successResults``)."""
    _check_url(kibana_url)
    objects = load_objects(objects_path, index_prefix=index_prefix)
    with _client(kibana_url, username=username, password=password, api_key=api_key,
                 timeout=30.0) as client:
        status = wait_for_kibana(client, timeout=timeout, interval=interval, log=log)
        version = ((status.get("version") or {}).get("number")) or "?"
        log(f"Kibana {version} is up at {client.base_url}")
        result = import_saved_objects(client, objects, space=space, retry_delay=interval)
        log(f"imported {result.get('successCount', 0)} saved object(s) (overwrite)")
        if default_data_view:
            set_default_data_view(client, DATA_VIEW_ID, space=space, retry_delay=interval)
            log(f"default data view: {DATA_VIEW_ID}")
    return result


def kibana_setup_command(
    kibana_url: Annotated[str, typer.Option(
        "--kibana-url", envvar="SMARTLOGS_KIBANA_URL", help="Kibana's base URL.")] = "http://127.0.0.1:5601",
    objects: Annotated[Path | None, typer.Option(
        "--objects", envvar="SMARTLOGS_KIBANA_OBJECTS", dir_okay=False,
        help="Saved objects to import (default: kibana/smartlogs.ndjson).")] = None,
    index_prefix: Annotated[str, typer.Option(
        "--index-prefix", envvar="SMARTLOGS_ES_INDEX_PREFIX",
        help="The sink's index prefix; the data view covers <prefix>-*.")] = _DEFAULT_PREFIX,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Kibana to come up.")] = 300.0,
    space: Annotated[str | None, typer.Option(
        envvar="SMARTLOGS_KIBANA_SPACE", help="Kibana space (default: the default space).")] = None,
    default_data_view: Annotated[bool, typer.Option(
        "--default-data-view/--no-default-data-view",
        help="Make 'logs' Kibana's default data view.")] = True,
    username: Annotated[str | None, typer.Option(
        envvar="SMARTLOGS_KIBANA_USERNAME", help="Basic auth, when Kibana has security on.")] = None,
    password: Annotated[str | None, typer.Option(
        envvar="SMARTLOGS_KIBANA_PASSWORD", help="Basic auth password.")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="SMARTLOGS_KIBANA_API_KEY", help="Kibana API key (instead of a password).")] = None,
) -> None:
    """Provision Kibana: data view 'logs', the 'SmartLogs live' dashboard, the anomalies search.

    Waits for Kibana, then imports kibana/smartlogs.ndjson through the saved-objects API with
    overwrite=true: running it again updates the objects, never duplicates them.
    """
    from rich.console import Console
    from rich.markup import escape

    out, err = Console(), Console(stderr=True)
    try:
        setup_kibana(kibana_url, objects_path=objects, index_prefix=index_prefix, timeout=timeout,
                     space=space, default_data_view=default_data_view, username=username,
                     password=password, api_key=api_key, log=lambda m: out.print(escape(m)))
    except KibanaSetupError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1)
    base = kibana_url.rstrip("/") + (f"/s/{space}" if space and space != "default" else "")
    out.print(f"[green]Kibana is ready:[/] {base}/app/dashboards#/view/{DASHBOARD_ID}")
