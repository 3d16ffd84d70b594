"""Prometheus metrics shared by every SmartLogs service (prometheus-client, default registry).

The bridge's own counters (consumed, acked, produced lines, dead-lettered, reconnects, unacked)
are read from ``Bridge.stats()`` at scrape time by a ``StatsCollector`` as
``smartlogs_bridge_*``. Each process exposes them at ``/metrics`` (the API on its own port; the bridge and the worker
on ``SMARTLOGS_BRIDGE_METRICS_PORT`` / ``SMARTLOGS_WORKER_METRICS_PORT``, next to a ``/healthz``
readiness answer: 200 when the process can do its job now, 503 with what is missing). Names follow Prometheus conventions: ``_total`` counters,
``_seconds`` histograms, labels with small fixed value sets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

__all__ = [
    "EVENTS_RECEIVED", "EVENTS_ACCEPTED", "REQUESTS_REJECTED", "ACCEPT_SECONDS", "rejected", "child",
    "recent_rejections", "CURRENT_REQUEST",
    "EVENTS_PROCESSED", "ANOMALIES", "SINK_SECONDS", "SINK_FAILURES", "DEAD_LETTERED",
    "MODEL_WARMED_UP", "BACKLOG", "LAST_EVENT", "accepted", "GAPS_REPAIRED", "CONSUMER_LAG", "StatsCollector", "serve", "expose",
]

_LAT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EVENTS_RECEIVED = Counter("smartlogs_events_received_total",
                          "Events in requests that decoded successfully", ["source"])
EVENTS_ACCEPTED = Counter("smartlogs_events_accepted_total",
                          "Events durably taken (spool commit or broker confirm)", ["source"])
REQUESTS_REJECTED = Counter("smartlogs_requests_rejected_total",
                            "Ingest requests refused, by error code", ["reason"])
# Metrics without labels export a sample (0) as soon as they are registered. Those that only one
# kind of process moves are registered by that process (``expose``), so the bridge does not
# report an anomaly count of 0, nor the API in front of RabbitMQ a model that never warms up.
ACCEPT_SECONDS = Histogram("smartlogs_queue_publish_seconds",
                           "Time to durably hand a batch to the queue (spool or RabbitMQ)",
                           buckets=_LAT, registry=None)
EVENTS_PROCESSED = Counter("smartlogs_events_processed_total",
                           "Events through the pipeline, by stage", ["stage"])
ANOMALIES = Counter("smartlogs_anomalies_total", "Events flagged as anomalies", registry=None)
SINK_SECONDS = Histogram("smartlogs_sink_write_seconds", "Store bulk write latency", ["store"],
                         buckets=_LAT)
SINK_FAILURES = Counter("smartlogs_sink_failures_total", "Store writes that failed (retried)",
                        ["store"])
DEAD_LETTERED = Counter("smartlogs_dead_lettered_total", "Messages/documents dead-lettered",
                        ["hop"])
MODEL_WARMED_UP = Gauge("smartlogs_model_warmed_up", "1 once the anomaly model left warm-up",
                        registry=None)
BACKLOG = Gauge("smartlogs_backlog_events", "Accepted events not yet processed (embedded spool)",
                registry=None)
LAST_EVENT = Gauge("smartlogs_last_event_timestamp_seconds",
                   "Wall-clock time of the last event a stage took "
                   "(api: accepted, bridge: moved to Kafka, sink: stored)",
                   ["stage"])


# A labelled metric's child for each label value, looked up once: ``labels()`` checks and
# converts its values and takes a lock on every call, several µs a request where the API
# answers one-line requests in ~150 µs (bench/RESULTS.md, small requests). The children of a
# metric are never removed here, so a cached one is the one ``labels()`` would return.
_children: dict[tuple[object, str], object] = {}


def child(metric, value: str):
    """``metric.labels(value)``, cached (one label)."""
    c = _children.get((metric, value))
    if c is None:
        c = _children[(metric, value)] = metric.labels(value)
    return c


def accepted(source: str, n: int) -> None:
    """Count ``n`` events the API accepted from ``source`` and note when (``status``'s
    "last event" of the ingest stage)."""
    child(EVENTS_ACCEPTED, source).inc(n)
    child(LAST_EVENT, "api").set(time.time())


RECENT_REJECTIONS = 20  # how many refusals ``recent_rejections`` keeps (per process)
_recent: deque[dict] = deque(maxlen=RECENT_REJECTIONS)
_recent_lock = threading.Lock()
# (client address, "METHOD /path") of the HTTP request being served, set by the API's
# middleware, so that a refusal counted deep in a receiver still says whose request it was
CURRENT_REQUEST: ContextVar[tuple[str | None, str | None]] = ContextVar(
    "smartlogs_current_request", default=(None, None))


def rejected(reason: str, n: int = 1, *, detail: str | None = None, client: str | None = None,
             request: str | None = None) -> None:
    """Count a refused request (or ``n`` refused items) under ``reason`` and keep it among the
    last ``RECENT_REJECTIONS`` (time, reason, client, request, detail) for ``smartlogs status``."""
    REQUESTS_REJECTED.labels(reason).inc(n)
    ctx_client, ctx_request = CURRENT_REQUEST.get()
    entry = {"time": time.time(), "reason": reason, "count": n,
             "client": client or ctx_client, "request": request or ctx_request}
    if detail:
        entry["detail"] = str(detail)[:300]
    with _recent_lock:
        _recent.append(entry)


def recent_rejections() -> list[dict]:
    """The last refusals of this process, newest first."""
    with _recent_lock:
        return [dict(e) for e in reversed(_recent)]


GAPS_REPAIRED = Counter("smartlogs_worker_gap_messages_total",
                        "Raw-topic messages the stream did not deliver, re-read by offset",
                        registry=None)

_ROLES = {
    "api": (ACCEPT_SECONDS,),               # takes ingest requests (embedded or full)
    "pipeline": (ANOMALIES, MODEL_WARMED_UP),  # runs the pipeline (embedded server, worker)
    "spool": (BACKLOG,),                    # the embedded server's spool
    "worker": (GAPS_REPAIRED,),             # the Kafka-mode worker
}
_exposed: set[str] = set()
_expose_lock = threading.Lock()


def expose(*roles: str) -> None:
    """Register the metrics of what this process does (see ``_ROLES``); idempotent."""
    with _expose_lock:
        for role in roles:
            if role not in _exposed:
                for metric in _ROLES[role]:
                    REGISTRY.register(metric)
                _exposed.add(role)
CONSUMER_LAG = Gauge("smartlogs_consumer_lag_messages", "Kafka consumer lag per partition",
                     ["topic", "partition"])


class StatsCollector:
    """Expose a component's own counters (a ``stats()`` dict) at scrape time, off the hot path."""

    def __init__(self, prefix: str, stats, *, gauges: tuple[str, ...] = ()):
        self.prefix, self.stats, self.gauges = prefix, stats, set(gauges)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for key, value in self.stats().items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name = f"{self.prefix}_{key}"
            if key in self.gauges:
                yield GaugeMetricFamily(name, f"{self.prefix} {key}", value=value)
            else:
                yield CounterMetricFamily(name, f"{self.prefix} {key}", value=value)


