"""Declared formats through the API, and a bad one refused when the platform starts."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi.testclient import TestClient

from ingest_api.app import create_app
from smartlogs.settings import Settings
from tests.conftest import wait_stored

FORMATS = """
formats:
  - name: billing
    match: {file: "*/billing/*.log"}
    grok: "^%{SYSLOGTIMESTAMP:timestamp} %{LOGLEVEL:level} %{NOTSPACE:component} %{GREEDYDATA:message}"
"""
LINE = "May  1 10:00:00 ERROR invoicer payment gateway timed out"


def _events(client, **params):
    return client.get("/api/events", params={"limit": 100, **params}).json()["events"]


def test_a_declared_format_for_a_file_glob_overrides_detection_and_inference(tmp_path):
    path = tmp_path / "formats.yaml"
    path.write_text(FORMATS)
    settings = Settings(data_dir=tmp_path / "var", syslog_port=0, formats_file=path, default_year=2024)
    with TestClient(create_app(settings)) as client:
        body = (f'{{"raw": "{LINE}", "file": "/srv/billing/app.log"}}\n'
                f'{{"raw": "{LINE}", "file": "/srv/other/app.log"}}\n'
                '{"raw": "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown", '
                '"file": "/srv/billing/app.log"}\n').encode()
        r = client.post("/ingest", content=body, headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 202
        wait_stored(client, 3)
        mine = [e for e in _events(client) if e["format"] == "user:billing"]
        assert len(mine) == 1
        e = mine[0]
        assert (e["level"], e["component"], e["message"]) == (
            "ERROR", "invoicer", "payment gateway timed out")
        assert e["timestamp"] == "2024-05-01T10:00:00.000Z"
        other = [x for x in _events(client, q="gateway") if x["format"] != "user:billing"]
        assert len(other) == 1 and other[0]["component"] != "invoicer"  # the other file: undeclared
        # a syslog line in the declared file: the user's pattern does not match it, detection does
        assert _events(client, q="unknown")[0]["format"] == "syslog"


def test_log_format_as_a_grok_pattern_applies_to_every_line(tmp_path):
    settings = Settings(data_dir=tmp_path, syslog_port=0,
                        log_format="%{INT:pid}\\|%{WORD:level}\\|%{GREEDYDATA:message}")
    with TestClient(create_app(settings)) as client:
        r = client.post("/ingest", content=b"4711|WARNING|queue depth 900\n",
                        headers={"Content-Type": "text/plain"})
        assert r.status_code == 202
        wait_stored(client, 1)
        e = _events(client)[0]
        assert (e["pid"], e["level"], e["message"], e["format"]) == (
            "4711", "WARNING", "queue depth 900", "user:SMARTLOGS_LOG_FORMAT")


def _up(tmp_path, **env):
    full = {**os.environ, "SMARTLOGS_DATA_DIR": str(tmp_path), "SMARTLOGS_PORT": "1", **env}
    return subprocess.run([sys.executable, "-m", "smartlogs.cli", "up"], capture_output=True,
                          text=True, env=full, timeout=60)


def test_a_pattern_that_does_not_compile_is_refused_at_start(tmp_path):
    r = _up(tmp_path, SMARTLOGS_LOG_FORMAT="%{TIMESTAMP_ISO8601:ts} (?P<level>\\w+")
    assert r.returncode == 2  # invalid configuration
    assert "SMARTLOGS_LOG_FORMAT" in r.stderr and "does not compile: missing )" in r.stderr
    bad = tmp_path / "formats.yaml"
    bad.write_text("formats:\n  - name: web\n    grok: '%{NOSUCH:x}'\n")
    r = _up(tmp_path, SMARTLOGS_FORMATS_FILE=str(bad))
    assert r.returncode == 2
    assert str(bad) in r.stderr and "format #1" in r.stderr and "%{NOSUCH}" in r.stderr
