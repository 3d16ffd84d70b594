"""The production path end to end on real engines:
`smartlogs api` → RabbitMQ → `smartlogs bridge` → Kafka → `smartlogs worker` (Faust) → Elasticsearch,
queried back through the same API and CLI verbs as the embedded mode."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx

from tests.integration.stack import cli, free_port, stack_logs, wait_total


def test_replay_flows_through_every_hop_exactly_once(stack, loghub):
    url = stack["url"]
    r = cli(stack, "replay", str(loghub / "Linux" / "Linux_2k.log"), "--run-id", "fs1",
             "--batch-size", "250")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accepted 2,000" in r.stdout
    assert wait_total(url, 2000, procs=stack["procs"]) == 2000, stack_logs(stack)

    # the same run again: every id is already stored, nothing is duplicated anywhere
    r = cli(stack, "replay", str(loghub / "Linux" / "Linux_2k.log"), "--run-id", "fs1")
    assert r.returncode == 0
    time.sleep(5)
    assert wait_total(url, 2000) == 2000
    st = httpx.get(f"{url}/api/stats", params={"windows": 10000}).json()
    assert st["totals"]["events"] == 2000
    assert st["top_hosts"][0] == {"key": "combo", "count": 2000}

    # every stage reports through its metrics, and `smartlogs status` reads them
    env = stack["env"]
    bridge_m = f"http://127.0.0.1:{env['SMARTLOGS_BRIDGE_METRICS_PORT']}/metrics"
    worker_m = f"http://127.0.0.1:{env['SMARTLOGS_WORKER_METRICS_PORT']}/metrics"
    bridge_text = httpx.get(bridge_m).text
    assert "smartlogs_bridge_produced_lines" in bridge_text
    assert 'smartlogs_last_event_timestamp_seconds{stage="bridge"}' in bridge_text
    # each process exports what it does: no pipeline figures (stuck at 0) from the bridge or the API
    api_text = httpx.get(f"{url}/metrics").text
    for text in (bridge_text, api_text):
        assert "smartlogs_anomalies_total" not in text and "smartlogs_model_warmed_up" not in text
    # readiness next to the metrics: the bridge consumes and produces, the worker's sink answers
    hb = httpx.get(bridge_m.replace("/metrics", "/healthz")).json()
    assert hb == {"status": "ok", "rabbitmq": "consuming", "kafka": "connected", "unacked": 0}, hb
    hw = httpx.get(worker_m.replace("/metrics", "/healthz"))
    assert hw.status_code == 200 and hw.json()["store"]["reachable"] is True, hw.text
    assert hw.json()["kafka"]["assigned_partitions"] >= 1
    worker_text = httpx.get(worker_m).text
    assert 'smartlogs_events_processed_total{stage="sink"} 2000.0' in worker_text
    assert "smartlogs_model_warmed_up 1.0" in worker_text and "smartlogs_worker_gap_messages_total" in worker_text
    r = cli(stack, "status", "--bridge-metrics", bridge_m, "--worker-metrics", worker_m,
             "--interval", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "full mode" in r.stdout and "bridge" in r.stdout and "worker+elasticsearch" in r.stdout
    # the readiness URLs given instead of the metrics ones: the same answer, no traceback
    r = cli(stack, "status", "--bridge-metrics", bridge_m.replace("/metrics", "/healthz"),
             "--worker-metrics", worker_m.replace("/metrics", "/healthz"), "--interval", "0.5")
    assert r.returncode == 0 and "worker+elasticsearch" in r.stdout, r.stdout + r.stderr
    # --url at something that is not the API: down, said plainly
    r = subprocess.run([sys.executable, "-m", "smartlogs.cli", "status", "--url",
                        bridge_m.replace("/metrics", ""), "--interval", "0.2"],
                       capture_output=True, text=True, env={**stack["env"], "COLUMNS": "200"})
    assert r.returncode == 1 and "does not look like the SmartLogs API" in r.stdout, r.stdout

    r = cli(stack, "search", "authentication failure", "--host", "combo", "--json")
    doc = json.loads(r.stdout)
    assert doc["total"] > 0 and all("authentication" in e["message"] for e in doc["events"])
    one = doc["events"][0]
    assert one["template_id"].startswith("T") and isinstance(one["score"], float)
    # every event has a source (its host here) and keeps its receiver (issue 19)
    assert (one["source"], one["receiver"]) == ("combo", "http")
    r = cli(stack, "search", "--source", "combo", "--limit", "1", "--json")
    assert json.loads(r.stdout)["total"] == 2000, r.stdout + r.stderr


def test_broker_down_means_503_with_retry_after(stack):
    """While RabbitMQ cannot take a batch, the API refuses instead of pretending."""
    from ingest_api.publisher import AmqpPublisher  # noqa: F401  (the module under test exists)

    bad = {**stack["env"], "SMARTLOGS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
           "SMARTLOGS_PORT": str(free_port()), "SMARTLOGS_PUBLISH_TIMEOUT": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "api"], env=bad,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{bad['SMARTLOGS_PORT']}"
    try:
        deadline = time.monotonic() + 30
        r = None
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"{url}/ingest", json={"message": "x"}, timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert r is not None and r.status_code == 503, r and r.text
        assert r.headers["retry-after"] and r.json()["error"] == "queue_unavailable"
        h = httpx.get(f"{url}/healthz", timeout=5)
        assert h.status_code == 503 and h.json()["broker"] == "disconnected"
    finally:
        proc.kill()
        proc.wait()


def test_restarted_worker_restores_its_model_from_the_state_topic(stack, loghub):
    """The model lives in Kafka (the state topic), not in the worker process: a new worker
    process restores it, so the same log sent again meets a warm model (no line scored while
    warming up, no template minted twice), and /api/stats counts what Elasticsearch holds."""

    r = cli(stack, "replay", str(loghub / "OpenSSH" / "OpenSSH_2k.log"), "--run-id", "rec")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_total(stack["url"], 2000, procs=stack["procs"]) == 2000, stack_logs(stack)

    # the sample's user= enumeration merges (three ids into a fourth with a fresh model, as here):
    # the worker had Elasticsearch rewrite the events stored under the ids merged away
    from streams.pipeline import Pipeline, PipelineConfig

    local = Pipeline(PipelineConfig())
    lines = (loghub / "OpenSSH" / "OpenSSH_2k.log").read_text(errors="replace").splitlines()
    resolve = local.miner.resolve
    ids = [resolve(e["template_id"]) for e in local.process(
        [{"id": str(i), "raw": line, "received": time.time()} for i, line in enumerate(lines)])]
    merges = local.miner.merges()
    assert merges, "OpenSSH_2k.log no longer makes an enumeration merge: pick other lines"
    deadline = time.monotonic() + 30
    while True:
        got = {t: httpx.get(f"{stack['url']}/api/events", params={"template": t, "limit": 1}
                            ).json()["total"] for t in {*merges, *merges.values()}}
        want = {t: ids.count(t) for t in got}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got == want, (got, want)

    old = stack["procs"]["worker"]
    old.send_signal(signal.SIGTERM)
    old.wait(30)
    log2 = open(stack["tmp"] / "worker2.log", "w")
    new = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", "worker"], env=stack["env"],
                           stdout=log2, stderr=subprocess.STDOUT)
    stack["procs"]["worker"] = new
    templates = {t["id"] for t in httpx.get(f"{stack['url']}/api/templates",
                                             params={"limit": 1000}).json()["templates"]}
    r = cli(stack, "replay", str(loghub / "OpenSSH" / "OpenSSH_2k.log"), "--run-id", "again")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_total(stack["url"], 4000, procs=stack["procs"]) == 4000, stack_logs(stack)
    text = (stack["tmp"] / "worker2.log").read_text()
    assert "state restored from" in text, text[-3000:]
    st = httpx.get(f"{stack['url']}/api/stats", params={"windows": 10000}, timeout=30).json()
    assert st["totals"]["events"] == 4000
    again = {t["id"] for t in httpx.get(f"{stack['url']}/api/templates",
                                         params={"limit": 1000}).json()["templates"]}
    assert again == templates, "the restored model minted new ids for the same lines"
