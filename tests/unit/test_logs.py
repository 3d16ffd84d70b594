import json
import logging

from smartlogs.logs import JsonFormatter, correlation_ids


def test_json_lines_carry_service_and_correlation_id():
    rec = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": "accepted %d events",
                                 "args": (3,), "correlation_id": "abc123"})
    doc = json.loads(JsonFormatter("api").format(rec))
    assert doc["service"] == "api" and doc["message"] == "accepted 3 events"
    assert doc["correlation_id"] == "abc123" and doc["level"] == "INFO" and doc["ts"].endswith("Z")


def test_correlation_ids_of_a_batch():
    assert correlation_ids([{"cid": "a"}, {"cid": "a"}, {"cid": "b"}, {}]) == "a,b"
