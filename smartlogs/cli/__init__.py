"""The ``smartlogs`` command line: run the platform, replay files, search, tail, stats."""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from smartlogs import __version__
from smartlogs.logs import configure_logging



def _wrap_long_help_values() -> None:
    """typer renders an option's env var and default as rich Text items that inherit the
    table's "ellipsis" overflow, so at 80 columns ``SMARTLOGS_BRIDGE_METRICS_URL`` or a long
    default URL ended in "…": the one thing a reader copies from --help. Fold them instead.
    (typer internals: if they change, --help keeps typer's own layout.)"""
    from rich.text import Text
    from typer import rich_utils

    build = getattr(rich_utils, "_get_parameter_help", None)
    if build is None or getattr(build, "_smartlogs_folds", False):
        return

    def folding(*args, **kwargs):
        columns = build(*args, **kwargs)
        for item in getattr(columns, "renderables", ()):
            if isinstance(item, Text):
                item.overflow = "fold"
        return columns

    folding._smartlogs_folds = True  # type: ignore[attr-defined]
    rich_utils._get_parameter_help = folding


_wrap_long_help_values()

app = typer.Typer(
    help="SmartLogs: real-time log ingest, template mining, online anomaly detection and search.\n\n"
         "Start with `smartlogs up`, then `smartlogs replay FILE` in another terminal.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Sample datasets (loghub).", no_args_is_help=True)
