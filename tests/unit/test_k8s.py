"""deploy/k8s cannot be applied here (no cluster); check it against docker-compose.yml."""

from __future__ import annotations

from pathlib import Path

import yaml

from smartlogs.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def _docs() -> list[dict]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = []
    for name in kust["resources"]:
        out += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return out


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _workloads() -> dict[str, dict]:
    return {d["metadata"]["name"].removeprefix("smartlogs-"): d for d in _docs()
            if d["kind"] in ("Deployment", "StatefulSet")}


def test_same_services_images_and_commands_as_compose():
    svc = _compose()["services"]
    work = _workloads()
    assert set(work) == {"api", "bridge", "worker"}
    for name, w in work.items():
        (container,) = w["spec"]["template"]["spec"]["containers"]
        assert container["image"] == svc[name]["image"], name
        assert container["args"] == svc[name]["command"], name
        assert w["spec"]["selector"]["matchLabels"].items() <= w["spec"]["template"]["metadata"]["labels"].items()


def test_settings_equal_the_compose_environment_and_are_known_settings():
    config = next(d for d in _docs() if d["kind"] == "ConfigMap")
    assert config["data"] == {k: str(v) for k, v in _compose()["x-smartlogs-env"].items()}
    known = {f"SMARTLOGS_{name.upper()}" for name in Settings.model_fields}
    assert set(config["data"]) <= known
    for w in _workloads().values():
        (container,) = w["spec"]["template"]["spec"]["containers"]
        refs = {next(iter(r)): next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"configMapRef": "smartlogs-config", "secretRef": "smartlogs-secrets"}


def test_probes_use_the_healthz_endpoints_compose_checks():
    svc = _compose()["services"]
    for name, w in _workloads().items():
        (container,) = w["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probe = container["readinessProbe"]["httpGet"]
        assert probe["path"] == "/healthz"
        port = ports[probe["port"]]
        assert f"localhost:{port}/healthz" in " ".join(svc[name]["healthcheck"]["test"]), name
        assert container["livenessProbe"]["tcpSocket"]["port"] in ports


def test_worker_replicas_are_within_the_partition_count():
    worker = _workloads()["worker"]
    assert worker["kind"] == "StatefulSet"  # a stable identity per worker (its state is in Kafka)
    assert 1 <= worker["spec"]["replicas"] <= Settings().kafka_partitions
