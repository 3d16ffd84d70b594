"""Loki's push messages (``logproto``), wire-compatible with grafana/loki ``pkg/push/push.proto``.

Field names and numbers are those of ``push.proto`` beside this file.
"""

from __future__ import annotations

from ingest_api.receivers.proto import field, message_classes

__all__ = ["EntryAdapter", "LabelPairAdapter", "PushRequest", "PushResponse", "StreamAdapter"]

_classes = message_classes(
    "smartlogs/receivers/loki/push.proto", "logproto", ["google/protobuf/timestamp.proto"], {
        "PushRequest": [
            field("streams", 1, "message", repeated=True, type_name=".logproto.StreamAdapter"),
            field("format", 2, "string"),
        ],
        "PushResponse": [],
        "StreamAdapter": [
            field("labels", 1, "string"),
            field("entries", 2, "message", repeated=True, type_name=".logproto.EntryAdapter"),
            field("hash", 3, "uint64"),
        ],
        "LabelPairAdapter": [
            field("name", 1, "string"),
            field("value", 2, "string"),
        ],
        "EntryAdapter": [
            field("timestamp", 1, "message", type_name=".google.protobuf.Timestamp"),
            field("line", 2, "string"),
            field("structuredMetadata", 3, "message", repeated=True,
                  type_name=".logproto.LabelPairAdapter"),
            field("parsed", 4, "message", repeated=True, type_name=".logproto.LabelPairAdapter"),
        ],
    })

PushRequest = _classes["PushRequest"]
PushResponse = _classes["PushResponse"]
StreamAdapter = _classes["StreamAdapter"]
EntryAdapter = _classes["EntryAdapter"]
LabelPairAdapter = _classes["LabelPairAdapter"]