_serving: set[int] = set()

Health = Callable[[], tuple[bool, dict]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def _app(health: Health | None):
    """WSGI app: ``/healthz`` from ``health()`` (200 ready / 503 not, JSON), else /metrics."""
    from prometheus_client import make_wsgi_app

    metrics_app = make_wsgi_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            if health is None:
                ok, detail = True, {}
            else:
                try:
                    ok, detail = health()
                except Exception as exc:  # noqa: BLE001 - a failing probe is an answer: not ready
                    from smartlogs.security import redact

                    ok, detail = False, {"error": redact(f"{type(exc).__name__}: {exc}")[:200]}
            body = orjson.dumps({"status": "ok" if ok else "down", **detail}, default=str)
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)

    return app


def serve(port: int, host: str = "127.0.0.1", health: Health | None = None) -> None:
    """Serve ``/metrics`` and ``/healthz`` for a process without its own web server (bridge,
    worker) from a daemon thread; port 0 disables. ``health()`` returns ``(ready, detail)``:
    whether the process can do its job now (its broker connected, its sink reachable).

    Idempotent per port. A port already taken is logged, not fatal: the data path matters
    more than its metrics."""
    if not port or port in _serving:
        return
    from prometheus_client.exposition import ThreadingWSGIServer

    try:
        httpd = make_server(host, port, _app(health), ThreadingWSGIServer,
                            handler_class=_QuietHandler)
    except OSError as exc:
        logging.getLogger(__name__).error("cannot serve /metrics on %s:%s: %s", host, port, exc)
        return
    threading.Thread(target=httpd.serve_forever, name=f"metrics-{port}", daemon=True).start()
    _serving.add(port)
