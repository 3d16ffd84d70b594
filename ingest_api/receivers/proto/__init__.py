"""Protobuf message classes the receivers need and no PyPI package ships.

Built at import time from hand-written descriptors (``descriptor_pb2``) in a private
``DescriptorPool``: no protoc, no generated code pinned to one protobuf release, and no clash
with another library registering the same full names in the default pool.

* :mod:`.loki_push` — Loki's ``logproto.PushRequest`` (schema in ``push.proto`` beside this file);
* :mod:`.rpc_status` — ``google.rpc.Status``, the body of OTLP/HTTP error answers.

OTLP's own messages come from the ``opentelemetry-proto`` package.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.message_factory import GetMessageClass

__all__ = ["POOL", "field", "message_classes"]

POOL = descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
POOL.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)

_F = descriptor_pb2.FieldDescriptorProto


def field(name: str, number: int, kind: str, *, repeated: bool = False,
          type_name: str | None = None) -> descriptor_pb2.FieldDescriptorProto:
    """One field: ``kind`` is string, uint64, int32 or message (with ``type_name``)."""
    f = _F(name=name, number=number, json_name=name,
           type={"string": _F.TYPE_STRING, "uint64": _F.TYPE_UINT64, "int32": _F.TYPE_INT32,
                 "message": _F.TYPE_MESSAGE}[kind],
           label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name
    return f


def message_classes(file_name: str, package: str, dependencies: list[str],
                    messages: dict[str, list]) -> dict[str, type]:
    """Add a proto3 file with ``messages`` (name → fields) to ``POOL``; return their classes."""
    fdp = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax="proto3",
                                             dependency=dependencies)
    for name, fields in messages.items():
        fdp.message_type.add(name=name, field=fields)
    POOL.AddSerializedFile(fdp.SerializeToString())
    return {name: GetMessageClass(POOL.FindMessageTypeByName(f"{package}.{name}"))
            for name in messages}
