"""Logging for every SmartLogs service: human-readable in a terminal, JSON lines in production.

``configure_logging(service, level, json_lines)`` sets the root logger. JSON lines carry
``ts``, ``level``, ``service``, ``logger``, ``message`` and any ``extra`` fields — notably
``correlation_id``: the id the API gives each accepted request (every event id of that request
starts with it), logged again by the bridge when it moves the batch to Kafka, and by the
worker or the embedded runner when its events are stored. ``grep`` one id to follow a batch
from the API to the sink.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["configure_logging", "JsonFormatter", "correlation_ids"]

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                doc[k] = v
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        cid = getattr(record, "correlation_id", None)
        return f"{line} [cid={cid}]" if cid else line


def configure_logging(service: str, level: str = "info", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(_TextFormatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def correlation_ids(items: list[dict]) -> str:
    """The distinct correlation ids of a batch's items, comma-separated (usually one)."""
    seen: dict[str, None] = {}
    for item in items:
        cid = item.get("cid")
        if cid:
            seen[cid] = None
    return ",".join(seen)