app.add_typer(data_app, name="data")
keys_app = typer.Typer(help="API keys: create, list, revoke (stored hashed in DATA_DIR/keys.db).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="SMARTLOGS_URL",
                                     help="Base URL of a running SmartLogs API.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def _fail(msg: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _auth_headers() -> dict[str, str]:
    """SMARTLOGS_API_KEY, when set, goes with every request the CLI makes."""
    key = os.environ.get("SMARTLOGS_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _stream_header(name: str) -> dict[str, str]:
    """X-SmartLogs-Stream: the source the lines come from (HTTP headers are Latin-1)."""
    safe = name.encode("latin-1", "replace").decode("latin-1")
    return {"X-SmartLogs-Stream": safe}


def _get(url: str, path: str, params: dict) -> dict:
    params = {k: v for k, v in params.items() if v is not None}
    try:
        r = httpx.get(f"{url.rstrip('/')}{path}", params=params, timeout=30, headers=_auth_headers())
    except httpx.TransportError as exc:
        from smartlogs.security import redact

        _fail(escape(redact(f"cannot reach SmartLogs at {url} ({exc}). Is `smartlogs up` running?")), 2)
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        _fail(f"{path} answered {r.status_code}: {detail}")
    return r.json()


def _probe(url: str) -> None:
    """Before a long send: fail when nothing answers at ``url``; only warn when it answers that
    a dependency is down (503), since batches it cannot take yet are retried anyway."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/healthz", timeout=30, headers=_auth_headers())
    except httpx.TransportError:
        _get(url, "/healthz", {})  # the same clear error as every other verb
        return
    if r.status_code == 503:
        try:
            body = r.json()
        except ValueError:
            body = {}
        down = [k for k, v in body.items() if isinstance(v, dict) and v.get("reachable") is False]
        err.print(f"[yellow]warning:[/] SmartLogs at {url} reports it is not fully up"
                  f"{' (' + ', '.join(down) + ' down)' if down else ''}; sending anyway: "
                  "batches it cannot take now are retried")
    elif r.status_code >= 400:
        _get(url, "/healthz", {})


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"smartlogs {__version__}")


def _print_version(value: bool) -> None:
    if value:
        console.print(f"smartlogs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="Print the version and exit.")] = False,
) -> None:
    """SmartLogs: real-time log ingest, template mining, online anomaly detection and search.

    Start with `smartlogs up`, then `smartlogs replay FILE` in another terminal.
    """


@app.command()
def up(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default 127.0.0.1, env SMARTLOGS_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8000, env SMARTLOGS_PORT).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the store and checkpoints live (default ./var, env SMARTLOGS_DATA_DIR).")] = None,
    log_level: LogLevelOpt = "info",
    insecure: InsecureOpt = False,
) -> None:
    """Run the embedded platform: the API process and its shard processes (the stream
    pipeline, SMARTLOGS_SHARDS: one per core by default), over one SQLite store.

    No Docker and no external engines: events go through an on-disk spool into the same
    pipeline the Kafka worker runs, and are stored in SQLite with full-text search.
    """
    import uvicorn

    from ingest_api.app import create_app
    from ingest_api.timeouts import http_protocol

    settings = _settings_from(host, port, data_dir)
    _guard_bind(settings, insecure)
    lock = _lock_data_dir(settings.data_dir)  # noqa: F841 - held until the process ends
    configure_logging("embedded", log_level, settings.logs_json)
    tls = _tls_setup(settings)
    base = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    console.print(f"[bold green]SmartLogs {__version__}[/] embedded mode: API [cyan]{base}[/], "
                  f"store [cyan]{settings.db_path}[/], {settings.shard_count} shard(s) over "
                  f"{settings.partitions} partitions", soft_wrap=True)
    console.print(f"  send a log:  curl -X POST {base}/ingest -H 'Content-Type: application/json' "
                  "-d '{\"message\": \"hello\"}'", soft_wrap=True)  # never cut a command
    from smartlogs.cli.datasets import default_loghub_dir

    sample = default_loghub_dir() / "Linux" / "Linux_2k.log"
    url = "" if base == "http://127.0.0.1:8000" else f" --url {base}"
    fetch = "" if sample.is_file() else "smartlogs data fetch -d Linux && "
    console.print(f"  replay:      {fetch}smartlogs replay {sample}{url}", soft_wrap=True)
    console.print(f"  web console: {base}/")
    console.print(f"  API docs:    {base}/docs        stop: Ctrl-C")
    # The pipeline threads hold the GIL for long stretches; the default 5 ms switch interval
    # then adds up to several ms to each of the many hand-offs a request makes between the
    # event loop and its worker thread. 0.5 ms keeps ingest latency low (measured in bench/).
    sys.setswitchinterval(0.0005)
    _sigterm_exits_cleanly()
    api = create_app(settings)
    # this process parses every request (and with one shard runs the pipeline): far fewer
    # passes of the garbage collector (streams/runtime/gc_tuning.py; the shards do the same)
    from streams.runtime.gc_tuning import tune_gc

    tune_gc()
    uvicorn.run(api, host=settings.host, port=settings.port,
                log_level=log_level.lower(), access_log=False, log_config=None,
                http=http_protocol(settings.read_timeout), **tls)


def _sigterm_exits_cleanly() -> None:
    """After a graceful shutdown on SIGTERM, exit with status 0.

    uvicorn stops gracefully on SIGTERM, restores the handler it found and then raises the
    signal again, so that the process ends *by* SIGTERM (status -15) unless that handler says
    otherwise: `make up` then ended with "make: *** [Makefile:23: up] Terminated". The handler
    installed here is the one uvicorn restores: the process exits with 0 once it is done.
    """
    import signal

    def done(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, done)


def _check_engine_security(settings, *engines: str) -> None:
    """Credentials/TLS settings that do not fit together: one clear error line, no traceback."""
    from smartlogs import security as sec

    checks = {"amqp": sec.amqp_ssl_context, "kafka": sec.kafka_client_kwargs,
              "es": sec.es_client_kwargs}
    try:
        for engine in engines:
            checks[engine](settings)
    except sec.ConfigError as exc:
        _fail(escape(str(exc)))


def _tls_setup(settings) -> dict:
    """Register the settings' secrets (no log line may carry them) and return uvicorn's TLS
    arguments (SMARTLOGS_TLS_CERTFILE/_KEYFILE; {} for plain HTTP), failing clearly on bad ones."""
    from smartlogs.security import ConfigError, register_secrets, uvicorn_ssl_kwargs

    register_secrets(settings)
    try:
        return uvicorn_ssl_kwargs(settings)
    except ConfigError as exc:
        _fail(str(exc))


def _lock_data_dir(data_dir: Path):
    """One embedded server per data directory: a second one would write the same SQLite
    files with its own sequence numbers and model. Returns the open, exclusively locked file
    (released by the OS when the process ends, however it ends)."""
    from smartlogs.cli.shipper import exclusive_lock

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "smartlogs.lock"
    f = exclusive_lock(path)
    if f is None:
        holder = path.read_text().strip() or "?"
        _fail(f"another `smartlogs up` (pid {holder}) is using the data directory {escape(str(data_dir))}.\n"
              "  stop it first, or give this one its own: --data-dir DIR (env SMARTLOGS_DATA_DIR)")
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _settings_from(host, port, data_dir):
    from smartlogs.settings import Settings

    overrides = {k: v for k, v in (("host", host), ("port", port), ("data_dir", data_dir)) if v is not None}
    return Settings(**overrides)


def _guard_bind(settings, insecure: bool) -> None:
    """Beyond loopback, refuse to run open: keys first (or --insecure, loudly)."""
    from smartlogs.auth import KeyStore, is_loopback

    if is_loopback(settings.host) or KeyStore(settings.keys_path).enabled:
        return
    if insecure:
        err.print(f"[bold red]WARNING: serving on {settings.host} with NO API KEYS (--insecure): "
                  "anyone who can reach this port can send and read logs.[/]")
        return
    _fail(f"refusing to listen on {settings.host} without API keys: anyone could read your logs.\n"
          f"  create one:  smartlogs keys create --name admin --scope admin "
          f"--data-dir {settings.data_dir}\n  or run on 127.0.0.1, or pass --insecure to override")


InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Allow listening beyond loopback without API keys (dangerous).")]


def _log_level(value: str) -> str:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter(f"{value!r}: choose debug, info, warning or error")
    return value.lower()


LogLevelOpt = Annotated[str, typer.Option(help="debug, info, warning or error.",
                                          callback=_log_level)]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key (unique), e.g. the client's name.")],
    scope: Annotated[str, typer.Option(help="ingest (send events), read (queries, console) or admin (both).")] = "ingest",
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (env SMARTLOGS_DATA_DIR).")] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from smartlogs.auth import KeyStore

    s = _settings_from(None, None, data_dir)
    try:
        key, secret = KeyStore(s.keys_path).create(name, scope)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"created key [bold]{key.name}[/] (id {key.id}, scope {key.scope}). "
                  "Copy it now, it is not shown again:")
    print(secret)
    console.print(f"use it as:  curl -H 'Authorization: Bearer {secret[:6]}…' ...", style="dim",
                  soft_wrap=True)


@keys_app.command("list")
def keys_list(data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (env SMARTLOGS_DATA_DIR).")] = None) -> None:
    """List keys (names, scopes, state; never the secrets)."""
    from datetime import datetime, timezone

    from smartlogs.auth import KeyStore

    t = Table(title="API keys")
    for col in ("id", "name", "scope", "created", "state"):
        t.add_column(col)
    for k in KeyStore(_settings_from(None, None, data_dir).keys_path).list():
        created = datetime.fromtimestamp(k.created, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        t.add_row(k.id, escape(k.name), k.scope, created, "revoked" if k.revoked else "active")
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(
    name_or_id: Annotated[str, typer.Argument(help="The key's name or id.")],
    data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (env SMARTLOGS_DATA_DIR).")] = None,
) -> None:
    """Revoke a key; running servers stop accepting it within a few seconds.

    Revoking the last active key does not reopen the API: it then refuses every protected
    request until a key is created (to go back to running without keys, on loopback only,
    stop the server and delete DATA_DIR/keys.db).
    """
    from smartlogs.auth import KeyStore

    store = KeyStore(_settings_from(None, None, data_dir).keys_path)
    try:
        key = store.revoke(name_or_id)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    console.print(f"revoked key {key.name} ({key.id})")
    if not store.active():
        console.print("[yellow]no active key left: the API now refuses every request that needs a "
                      "key (ingest, search, console) until you create one with "
                      "`smartlogs keys create`.[/]")


@app.command()
def api(
    host: Annotated[Optional[str], typer.Option(help="Bind address (env SMARTLOGS_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (env SMARTLOGS_PORT).")] = None,
    log_level: LogLevelOpt = "info",
    insecure: InsecureOpt = False,
) -> None:
    """Full stack: run only the ingest/query API (RabbitMQ for ingest, Elasticsearch for queries).

    Configured by SMARTLOGS_AMQP_URL, SMARTLOGS_AMQP_QUEUE, SMARTLOGS_ES_URL,
    SMARTLOGS_ES_INDEX_PREFIX. Answers 202 only after RabbitMQ confirmed the batch, 503 with
    Retry-After while the broker is unreachable.
    """
    import uvicorn

    from ingest_api.app import create_app
    from ingest_api.timeouts import http_protocol
    from smartlogs.security import redact_url

    settings = _settings_from(host, port, None)
    _guard_bind(settings, insecure)
    _check_engine_security(settings, "amqp", "es")
    configure_logging("api", log_level, settings.logs_json)
    tls = _tls_setup(settings)
    console.print(f"[bold green]SmartLogs {__version__}[/] API (full stack) on "
                  f"{'https' if tls else 'http'}://{settings.host}:{settings.port} → "
                  f"{escape(redact_url(settings.amqp_url))} queue {settings.amqp_queue}; "
                  f"queries from {escape(redact_url(settings.es_url))}")
    _sigterm_exits_cleanly()
    uvicorn.run(create_app(settings, mode="full"), host=settings.host, port=settings.port,
                log_level=log_level.lower(), access_log=False, log_config=None,
                http=http_protocol(settings.read_timeout), **tls)


@app.command()
def bridge(
    log_level: LogLevelOpt = "info",
) -> None:
    """Full stack: move batches from RabbitMQ to Kafka (ack to RabbitMQ only after Kafka acked).

    Configured by SMARTLOGS_AMQP_URL, SMARTLOGS_AMQP_QUEUE, SMARTLOGS_AMQP_DLQ,
    SMARTLOGS_AMQP_PREFETCH, SMARTLOGS_KAFKA_BOOTSTRAP, SMARTLOGS_KAFKA_TOPIC; credentials and
    TLS by SMARTLOGS_AMQP_* and SMARTLOGS_KAFKA_SECURITY_PROTOCOL & co. (README). Serves
    /metrics and /healthz on SMARTLOGS_METRICS_HOST:SMARTLOGS_BRIDGE_METRICS_PORT
    (127.0.0.1:9464; 0 turns it off).
    """
    import asyncio

    from bridge.bridge import run_bridge
    from smartlogs.settings import get_settings

    _check_engine_security(get_settings(), "amqp", "kafka")
    configure_logging("bridge", log_level, get_settings().logs_json)
    asyncio.run(run_bridge(get_settings()))


@app.command("kafka-source")
def kafka_source(
    log_level: LogLevelOpt = "info",
    metrics_port: Annotated[int, typer.Option(help="Serve /metrics on this port (0: off).")] = 0,
) -> None:
    """Full stack: consume an existing Kafka topic into RabbitMQ, without the HTTP API.

    Offsets are committed only after RabbitMQ confirmed the events. `smartlogs up` and
    `smartlogs api` run the same source in-process when the topic is set; this runs it on its
    own. Configured by SMARTLOGS_KAFKA_SOURCE_TOPIC, _GROUP, _FORMAT (raw|json|auto),
    _BOOTSTRAP (default SMARTLOGS_KAFKA_BOOTSTRAP), SMARTLOGS_AMQP_URL. See docs/receivers.md.
    """
    import asyncio
    import signal

    from ingest_api.receivers.kafka_source import start_kafka_source
    from ingest_api.transports import AmqpTransport
    from smartlogs import metrics
    from smartlogs.settings import get_settings

    s = get_settings()
    try:  # no log line may carry a configured secret (smartlogs/security.py)
        from smartlogs.security import register_secrets
    except ImportError:  # pragma: no cover - a tree without the security settings
        register_secrets = None
    if register_secrets is not None:
        register_secrets(s)
    configure_logging("kafka-source", log_level, s.logs_json)
    if not s.kafka_source_topic.strip():
        _fail("set SMARTLOGS_KAFKA_SOURCE_TOPIC to the topic to consume")
    metrics.serve(metrics_port, s.metrics_host)

    async def run() -> None:
        transport = AmqpTransport(s)
        await transport.start()
        source = await start_kafka_source(s, transport)  # None: bad settings, logged
        if source is None:
            await transport.stop()
            raise SystemExit(1)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await source.stop()
        await transport.stop()

    asyncio.run(run())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Full stack: the Faust stream worker (Kafka → pipeline → Elasticsearch).

    Extra arguments go to Faust's own CLI, e.g. `smartlogs worker agents`,
    `smartlogs worker tables`; default `worker -l info`. Configured by
    SMARTLOGS_KAFKA_BOOTSTRAP, SMARTLOGS_KAFKA_TOPIC, SMARTLOGS_ES_URL, SMARTLOGS_DATA_DIR;
    credentials and TLS by SMARTLOGS_KAFKA_SECURITY_PROTOCOL & co. and SMARTLOGS_ES_* (README).
    Serves /metrics and /healthz on SMARTLOGS_METRICS_HOST:SMARTLOGS_WORKER_METRICS_PORT
    (127.0.0.1:9465; 0 turns it off). Start it several times (up to the raw topic's partition
    count): the workers share the partitions, each partition's model kept in Kafka.
    """
    from smartlogs.settings import get_settings

    _check_engine_security(get_settings(), "kafka", "es")
    from streams.runtime.worker import main as worker_main

    worker_main(list(ctx.args) or None)


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Log file to send, e.g. Linux_2k.log.")],
    url: UrlOpt = DEFAULT_URL,
    batch_size: Annotated[int, typer.Option(min=1, max=100000, help="Lines per request.")] = 1000,
    rate: Annotated[Optional[float], typer.Option(min=0.001, help="Send N lines per second instead of full speed.")] = None,
    speedup: Annotated[Optional[float], typer.Option(min=0.001, help="Follow the log's own timestamps, X times faster than real time.")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Send the file N times (for load tests).")] = 1,
    year: Annotated[Optional[int], typer.Option(help="Year for syslog lines without one (only used for --speedup pacing).")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Id prefix for this run; reuse it to resume a replay without duplicates.")] = None,
    retry_for: Annotated[Optional[str], typer.Option(metavar="DURATION", help="Keep retrying a batch while the API is down or busy for up to DURATION (e.g. 90s, 10m, 1h) instead of 8 retries (~33 s).")] = None,
    multiline: Annotated[bool, typer.Option(help="Join continuation lines (a stack trace, an indented dump) to the line they belong to: one event each.")] = True,
    stream: Annotated[Optional[str], typer.Option(help="Source name whose header layout is learned apart (default: the file's name).")] = None,
) -> None:
    """Send a log file to SmartLogs in batches, with a progress bar over the file's lines.

    Ends with a summary: accepted, rejected (refused by the server, with its reason) and, if
    the server could not be reached or stayed busy, not delivered, with the command that sends
    them again. Exits non-zero unless every line was accepted. Each line's id is RUN_ID:LINE,
    so retries and reruns never store a line twice.
    """
    from smartlogs.cli.replay import count_events, plan_batches, read_lines, send_batches

    if rate and speedup:
        _fail("choose --rate or --speedup, not both")
    retry_seconds = _duration(retry_for, "--retry-for") if retry_for else None
    resumed = run_id is not None
    run_id = run_id or secrets.token_hex(4)
    if retry_seconds is None:
        _probe(url)  # fail fast, with advice, when nothing is listening
    already = _stored_of_run(url, run_id) if resumed else None
    if already:
        err.print(f"run id {run_id}: {already:,} lines of this run are already stored; they are "
                  "sent again and skipped (never stored twice)")
    # the lines planned (blank ones skipped, continuations joined), not the batches answered
    total = count_events(path, repeat, multiline=multiline)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>9,.0f} lines/s"), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn()]
    resume = f"smartlogs replay {path}" + ("" if url == DEFAULT_URL else f" --url {url}") + \
        (f" --repeat {repeat}" if repeat > 1 else "") + f" --run-id {run_id}" + \
        (f" --retry-for {retry_for}" if retry_for else "")
    started = time.monotonic()
    sent = 0
    err.print(f"run id {run_id}: sending again with --run-id {run_id} skips what is already "
              "stored", style="dim")
    try:
        with Progress(*columns, console=err, transient=False) as progress:
            task = progress.add_task(f"replay {path.name}", total=total, rate=0.0)

            def on_batch(n: int, outcome: str) -> None:
                nonlocal sent
                if outcome == "undelivered":  # the bar shows lines the server answered for
                    return
                sent += n
                progress.advance(task, n)
                progress.update(task, rate=sent / max(time.monotonic() - started, 1e-9))

            lines = read_lines(path, repeat, multiline=multiline)
            batches = plan_batches(lines, batch_size=batch_size, rate=rate,
                                   speedup=speedup, year=year)
            res = send_batches(url, batches, run_id=run_id, on_batch=on_batch,
                               headers={**_auth_headers(), **_stream_header(stream or path.name)},
                               retry_for=retry_seconds)
            per_s = res.sent / res.seconds if res.seconds else 0
            # the bar's last figures are the summary's: one clock (send_batches'), one rate,
            # and the lines planned as counted while sending
            progress.update(task, total=res.planned, completed=res.sent, rate=per_s)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted after {sent:,} of {total:,} lines (run id {run_id}). "
                  f"Resume without duplicates (lines already stored are skipped):[/]\n  {escape(resume)}",
                  soft_wrap=True)
        raise typer.Exit(130) from None
    missed = res.not_delivered
    color = "green" if not (res.rejected or missed) else "red"
    skipped = f" ({already:,} of them already stored before: skipped)" if already else ""
    lost = ""
    if missed:
        lost = (f"  not delivered {missed:,}"
                + (" (server unreachable)" if res.abort_reason == "unavailable" else
                   " (the API key was refused)" if res.abort_reason == "auth" else
                   " (no answer, or the server stayed busy)"))
    console.print(f"[{color}]sent {res.sent:,}  accepted {res.accepted:,}{skipped}  rejected {res.rejected:,}"
                  f"{lost}[/]  of {res.planned:,} lines  retries {res.retries}  in {res.seconds:.2f}s "
                  f"({per_s:,.0f} lines/s)  run id {run_id}")
    for e in res.errors[:5]:
        err.print(f"  [red]{escape(e)}[/]")
    if res.aborted:
        why = ("the server refused the API key (set SMARTLOGS_API_KEY to a key with the ingest "
               "scope)" if res.abort_reason == "auth" else "the server stayed unavailable"
               + ("" if retry_for else " (ride out a longer outage with --retry-for, e.g. 10m)"))
        err.print(f"[red]stopped early: {why}; {missed:,} lines not delivered. "
                  f"Send them without duplicates:[/]\n  {escape(resume)}", soft_wrap=True)
    elif missed:
        err.print(f"[red]{missed:,} lines not delivered (no answer, or the server stayed busy). "
                  f"Send them without duplicates:[/]\n  {escape(resume)}", soft_wrap=True)
    if res.rejected or missed:
        raise typer.Exit(1)


def _stored_of_run(url: str, run_id: str) -> int | None:
    """How many lines of run ``run_id`` the server already stores (None: it cannot say)."""
    from urllib.parse import quote

    try:
        r = httpx.get(f"{url.rstrip('/')}/ingest/runs/{quote(run_id, safe='')}", timeout=30,
                      headers=_auth_headers())
        return int(r.json()["stored"]) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def _duration(text: str, option: str) -> float:
    """'90', '90s', '10m', '1.5h', '1d' → seconds; anything else is a usage error."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        _fail(f"{option} {text!r}: give a duration such as 90s, 10m or 1h", code=2)
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


NARROW = 120  # below this many columns an event is two lines: its fields, then its message


def _source(e: dict) -> str:
    """An event's source (its host, else the service, file, stream or key it came from)."""
    return e.get("source") or e.get("host") or "-"


def _total(res: dict) -> str:
    """An /api/events total: "1,234", or "10,000+" past the count the server stops at
    (``total_relation`` "gte")."""
    return f"{res['total']:,}" + ("+" if res.get("total_relation") == "gte" else "")


def _event_table(events: list[dict], title: str, width: int | None = None) -> Table:
    """Events as a table; on a narrow terminal (an 80-column one squeezed the message to ~20
    characters) each event is its fields on one line and its message on the full width."""
    width = console.width if width is None else width
    if width < NARROW:
        from rich import box

        t = Table(title=title, show_header=False, show_lines=True, expand=True, box=box.SIMPLE)
        t.add_column("event", ratio=1, overflow="fold")
        for e in events:
            head = (f"[dim]{e['timestamp']}  {escape(_source(e))}  {e['level'] or '-'}  "
                    f"{e['template_id']}  score {e['score']:.2f}[/]")
            msg = escape(e["message"])
            if e["anomaly"]:
                msg = f"[bold red]⚠ {msg}[/]\n[red]  why: {escape(e['reason'] or '')}[/]"
            t.add_row(f"{head}\n{msg}")
        return t
    t = Table(title=title, show_lines=False, expand=True)
    t.add_column("time", no_wrap=True)
    t.add_column("source", no_wrap=True, max_width=32)  # its host, else service, file, ...
    t.add_column("level", no_wrap=True)
    t.add_column("tmpl", no_wrap=True)
    t.add_column("score", justify="right")
    t.add_column("message", ratio=1)
    for e in events:
        msg = escape(e["message"])
        if e["anomaly"]:
            msg = f"[bold red]⚠ {msg}[/]\n[red]  why: {escape(e['reason'] or '')}[/]"
        t.add_row(e["timestamp"], escape(_source(e)), e["level"] or "-", e["template_id"],
                  f"{e['score']:.2f}", msg)
    return t


def _record_table(title: str, columns: list[str], rows: list[list[str]], *,
                  labelled: tuple[str, ...] = (), width: int | None = None) -> Table:
    """Records (incidents, alerts) whose last column is a long text (the reason). On a wide
    terminal a table; on a narrow one (at 80 columns the reason was squeezed to one character a
    line) each record is its short fields on one line, then its reason on the full width.
    Values must already be escaped; a column in ``labelled`` is shown as "name value" there."""
    width = console.width if width is None else width
    if width < NARROW:
        from rich import box

        t = Table(title=title, show_header=False, show_lines=True, expand=True, box=box.SIMPLE)
        t.add_column(columns[-1], ratio=1, overflow="fold")
        for row in rows:
            head = "  ".join(f"{c} {v}" if c in labelled else v
                             for c, v in zip(columns[:-1], row[:-1]) if v)
            t.add_row(f"[dim]{head}[/]\n  {columns[-1]}: {row[-1]}")
        return t
    t = Table(title=title, expand=True)
    for col in columns:
        t.add_column(col, overflow="fold", ratio=4 if col == columns[-1] else None)
    for row in rows:
        t.add_row(*row)
    return t


@app.command()
def sources(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Each source's header layout (learned, or the built-in format that took its lines),
    lines seen and the share parsed. A source is the stream a replay or shipper names
    (X-SmartLogs-Stream: the file), else its transport (http, file)."""
    res = _get(url, "/api/sources", {})
    if as_json:
        sys.stdout.write(httpx.Response(200, json=res).text + "\n")
        return
    t = Table(title=f"{len(res['sources'])} sources", expand=True)
    t.add_column("source", no_wrap=True)
    t.add_column("layout", ratio=1)
    t.add_column("lines", justify="right")
    t.add_column("parsed", justify="right")
    for src in res["sources"]:
        t.add_row(escape(src["source"]), escape(src["layout"] or "-"), f"{src['lines']:,}",
                  f"{src['parsed_share']:.1%}")
    console.print(t)


@app.command()
def search(
    query: Annotated[Optional[str], typer.Argument(help='What to find in the message: words (all must match), "a phrase", prefix*, a OR b, -word, (groups).')] = None,
    host: Annotated[Optional[str], typer.Option(help="Only this host.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Only this source: a host, else the service, file, stream or API key the events came from (the source column).")] = None,
    level: Annotated[Optional[str], typer.Option(help="Only this level, e.g. ERROR.")] = None,
    template: Annotated[Optional[str], typer.Option(help="Only this template id, e.g. T12.")] = None,
    anomalies: Annotated[bool, typer.Option("--anomalies", help="Only anomalies.")] = False,
    incident: Annotated[Optional[str], typer.Option(help="Only the lines of this incident (see smartlogs incidents).")] = None,
    since: Annotated[Optional[str], typer.Option(help="From this time: ISO 8601, epoch, or an age like 15m, 2h, 7d.")] = None,
    until: Annotated[Optional[str], typer.Option(help="Before this time (same forms).")] = None,
    basis: Annotated[str, typer.Option("--time", help="What --since/--until mean: event (the time in the log line) or arrival (when SmartLogs received it).")] = "event",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Events per page.")] = 20,
    order: Annotated[str, typer.Option(help="time: newest event time first; arrival: newest stored first; tail: oldest stored first.")] = "time",
    cursor: Annotated[Optional[str], typer.Option(help="Continue from the page that printed this cursor (same query and order).")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursor to the last page (every matching event).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Search stored events, newest first, a page at a time.

    Example: smartlogs search 'authentication failure' --host combo --anomalies

    Example: smartlogs search '"session opened" -cron'

    A page that is not the last ends with the command for the next one (--cursor); --all
    prints every page.
    """
    if order not in ("time", "arrival", "tail"):
        _fail(f"--order must be time, arrival or tail, not {order!r}")
    if basis not in ("event", "arrival"):
        _fail(f"--time must be event or arrival, not {basis!r}")
    params = {"q": query, "host": host, "source": source, "level": level, "template": template,
              "anomaly": "true" if anomalies else None, "since": since, "until": until,
              "limit": limit, "order": order, "time": basis, "incident": incident}
    res = _get(url, "/api/events", {**params, "cursor": cursor})
    events, shown = list(res["events"]), len(res["events"])
    while all_pages and res.get("next"):
        if not as_json:  # a table per page: a long result is shown as it comes
            console.print(_event_table(events, f"{_total(res)} matching events "
                                               f"({shown:,} so far)"))
            events = []
        res = _get(url, "/api/events", {**params, "cursor": res["next"]})
        events.extend(res["events"])
        shown += len(res["events"])
    nxt = res.get("next")
    if as_json:
        sys.stdout.write(httpx.Response(200, json={**res, "events": events}).text + "\n")
        return
    title = f"{_total(res)} matching events (showing {len(events):,}"
    title += f", {shown:,} so far)" if all_pages and shown > len(events) else ")"
    console.print(_event_table(events, title))
    if nxt:
        again = ["smartlogs", "search", *([query] if query else [])]
        for flag, val in (("--host", host), ("--source", source), ("--level", level),
                          ("--template", template),
                          ("--incident", incident), ("--since", since), ("--until", until)):
            if val is not None:
                again += [flag, val]
        if anomalies:
            again.append("--anomalies")
        if order != "time":
            again += ["--order", order]
        if basis != "event":
            again += ["--time", basis]
        if limit != 20:
            again += ["--limit", str(limit)]
        if url not in (DEFAULT_URL, os.environ.get("SMARTLOGS_URL")):  # the next page is there too
            again += ["--url", url]
        import shlex

        console.print(f"next page: {escape(shlex.join([*again, '--cursor', nxt]))}", soft_wrap=True)


@app.command()
def tail(
    anomalies: Annotated[bool, typer.Option("--anomalies", help="Only anomalies.")] = False,
    host: Annotated[Optional[str], typer.Option(help="Only this host.")] = None,
    level: Annotated[Optional[str], typer.Option(help="Only this level.")] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="First show the N newest stored events by event time (not by arrival), then follow.")] = 10,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between the server's polls of the store.")] = 0.5,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Follow new events live (Ctrl-C to stop). Anomalies are shown in red with their reason.

    Uses the server's live stream (/api/stream, server-sent events), the same one the web
    console uses, so late-visible events in Elasticsearch are still delivered, once each.
    """
    import orjson

    filters = {"host": host, "level": level, "anomaly": "true" if anomalies else None}
    first = _get(url, "/api/events", {**filters, "limit": max(lines, 1)})
    for e in reversed(first["events"][:lines]):
        _print_line(e)
    cursor = first["last_seq"]
    seen: set[int] = set()
    params = {k: v for k, v in {**filters, "interval": interval}.items() if v is not None}
    try:
        while True:  # the server ends a stream after a while; resume from the cursor
            params["after"] = cursor
            try:
                with httpx.stream("GET", f"{url.rstrip('/')}/api/stream", params=params,
                                  headers=_auth_headers(), timeout=httpx.Timeout(60, read=None)) as r:
                    if r.status_code >= 400:
                        _fail(f"/api/stream answered {r.status_code}: {r.read().decode()[:300]}")
                    event = None
                    for raw in r.iter_lines():
                        if raw.startswith("event:"):
                            event = raw[6:].strip()
                        elif raw.startswith("data:") and event == "events":
                            data = orjson.loads(raw[5:])
                            for e in data["events"]:
                                if e["seq"] not in seen:
                                    seen.add(e["seq"])
                                    _print_line(e)
                            cursor = max(cursor, data.get("last_seq") or cursor)
                            if len(seen) > 100_000:
                                seen.clear()
            except httpx.TransportError as exc:
                err.print(f"[yellow]stream interrupted ({exc}); reconnecting…[/]")
                time.sleep(1)
    except KeyboardInterrupt:
        pass


def _print_line(e: dict) -> None:
    head = f"{e['timestamp']} {escape(_source(e))} {escape(e['component'] or '-')} {e['level'] or '-'}"
    if e["anomaly"]:
        console.print(f"[bold red]⚠ {head} {escape(e['message'])}[/]  [red]({escape(e['reason'] or '')}, score {e['score']:.2f})[/]")
    else:
        console.print(f"[dim]{head}[/] {escape(e['message'])}")


@app.command()
def stats(
    windows: Annotated[int, typer.Option(min=1, help="How many recent windows to show.")] = 15,
    top: Annotated[int, typer.Option(min=1, help="How many top templates/hosts.")] = 10,
    since: Annotated[Optional[str], typer.Option(help="Only windows from this time (ISO 8601, epoch, or an age like 2h).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Only windows before this time.")] = None,
    basis: Annotated[str, typer.Option("--time", help="Count windows in event time (the time in the log lines) or arrival time (when SmartLogs received them).")] = "event",
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Windowed counts (per level, anomalies) and the top templates, hosts and components."""
    if basis not in ("event", "arrival"):
        _fail(f"--time must be event or arrival, not {basis!r}")
    res = _get(url, "/api/stats", {"windows": windows, "top": top, "since": since,
                                   "until": until, "time": basis})
    tot = res["totals"]
    console.print(f"[bold]{tot['events']:,}[/] events, [bold red]{tot['anomalies']:,}[/] anomalies, "
                  f"[bold]{tot['templates']:,}[/] templates; windows of {res['window_seconds']} s")
    per_level: dict[str, int] = {}
    for w in res["windows"]:
        for lv, n in w["levels"].items():
            per_level[lv] = per_level.get(lv, 0) + n
    # a column per level while they fit (at 80 columns three), the commonest first; the rest
    # are summed in "other" so that no column is squeezed until "2026-1…" is all it shows
    fit = max(1, (console.width - 46) // 10)
    levels = sorted(per_level, key=lambda lv: (-per_level[lv], lv))
    rest = levels[fit - 1:] if len(levels) > fit else []
    levels = sorted(levels[:fit - 1] if rest else levels)
    t = Table(title=f"recent windows ({basis} time)")
    t.add_column("window start (UTC)", no_wrap=True, min_width=16)
    t.add_column("events", justify="right")
    t.add_column("anomalies", justify="right", style="red")
    for lv in levels:  # a level is log data: printed as text, never read as markup
        t.add_column("no level" if lv == "-" else escape(lv), justify="right", overflow="fold")
    if rest:
        t.add_column(f"{len(rest)} other levels", justify="right", overflow="fold")
    for w in res["windows"]:
        start = w["start"].replace("T", " ").replace(":00.000Z", "")  # 2026-12-07 10:37
        t.add_row(start, str(w["total"]), str(w["anomalies"]),
                  *(str(w["levels"].get(lv, 0)) for lv in levels),
                  *([str(sum(w["levels"].get(lv, 0) for lv in rest))] if rest else []))
    console.print(t)
    tt = Table(title="top templates")
    tt.add_column("id")
    tt.add_column("count", justify="right")
    tt.add_column("template")
    for row in res["top_templates"]:
        tt.add_row(row["key"], f"{row['count']:,}", escape(row.get("template") or ""))
    console.print(tt)
    for dim in ("hosts", "components"):
        th = Table(title=f"top {dim}")
        th.add_column(dim[:-1])
        th.add_column("count", justify="right")
        for row in res[f"top_{dim}"]:
            th.add_row(escape(row["key"]), f"{row['count']:,}")
        console.print(th)


@app.command()
def status(
    url: UrlOpt = DEFAULT_URL,
    bridge_metrics: Annotated[str, typer.Option(envvar="SMARTLOGS_BRIDGE_METRICS_URL", help="Full stack: the bridge's /metrics.")] = "http://127.0.0.1:9464/metrics",
    worker_metrics: Annotated[str, typer.Option(envvar="SMARTLOGS_WORKER_METRICS_URL", help="Full stack: the worker's /metrics.")] = "http://127.0.0.1:9465/metrics",
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between the two scrapes that give rates.")] = 2.0,
    stuck_after: Annotated[float, typer.Option(min=1, help="A stage with work waiting and no progress for this long is stuck.")] = 60.0,
) -> None:
    """Health of each stage: rate, lag, errors, last event. Exits 1 when a stage is down or stuck."""
    from datetime import datetime, timezone

    from smartlogs.security import redact_url
    from smartlogs.cli.status import collect_status

    mode, stages = collect_status(url, bridge_metrics=bridge_metrics, worker_metrics=worker_metrics,
                                  interval=interval, stuck_after=stuck_after,
                                  headers=_auth_headers())
    t = Table(title=f"SmartLogs status ({mode} mode, {escape(redact_url(url))})")
    for col in ("stage", "state", "rate/s", "lag", "errors", "last event", "problem"):
        t.add_column(col, overflow="fold")  # an address or a stage name is never cut off
    for s in stages:
        last = (datetime.fromtimestamp(s.last_event, timezone.utc).strftime("%H:%M:%S UTC")
                if s.last_event else "-")
        fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
        state = ("[green]ok[/]" if s.ok else "[red]down[/]" if not s.up
                 else "[yellow]degraded[/]" if s.degraded else "[yellow]stuck[/]")
        # the API's count is of requests it refused (bad input, keys, backlog): say so
        errors = fmt(s.errors) + (" rejected" if s.name == "ingest api" and s.errors else "")
        t.add_row(s.name, state, "-" if s.rate is None else f"{s.rate:,.1f}", fmt(s.lag),
                  errors, last, escape(s.problem or ""))
    console.print(t)
    _print_rejections(stages)
    if not all(s.ok for s in stages):
        raise typer.Exit(1)


def _print_rejections(stages) -> None:
    """The API's last refusals (newest first): when, why, from whom, what was wrong."""
    from datetime import datetime, timezone

    api = next((s for s in stages if s.name == "ingest api"), None)
    if api is None:
        return
    if api.detail.get("rejections_error"):
        console.print(f"last rejections: not available ({escape(api.detail['rejections_error'])}; "
                      "a read key is needed when keys are on)")
    rows = api.detail.get("rejections") or []
    if not rows:
        return
    t = Table(title=f"last {len(rows)} rejections (newest first; this API process since it started)")
    for col in ("time", "reason", "client", "request", "detail"):
        t.add_column(col, overflow="fold")
    for r in rows:
        when = datetime.fromtimestamp(r["time"], timezone.utc).strftime("%H:%M:%S UTC")
        reason = r["reason"] + (f" ×{r['count']}" if r.get("count", 1) > 1 else "")
        t.add_row(when, escape(reason), escape(r.get("client") or "-"),
                  escape(r.get("request") or "-"), escape(r.get("detail") or ""))
    console.print(t)


@data_app.command("fetch")
def data_fetch(
    dest: Annotated[Path, typer.Option(help="Where to put the files (the other commands look there).")] = Path("data/loghub"),
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", "-d", help="Only these (repeatable): Linux, OpenSSH, Apache, HDFS, Zookeeper, BGL.")] = None,
    base_url: Annotated[str, typer.Option(envvar="SMARTLOGS_LOGHUB_URL", help="Where loghub's files are served.")] = "https://raw.githubusercontent.com/logpai/loghub/master",
) -> None:
    """Download the loghub sample logs with checksum verification.

    Loghub's datasets are free for research or academic work; see
    https://github.com/logpai/loghub and cite Zhu et al., ISSRE 2023.
    """
    from smartlogs.cli.datasets import DATASETS, FetchError, fetch_dataset

    names = dataset or list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        _fail(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err) as progress:
        task = progress.add_task("datasets", total=len(names))
        for name in names:
            progress.update(task, description=f"fetching {name}")
            try:
                paths = fetch_dataset(name, dest, base_url=base_url)
            except FetchError as exc:
                _fail(str(exc))
            progress.advance(task)
            for p in paths:
                progress.console.print(f"  [green]✓[/] {p}")
    console.print(f"verified {len(names)} dataset(s) in {dest}. License: https://github.com/logpai/loghub")


from smartlogs.cli.alerts import alerts_app  # noqa: E402
from smartlogs.cli.incidents import incidents_command  # noqa: E402
from smartlogs.cli.evaluation import eval_app  # noqa: E402
from smartlogs.cli.kibana import kibana_setup_command  # noqa: E402
from smartlogs.cli.shipper import ship_command  # noqa: E402
from smartlogs.cli.templates import templates_app  # noqa: E402

app.command("kibana-setup")(kibana_setup_command)
app.command("ship")(ship_command)
app.command("incidents")(incidents_command)
app.add_typer(eval_app, name="eval")
app.add_typer(alerts_app, name="alerts")
app.add_typer(templates_app, name="templates")


def _flowing_summaries(typer_app: typer.Typer) -> None:
    """The commands panel of --help shows each command's first docstring paragraph, and in
    rich markup mode Typer keeps that paragraph's line breaks: in a narrow terminal a summary
    broke mid-sentence. Each command without a short help gets its first paragraph as one
    line (the terminal wraps it); its own --help page is unchanged."""
    import inspect

    for info in typer_app.registered_commands:
        if info.short_help is None:
            doc = info.help or inspect.getdoc(info.callback) or ""
            info.short_help = " ".join(doc.split("\n\n")[0].split()) or None
    for group in typer_app.registered_groups:
        _flowing_summaries(group.typer_instance)


_flowing_summaries(app)


def main() -> None:  # pragma: no cover
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:  # settings from the environment: say which and why
        if exc.title != "Settings":
            raise
        err.print(f"[bold red]error:[/] {escape(settings_errors(exc))}")
        raise SystemExit(2) from None


def settings_errors(exc) -> str:
    """A pydantic ValidationError of Settings as lines a person can fix: the variable, the
    value given, what is wrong."""
    lines = ["invalid configuration:"]
    for e in exc.errors():
        name = "SMARTLOGS_" + "_".join(str(p) for p in e["loc"]).upper()
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {name}={e.get('input')!s}: {msg}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
