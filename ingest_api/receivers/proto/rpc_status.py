"""``google.rpc.Status`` (code, message, details): the body of OTLP/HTTP error answers."""

from __future__ import annotations

from ingest_api.receivers.proto import field, message_classes

__all__ = ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "Status"]

INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE = 3, 8, 14  # google.rpc.Code

Status = message_classes(
    "smartlogs/receivers/google/rpc/status.proto", "google.rpc", ["google/protobuf/any.proto"], {
        "Status": [
            field("code", 1, "int32"),
            field("message", 2, "string"),
            field("details", 3, "message", repeated=True, type_name=".google.protobuf.Any"),
        ],
    })["Status"]
