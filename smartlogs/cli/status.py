"""`smartlogs status`: each stage's rate, lag, errors and last event; non-zero when down or stuck.

Reads what the services already expose: the API's ``/healthz`` and ``/metrics`` and, for the
full stack, the bridge's and worker's ``/metrics``. Rates come from two scrapes ``interval``
seconds apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from smartlogs.security import redact

__all__ = ["Stage", "scrape", "collect_status"]


@dataclass
class Stage:
    name: str
    up: bool
    rate: float | None = None          # events (or messages) per second over the interval
    lag: float | None = None           # backlog / consumer lag / unacked
    errors: float | None = None
    last_event: float | None = None    # wall-clock time of the last event through the stage
    problem: str | None = None
    degraded: bool = False             # works, but part of it does not (e.g. a receiver)
    detail: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.up and self.problem is None


def scrape(url: str) -> dict[str, float]:
    """Prometheus text → {'name{label="v"}': value} (samples summed over nothing)."""
    r = httpx.get(url, timeout=5)
    r.raise_for_status()
    out: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    except ValueError as exc:
        raise httpx.DecodingError(f"{url} does not answer with Prometheus metrics ({exc})") from None
    return out


def _sum(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def _stuck(lag: float | None, last: float | None, now: float, after: float) -> str | None:
    if lag and lag > 0 and (last is None or now - last > after):
        return f"{lag:.0f} waiting and nothing moved for over {after:.0f}s"
    return None


def readiness(metrics_url: str) -> tuple[bool, str | None] | None:
    """The bridge's or worker's ``/healthz`` next to its ``/metrics``: (ready, what is wrong),
    or None when it has none to offer (unreachable, or an older version without it)."""
    url = metrics_url.rsplit("/metrics", 1)[0] + "/healthz"
    try:
        r = httpx.get(url, timeout=5)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    if r.status_code == 200:
        return True, None
    if r.status_code != 503 or not isinstance(body, dict):
        return None
    parts = []
    for key, value in body.items():
        if key == "status":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, ""))
        parts.append(f"{key}: {value}")
    return False, redact("; ".join(parts))[:300]


def collect_status(api_url: str, *, bridge_metrics: str | None = None,
                   worker_metrics: str | None = None, interval: float = 2.0,
                   stuck_after: float = 60.0,
                   headers: dict | None = None) -> tuple[str, list[Stage]]:
    """(mode, stages). A stage that cannot be reached is down. The API's stage carries its last
    refusals in ``detail["rejections"]`` (``GET /api/rejections``, with ``headers``: a read
    key when keys are on), or why they could not be read in ``detail["rejections_error"]``."""
    api = api_url.rstrip("/")
    # an easy mix-up: the readiness URL given for the metrics one (same service, its /metrics)
    bridge_metrics, worker_metrics = (
        u.rstrip("/").removesuffix("/healthz") + "/metrics" if u and u.rstrip("/").endswith("/healthz")
        else u for u in (bridge_metrics, worker_metrics))
    stages: list[Stage] = []
    try:
        health = httpx.get(f"{api}/healthz", timeout=5)
        h = health.json()
        m1 = scrape(f"{api}/metrics")
    except (httpx.HTTPError, ValueError) as exc:
        return "unknown", [Stage("api", False, problem=redact(f"unreachable at {api}: {exc}"))]
    if not isinstance(h, dict) or "mode" not in h:
        return "unknown", [Stage("api", False, problem=(
            f"{api} does not look like the SmartLogs API (its /healthz names no mode): "
            "give --url the API's address"))]
    mode = h["mode"]
    extra = {}
    for name, url in (("bridge", bridge_metrics), ("worker", worker_metrics)):
        if mode == "full" and url:
            try:
                extra[name] = (url, scrape(url))
            except httpx.HTTPError as exc:
                stages_err = Stage(name, False,
                                   problem=redact(f"metrics unreachable at {url}: {exc}"))
                extra[name] = (url, None)
                stages.append(stages_err)
    time.sleep(interval)
    m2 = scrape(f"{api}/metrics")
    now = time.time()

    def rate(a, b, key):
        return (_sum(b, key) - _sum(a, key)) / interval

    accepted = 'smartlogs_events_accepted_total'
    api_stage = Stage("ingest api", health.status_code == 200, rate=rate(m1, m2, accepted),
                      errors=_sum(m2, "smartlogs_requests_rejected_total"),
                      last_event=_sum(m2, 'smartlogs_last_event_timestamp_seconds{stage="api"}') or None)
    if health.status_code != 200:
        api_stage.problem = redact(f"health says {h.get('status')}: {h.get('broker') or ''}"
                                   f"{' (' + h['broker_error'] + ')' if h.get('broker_error') else ''}"
                                   ).strip(": ")
    if h.get("status") == "degraded" and h.get("degraded") and api_stage.problem is None:
        # the API takes events, but the pipeline behind its queue does not move them on
        api_stage.problem = redact("; ".join(str(r) for r in h["degraded"]))[:400]
        api_stage.degraded = True
    syslog = h.get("syslog")
    if isinstance(syslog, dict) and syslog.get("listening") is False and api_stage.problem is None:
        api_stage.problem = (f"syslog receiver not listening on {syslog.get('address')}: "
                             f"{syslog.get('error')}")
        api_stage.degraded = True
    if api_stage.errors:
        try:
            r = httpx.get(f"{api}/api/rejections", timeout=5, headers=headers or {})
            if r.status_code == 200:
                api_stage.detail["rejections"] = r.json().get("rejections", [])
            else:
                api_stage.detail["rejections_error"] = f"HTTP {r.status_code} from /api/rejections"
        except (httpx.HTTPError, ValueError) as exc:
            api_stage.detail["rejections_error"] = redact(str(exc))[:200]
    stages.insert(0, api_stage)

    if mode == "embedded":
        p = h.get("pipeline", {})
        last = p.get("last_event_at")
        stage = Stage("pipeline+store", bool(p.get("running")),
                      rate=rate(m1, m2, 'smartlogs_events_processed_total{stage="sink"}'),
                      lag=p.get("backlog"), errors=p.get("errors"), last_event=last,
                      detail={"templates": p.get("templates"), "warmed_up": p.get("model_warmed_up")})
        stage.problem = None if stage.up else "runner thread not running"
        stage.problem = stage.problem or _stuck(stage.lag, last, now, stuck_after)
        stages.append(stage)
        return mode, stages

    for name, (url, first) in extra.items():
        if first is None:
            continue
        try:
            second = scrape(url)
        except httpx.HTTPError as exc:
            stages.append(Stage(name, False, problem=redact(f"metrics unreachable at {url}: {exc}")))
            continue
        if name == "bridge":
            st = Stage("bridge", True, rate=rate(first, second, "smartlogs_bridge_produced_lines"),
                       lag=_sum(second, "smartlogs_bridge_unacked"),
                       errors=_sum(second, "smartlogs_bridge_kafka_failures")
                       + _sum(second, "smartlogs_bridge_dead_lettered"),
                       last_event=_sum(second, 'smartlogs_last_event_timestamp_seconds{stage="bridge"}') or None)
            st.problem = _stuck(st.lag, st.last_event, now, stuck_after)
        else:
            last = _sum(second, 'smartlogs_last_event_timestamp_seconds{stage="sink"}') or None
            st = Stage("worker+elasticsearch", True,
                       rate=rate(first, second, 'smartlogs_events_processed_total{stage="sink"}'),
                       lag=_sum(second, "smartlogs_consumer_lag_messages"),
                       errors=_sum(second, "smartlogs_sink_failures_total")
                       + _sum(second, "smartlogs_dead_lettered_total"), last_event=last)
            st.problem = _stuck(st.lag, last, now, stuck_after)
        ready = readiness(url)
        if ready is not None and not ready[0]:  # its own readiness says it cannot work now
            st.up, st.problem = False, f"not ready: {ready[1]}"
        stages.append(st)
    return mode, stages
