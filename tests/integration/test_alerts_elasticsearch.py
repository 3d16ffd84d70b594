"""The alert engine's state across restarts with its history in the real Elasticsearch (Kafka
mode's store): the same scenario as embedded mode's (tests/component/test_alerting.py), a
condition lasting across a clean restart and a crash raises once and resolves once."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import Elasticsearch

from smartlogs.alerting import EsAlertHistory
from tests.component.test_alerting import Receiver, restart_scenario

pytestmark = pytest.mark.engines


@pytest.mark.timeout(120)
def test_a_condition_lasting_across_restarts_raises_once_and_resolves_once_on_elasticsearch(
        elasticsearch):
    prefix = f"slt-{uuid.uuid4().hex[:10]}"
    client = Elasticsearch(elasticsearch, request_timeout=30)
    receiver = Receiver()
    try:
        restart_scenario(lambda: EsAlertHistory(client, prefix), receiver)
        state = client.get(index=f"{prefix}.alert-state", id="engine")["_source"]
        assert state["position"] > 0 and state["state"]
    finally:
        receiver.close()
        for name in (".alerts", ".alert-silences", ".alert-state"):
            client.options(ignore_status=404).indices.delete(index=prefix + name)
        client.close()
