"""The full stack as processes (`smartlogs api`, `bridge`, `worker` on real engines) and the
helpers the full-stack tests share; the ``stack`` fixture itself is in conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import httpx
import pytest


TAGS: set[str] = set()  # of this session's stacks: the Kafka topics it may delete at its end
TOPIC_MARKS = ("test.raw.", "test.dlq.", "test-worker-")  # in the names of a stack's topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stack(tmp_path, rabbitmq: str, kafka: str, elasticsearch: str,
              extra_env: dict | None = None):
    """Start the three services on unique queues, topics and indices; yield; stop and clean up.
    ``extra_env``: more settings for the three (e.g. shorter readiness delays)."""
    tag = uuid.uuid4().hex[:8]
    TAGS.add(tag)
    port = free_port()
    env = {
        **os.environ,
        "SMARTLOGS_AMQP_URL": rabbitmq,
        "SMARTLOGS_AMQP_QUEUE": f"test.ingest.{tag}",
        "SMARTLOGS_AMQP_DLQ": f"test.ingest.dlq.{tag}",
        "SMARTLOGS_KAFKA_BOOTSTRAP": kafka,
        "SMARTLOGS_KAFKA_TOPIC": f"test.raw.{tag}",
        "SMARTLOGS_KAFKA_DLQ_TOPIC": f"test.dlq.{tag}",
        "SMARTLOGS_WORKER_ID": f"test-worker-{tag}",
        "SMARTLOGS_ES_URL": elasticsearch,
        "SMARTLOGS_ES_INDEX_PREFIX": f"test-events-{tag}",
        "SMARTLOGS_DATA_DIR": str(tmp_path / "var"),
        "SMARTLOGS_PORT": str(port),
        "SMARTLOGS_CHECKPOINT_SECONDS": "1",
        "SMARTLOGS_BRIDGE_METRICS_PORT": str(free_port()),
        "SMARTLOGS_WORKER_METRICS_PORT": str(free_port()),
        **(extra_env or {}),
    }
    logs = {}
    procs = {}
    for verb in ("api", "bridge", "worker"):
        logs[verb] = open(tmp_path / f"{verb}.log", "w")
        procs[verb] = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", verb], env=env,
                                       stdout=logs[verb], stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        pytest.fail("api not healthy: " + (tmp_path / "api.log").read_text()[-3000:])
    yield {"url": url, "env": env, "tmp": tmp_path, "procs": procs}
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
    for f in logs.values():
        f.close()
    from smartlogs.store.elasticsearch import ElasticsearchStore

    store = ElasticsearchStore(elasticsearch, index_prefix=env["SMARTLOGS_ES_INDEX_PREFIX"])
    store.delete_before(4e9)  # every daily index of this test (wildcard deletes are refused)
    httpx.delete(f"{elasticsearch}/_index_template/{env['SMARTLOGS_ES_INDEX_PREFIX']}", timeout=10)
    for extra in ("catalog", "alerts", "alert-silences", "alert-state", "incidents"):
        httpx.delete(f"{elasticsearch}/{env['SMARTLOGS_ES_INDEX_PREFIX']}.{extra}", timeout=10)
    store.close()


def wait_total(url: str, n: int, timeout: float = 120, procs: dict | None = None) -> int:
    deadline = time.monotonic() + timeout
    total = -1
    while time.monotonic() < deadline:
        for name, p in (procs or {}).items():
            assert p.poll() is None, f"{name} exited with {p.returncode}"
        r = httpx.get(f"{url}/api/events", params={"limit": 1, "exact_total": "true"}, timeout=10)
        if r.status_code == 200:
            total = r.json()["total"]
            if total >= n:
                return total
        time.sleep(0.5)
    return total


def cli(stack, *args) -> subprocess.CompletedProcess:
    env = {**stack["env"], "SMARTLOGS_URL": stack["url"], "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "smartlogs.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def stack_logs(stack) -> str:
    return "\n".join(f"--- {v} ---\n" + (stack["tmp"] / f"{v}.log").read_text()[-2500:]
                     for v in ("api", "bridge", "worker"))


def post_items(url: str, items: list[dict], size: int = 250) -> None:
    """POST ``items`` to the stack's /ingest, ``size`` a request; each must be accepted."""
    with httpx.Client(timeout=60) as client:
        for i in range(0, len(items), size):
            r = client.post(f"{url}/ingest", json=items[i:i + size])
            assert r.status_code == 202, r.text


def start_worker(stack, name: str) -> subprocess.Popen:
    """Another `smartlogs worker` on the stack's settings (its log ``<tmp>/<name>.log``, its
    /healthz on ``proc.metrics_port``); the caller stops it."""
    port = free_port()
    env = {**stack["env"], "SMARTLOGS_WORKER_METRICS_PORT": str(port)}
    log = open(stack["tmp"] / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    proc.metrics_port = port
    return proc


def assigned(port: int) -> int:
    """How many partitions the worker whose /healthz is on ``port`` holds (0 if it does not
    answer)."""
    try:
        detail = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except (httpx.TransportError, ValueError):
        return 0
    return len(detail.get("kafka", {}).get("state", {}))


@contextmanager
def two_workers(tmp_path, rabbitmq: str, kafka: str, elasticsearch: str, **kwargs):
    """``run_stack`` (``kwargs``: its own) with a second worker, ``procs["worker-b"]``: yields
    (stack, the second worker's process). On the way out the second worker is killed (unless
    the test took it out of ``procs``) and the stack stopped and cleaned up."""
    gen = run_stack(tmp_path, rabbitmq, kafka, elasticsearch, **kwargs)
    stack = next(gen)
    second = stack["procs"]["worker-b"] = start_worker(stack, "worker-b")
    try:
        yield stack, second
    finally:
        if "worker-b" in stack["procs"]:
            stack["procs"].pop("worker-b").kill()
        next(gen, None)
