"""Every event has a source (issue 19): its host, else its declared service, the shipped or
replayed file, the receiver's stream (syslog peer, Loki labels, OTLP service.name), the API
key's name; what received it is ``receiver``. One rule (streams.partitions.source_of) gives
the event's source and the partition key."""

from __future__ import annotations

import orjson
import pytest

from ingest_api.receivers.loki import decode_push
from ingest_api.receivers.otlp import decode_logs
from ingest_api.receivers.syslog import make_items
from streams.partitions import component_family, partition_key
from streams.pipeline import Pipeline

HOSTLESS = "disk almost full on /var, 97% used"  # no header: no host, no component


def _one(item: dict) -> dict:
    item = {"id": "e1", "received": 1.8e9, "source": "http", **item}
    (event,) = Pipeline().process([item])
    return event


def test_a_host_is_the_source():
    e = _one({"raw": "Dec  4 04:47:44 db-7 sshd[42]: session opened for user app",
              "stream": "/var/log/auth.log", "key": "edge"})
    assert (e["host"], e["source"], e["receiver"]) == ("db-7", "db-7", "http")


def test_a_declared_service_or_app_comes_before_the_stream_and_the_key():
    e = _one({"message": "payment refused", "component": "billing", "stream": "app.log",
              "key": "edge"})
    assert (e["source"], e["receiver"]) == ("billing", "http")
    assert _one({"message": "payment refused", "component": "sshd[42]"})["source"] == "sshd"


def test_a_shipped_files_path_and_a_replayed_files_name():
    # `smartlogs ship` names each line's file by its path; a replay by the file's name
    shipped = _one({"raw": HOSTLESS, "stream": "/var/log/app/server.log", "source": "file"})
    assert (shipped["source"], shipped["receiver"]) == ("/var/log/app/server.log", "file")
    assert _one({"raw": HOSTLESS, "stream": "server_2k.log"})["source"] == "server_2k.log"


def test_the_syslog_peer_names_a_line_without_a_host():
    items = make_items([HOSTLESS.encode()], "syslog_tcp", "b1", 1.8e9, "10.1.2.3")
    (e,) = Pipeline().process(items)
    assert (e["source"], e["receiver"]) == ("10.1.2.3", "syslog_tcp")
    # UDP: one peer per datagram
    a, b = make_items([b"one", b"two"], "syslog_udp", "b2", 1.8e9, ["10.0.0.1", "10.0.0.2"])
    assert (a["stream"], b["stream"]) == ("10.0.0.1", "10.0.0.2")


def test_loki_labels_name_the_source():
    body = orjson.dumps({"streams": [
        {"stream": {"filename": "/var/log/x.log", "level": "info"}, "values": [["1", "a line"]]},
        {"stream": {"job": "payments", "filename": "/var/log/p.log"}, "values": [["2", "b line"]]},
    ]})
    items = decode_push(body, "application/json", max_bytes=10_000)
    for i, item in enumerate(items):
        item.update(id=f"l{i}", received=1.8e9, source="loki")
    a, b = Pipeline().process(items)
    assert (a["source"], a["receiver"]) == ('{filename="/var/log/x.log"}', "loki")
    assert b["source"] == "payments"  # a service label (job) is the declared service


def test_the_otlp_resource_service_name_is_the_source():
    body = orjson.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
        "scopeLogs": [{"logRecords": [{"body": {"stringValue": "cart emptied"}}]}]}]})
    (item,) = decode_logs(body, "application/json")
    assert item["stream"] == "cart"
    item.update(id="o1", received=1.8e9, source="otlp")
    (e,) = Pipeline().process([item])
    assert (e["source"], e["receiver"]) == ("cart", "otlp")


def test_the_api_keys_name_names_a_line_that_names_nothing_else():
    e = _one({"raw": HOSTLESS, "key": "edge-shipper"})
    assert (e["source"], e["receiver"]) == ("edge-shipper", "http")
    # ... after the file it names
    assert _one({"raw": HOSTLESS, "key": "edge-shipper", "stream": "a.log"})["source"] == "a.log"


def test_the_receiver_is_the_last_resort():
    e = _one({"raw": HOSTLESS})
    assert (e["source"], e["receiver"]) == ("http", "http")


@pytest.mark.parametrize("component, family", [
    ("sshd[42]", "sshd"), ("sshd(pam_unix)", "sshd"), ("kernel", "kernel"), ("CRON: x", "CRON"),
    ("[x]", None), ("", None), (None, None)])
def test_component_family(component, family):
    assert component_family(component) == family


@pytest.mark.parametrize("item", [
    {"message": "m", "component": "billing", "stream": "s", "source": "otlp"},
    {"message": "m", "host": "h1", "component": "billing", "source": "http"},
    {"message": "m", "key": "k", "source": "http"},
    {"raw": "x", "stream": "f.log", "source": "file"},
    {"raw": "x", "source": "syslog_udp"},
])
def test_the_partition_key_is_the_source_an_item_names_before_parsing(item):
    e = _one(item)
    assert partition_key(item) == e["source"]



def test_a_sender_cannot_name_itself_after_an_api_key():
    """Only the API sets an item's ``key`` (the key it let the request in with): a ``key`` in
    the body is one of the event's fields."""
    from ingest_api.decode import decode_body

    (item,) = decode_body(orjson.dumps({"message": "m", "key": "admin"}),
                          content_type="application/json", max_bytes=10_000)
    assert "key" not in item and item["fields"] == {"key": "admin"}
    item.update(id="d1", received=1.8e9, source="http")
    (e,) = Pipeline().process([item])
    assert e["source"] == "http"
