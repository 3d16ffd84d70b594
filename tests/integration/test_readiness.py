"""The full stack's readiness (issue 21): the API's /healthz says ``degraded``, with the reason,
when the pipeline behind its queue stops: the worker killed (records wait on Kafka, its group
commits nothing) and the bridge killed (nothing consumes the ingest queue); lines that were
already stored are progress, not a stall. Real engines, real processes."""

from __future__ import annotations

import time

import httpx

from tests.integration.stack import cli, run_stack, stack_logs, wait_total

STUCK_AFTER = 4  # seconds, instead of the default 60


def _health_until(url: str, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/healthz", timeout=10)
        body = r.json()
        if predicate(r.status_code, body):
            return body
        assert time.monotonic() < deadline, f"readiness never matched; last: {r.status_code} {body}"
        time.sleep(0.5)


def _post(url: str, text: str) -> None:
    r = httpx.post(f"{url}/ingest", content=text.encode(), timeout=30,
                   headers={"Content-Type": "text/plain"})
    assert r.status_code == 202, r.text


def test_readiness_is_degraded_with_the_reason_when_the_pipeline_stops(
        tmp_path, rabbitmq, kafka, elasticsearch):
    gen = run_stack(tmp_path, rabbitmq, kafka, elasticsearch, extra_env={
        "SMARTLOGS_STUCK_AFTER_SECONDS": str(STUCK_AFTER),
        "SMARTLOGS_HEALTH_PROBE_SECONDS": "0.5",
        "SMARTLOGS_SYSLOG_PORT": "0"})  # the port is not under test (and may be taken)
    stack = next(gen)
    try:
        url, procs = stack["url"], stack["procs"]
        _post(url, "readiness first line flows through")
        assert wait_total(url, 1, procs=procs) == 1, stack_logs(stack)
        ok = _health_until(url, lambda code, b: code == 200 and b["status"] == "ok"
                           and (b["pipeline"]["consumers"] or 0) >= 1)
        assert "degraded" not in ok, ok
        # lines already stored (a resumed replay) are progress too: still ok afterwards
        for _ in range(2):
            r = httpx.post(f"{url}/ingest", json={"id": "readiness-dup", "message": "stored once"},
                           timeout=30)
            assert r.status_code == 202, r.text
        assert wait_total(url, 2, procs=procs) == 2, stack_logs(stack)
        time.sleep(STUCK_AFTER + 3)
        again = httpx.get(f"{url}/healthz").json()
        assert again["status"] == "ok" and again["pipeline"]["worker_lag"] == 0, again

        # the worker dies: the bridge still drains RabbitMQ into Kafka, nothing gets stored
        procs["worker"].kill()
        procs["worker"].wait(10)
        _post(url, "readiness accepted while the worker is down")
        body = _health_until(url, lambda code, b: b["status"] == "degraded")
        assert any("pipeline stuck" in r for r in body["degraded"]), body
        assert httpx.get(f"{url}/healthz").status_code == 200  # ingest itself still works
        _post(url, "readiness accepted while degraded")
        r = cli(stack, "status", "--interval", "0.2", "--bridge-metrics", "", "--worker-metrics", "")
        assert r.returncode == 1 and "pipeline stuck" in r.stdout.replace("\n", " "), r.stdout

        # the bridge dies too: nothing consumes the ingest queue
        procs["bridge"].kill()
        procs["bridge"].wait(10)
        body = _health_until(url, lambda code, b: any(
            "no consumer on the ingest queue" in r for r in b.get("degraded", [])))
        assert body["status"] == "degraded" and body["pipeline"]["consumers"] == 0, body
    finally:
        next(gen, None)
