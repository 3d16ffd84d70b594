"""Logging for every SmartLogs service: human-readable in a terminal, JSON lines in production.

``configure_logging(service, level, json_lines)`` sets the root logger. JSON lines carry
``ts``, ``level``, ``service``, ``logger``, ``message`` and any ``extra`` fields — notably
``correlation_id``: the id the API gives each accepted request (every event id of that request
starts with it), logged again by the bridge when it moves the batch to Kafka, and by the
worker or the embedded runner when its events are stored. ``grep`` one id to follow a batch
from the API to the sink.

No secret reaches a log line: the services call ``smartlogs.security.register_secrets`` at
start, after which every record's message and traceback is scrubbed of the configured
passwords/API keys (and of URL passwords) when it is created, whatever handler prints it.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

__all__ = ["JsonFormatter", "configure_logging", "correlation_ids", "dict_config"]

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
        if record.exc_info:  # exc_text: already rendered (and scrubbed, smartlogs.security)
            doc["exception"] = record.exc_text or self.formatException(record.exc_info)
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


def dict_config(service: str, json_lines: bool) -> dict | None:
    """A ``logging.config.dictConfig`` for processes whose framework sets up logging itself
    (the Faust worker: mode's Worker applies ``App(logging_config=...)`` at start, replacing
    any handler set before). JSON lines when ``json_lines``; None keeps the framework's own
    colored terminal format."""
    if not json_lines:
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["default"]},
    }


def correlation_ids(items: list[dict]) -> str:
    """The distinct correlation ids of a batch's items, comma-separated (usually one)."""
    seen: dict[str, None] = {}
    for item in items:
        cid = item.get("cid")
        if cid:
            seen[cid] = None
    return ",".join(seen)
