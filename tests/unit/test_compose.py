"""docker-compose.yml cannot run here (no Docker engine); check what can be checked."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def engine_versions() -> dict[str, str]:
    text = (REPO / "scripts" / "engines" / "common.sh").read_text()
    return {k: re.search(rf"^{k}=(\S+)", text, re.M).group(1) for k in ("KAFKA_VERSION", "ES_VERSION")}


def test_images_are_pinned_to_the_versions_the_tests_use():
    svc = compose()["services"]
    v = engine_versions()
    assert svc["kafka"]["image"] == f"apache/kafka:{v['KAFKA_VERSION']}"
    assert svc["elasticsearch"]["image"].endswith(f"elasticsearch:{v['ES_VERSION']}")
    assert svc["kibana"]["image"].endswith(f"kibana:{v['ES_VERSION']}")
    assert svc["rabbitmq"]["image"].startswith("rabbitmq:3.10.8")  # Debian bookworm's rabbitmq-server
    for name, s in svc.items():
        assert ":" in s["image"] and not s["image"].endswith(":latest"), name


def test_every_healthy_dependency_has_a_healthcheck():
    svc = compose()["services"]
    for name, s in svc.items():
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in svc, (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in svc[dep], f"{name} waits for {dep} to be healthy, it has no healthcheck"


def test_services_run_the_cli_verbs_that_exist():
    from typer.main import get_command

    from smartlogs.cli import app

    verbs = set(get_command(app).commands)
    svc = compose()["services"]
    for name in ("api", "bridge", "worker"):
        assert svc[name]["command"][0] in verbs
    assert "replay" in svc and svc["replay"]["profiles"] == ["setup"]


def test_prometheus_scrapes_every_service_on_its_metrics_port():
    from smartlogs.settings import Settings

    svc = compose()["services"]
    assert svc["prometheus"]["profiles"] == ["monitoring"]
    conf = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in conf["scrape_configs"]}
    s = Settings()
    assert targets == {"smartlogs-api": f"api:{s.port}", "smartlogs-bridge": f"bridge:{s.bridge_metrics_port}",
                       "smartlogs-worker": f"worker:{s.worker_metrics_port}"}


def test_every_smartlogs_service_has_a_readiness_healthcheck_on_its_own_port():
    from smartlogs.settings import Settings

    s = Settings()
    svc = compose()["services"]
    ports = {"api": s.port, "bridge": s.bridge_metrics_port, "worker": s.worker_metrics_port}
    for name, port in ports.items():
        test = " ".join(svc[name]["healthcheck"]["test"])
        assert f"localhost:{port}/healthz" in test, (name, test)
