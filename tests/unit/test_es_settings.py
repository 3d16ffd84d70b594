"""SMARTLOGS_ES_REFRESH_INTERVAL: how often Elasticsearch makes new events searchable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smartlogs.settings import Settings
from smartlogs.store.elasticsearch import DEFAULT_REFRESH_INTERVAL, ElasticsearchStore, index_template


def test_refresh_interval_default_is_under_the_latency_target(monkeypatch):
    monkeypatch.delenv("SMARTLOGS_ES_REFRESH_INTERVAL", raising=False)
    # an event waits up to one interval: the p99 ingest->searchable target is 1 s
    assert Settings().es_refresh_interval == DEFAULT_REFRESH_INTERVAL == "500ms"
    monkeypatch.setenv("SMARTLOGS_ES_REFRESH_INTERVAL", "5s")
    assert Settings().es_refresh_interval == "5s"
    body = index_template("p", "5s")
    assert body["template"]["settings"]["index"]["refresh_interval"] == "5s"


@pytest.mark.parametrize("bad", ["", "soon", "0s", "-1", "1m", "500 ms", "1.5s"])
def test_refresh_interval_refused_when_malformed(bad):
    with pytest.raises(ValidationError, match="es_refresh_interval"):
        Settings(es_refresh_interval=bad)
    with pytest.raises(ValueError, match="refresh_interval"):
        ElasticsearchStore("http://127.0.0.1:1", index_prefix="p", refresh_interval=bad)


def test_fields_nothing_searches_are_not_indexed():
    props = index_template("p")["template"]["mappings"]["properties"]
    for name in ("message", "raw", "params", "timestamp", "stored_at"):
        assert props[name]["index"] is False and "fields" not in props[name], name
    # what the API filters, sorts and aggregates on stays indexed
    for name in ("words", "host", "level", "template_id", "source", "receiver", "anomaly",
                 "incident_id", "ts", "seq", "received", "@timestamp", "component", "id"):
        assert props[name].get("index", True) is not False, name
    assert index_template("p")["template"]["settings"]["index"]["query"]["default_field"] == ["words"]
