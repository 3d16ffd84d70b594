"""Protobuf message classes the receivers need and no PyPI package ships.

Built at import time from hand-written descriptors (``descriptor_pb2``) in a private
``DescriptorPool``: no protoc, no generated code pinned to one protobuf release, and no clash
with another library registering the same full names in the default pool.

* :mod:`.loki_push` — Loki's ``logproto.PushRequest`` (schema in ``push.proto`` beside this file);
* :mod:`.rpc_status` — ``google.rpc.Status``, the body of OTLP/HTTP error answers.

OTLP's own messages come from the ``opentelemetry-proto`` package.

:func:`parse_replacing_bad_utf8` parses any of them when a string field holds bytes that are
not UTF-8 (which the python runtime refuses, and Go's gogoproto, Loki's, accepts).
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.message_factory import GetMessageClass

__all__ = ["POOL", "field", "message_classes", "parse_replacing_bad_utf8"]

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


# -- invalid UTF-8 in string fields ------------------------------------------------------------
_F_BYTES, _F_STRING = _F.TYPE_BYTES, _F.TYPE_STRING
_MIRRORS: dict[str, type] = {}


def _mirror_class(cls) -> type:
    """``cls`` with every string field declared ``bytes`` (same numbers, same wire format),
    built once in a pool of its own from the descriptors of ``cls``'s file and its imports."""
    name = cls.DESCRIPTOR.full_name
    if name not in _MIRRORS:
        pool, added = descriptor_pool.DescriptorPool(), set()

        def add(file) -> None:
            if file.name in added:
                return
            for dep in file.dependencies:
                add(dep)
            fdp = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(fdp)
            stack = list(fdp.message_type)
            while stack:
                msg = stack.pop()
                stack.extend(msg.nested_type)
                if msg.options.map_entry:  # a map's key cannot be bytes
                    continue
                for f in msg.field:
                    if f.type == _F_STRING:
                        f.type = _F_BYTES
            pool.Add(fdp)
            added.add(file.name)

        add(cls.DESCRIPTOR.file)
        _MIRRORS[name] = GetMessageClass(pool.FindMessageTypeByName(name))
    return _MIRRORS[name]


def parse_replacing_bad_utf8(cls, data: bytes):
    """``cls.FromString(data)`` for a message whose string fields may hold invalid UTF-8: those
    bytes are decoded with U+FFFD replacement (as ``/ingest`` text, syslog and the shipper do)
    instead of failing the whole message. Slow (parses into a mirror type, then copies): call
    it only once ``cls.FromString`` refused the data. Raises ``DecodeError`` as ``FromString``
    does for anything else wrong."""
    mirror = _mirror_class(cls).FromString(data)
    out = cls()
    _copy(mirror, out)
    return out


def _copy(src, dst) -> None:
    fields = dst.DESCRIPTOR.fields_by_name
    for fd, value in src.ListFields():
        string = fields[fd.name].type == _F_STRING
        target = getattr(dst, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fields[fd.name].message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_fd.message_type is not None:
                    _copy(v, target[k])
                else:
                    target[k] = _text(v) if value_fd.type == _F_STRING else v
        elif fd.message_type is not None:
            if fd.is_repeated:
                for v in value:
                    _copy(v, target.add())
            else:
                target.SetInParent()
                _copy(value, target)
        elif fd.is_repeated:
            target.extend([_text(v) for v in value] if string else value)
        else:
            setattr(dst, fd.name, _text(value) if string else value)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")
