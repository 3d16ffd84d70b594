"""Replay a log file into a running SmartLogs over HTTP, in batches, with pacing and retries.

Each line gets the id ``<run id>:<line number>``, so a batch that is retried after a
timeout or a 503 is stored once, never twice. Pacing:

* full speed (default): batches are sent back to back, in file order;
* ``rate``: a fixed number of lines per second;
* ``speedup``: follow the log's own timestamps, ``speedup`` times faster than real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from streams.parsing import LineParser

__all__ = ["ReplayResult", "count_lines", "read_lines", "plan_batches", "send_batches"]


@dataclass
class ReplayResult:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    aborted: bool = False  # the server stayed unreachable: the rest of the file was not sent


def count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def read_lines(path: Path, repeat: int = 1) -> Iterator[tuple[int, str]]:
    """(line number, text) pairs; bytes that are not UTF-8 are replaced, never dropped."""
    n = 0
    for _ in range(repeat):
        with open(path, "rb") as f:
            for raw in f:
                n += 1
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip():
                    yield n, line


def plan_batches(
    lines: Iterator[tuple[int, str]],
    *,
    batch_size: int = 1000,
    rate: float | None = None,
    speedup: float | None = None,
    year: int | None = None,
) -> Iterator[tuple[float, list[tuple[int, str]]]]:
    """(seconds after start at which to send, batch) pairs. Pure: no clock, no I/O."""
    if rate:
        size = max(1, min(batch_size, int(rate / 10) or 1))
        sent = 0
        batch: list = []
        for item in lines:
            batch.append(item)
            if len(batch) >= size:
                yield sent / rate, batch
                sent += len(batch)
                batch = []
        if batch:
            yield sent / rate, batch
        return
    if speedup:
        parser = LineParser(year=year)
        t0 = None
        due = 0.0
        batch = []
        for item in lines:
            ts = parser.parse(item[1]).timestamp
            if ts is not None:
                t = ts.timestamp()
                t0 = t if t0 is None else t0
                line_due = max(due, (t - t0) / speedup)  # never go back in time
            else:
                line_due = due
            if batch and (line_due - due > 0.1 or len(batch) >= batch_size):
                yield due, batch
                batch = []
            if not batch:
                due = line_due
            batch.append(item)
        if batch:
            yield due, batch
        return
    batch = []
    for item in lines:
        batch.append(item)
        if len(batch) >= batch_size:
            yield 0.0, batch
            batch = []
    if batch:
        yield 0.0, batch


def send_batches(
    url: str,
    batches: Iterator[tuple[float, list[tuple[int, str]]]],
    *,
    run_id: str,
    headers: dict[str, str] | None = None,
    max_retries: int = 8,
    on_batch: Callable[[int, int], None] | None = None,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """POST each batch as NDJSON to ``url``/ingest; retry transient failures with backoff."""
    res = ReplayResult()
    own = client is None
    client = client or httpx.Client(timeout=60)
    start = time.monotonic()
    try:
        for due, batch in batches:
            wait = due - (time.monotonic() - start)
            if wait > 0:
                sleep(wait)
            body = b"\n".join(orjson.dumps({"id": f"{run_id}:{n}", "raw": line}) for n, line in batch)
            res.sent += len(batch)
            ok = _post(client, url, body, headers or {}, max_retries, res, sleep)
            if ok:
                res.accepted += len(batch)
            else:
                res.rejected += len(batch)
            if on_batch:
                on_batch(len(batch), 0 if ok else len(batch))
            if res.aborted:
                break
    finally:
        res.seconds = time.monotonic() - start
        if own:
            client.close()
    return res


def _post(client, url, body, headers, max_retries, res, sleep) -> bool:
    delay = 0.2
    for attempt in range(max_retries + 1):
        try:
            r = client.post(f"{url.rstrip('/')}/ingest", content=body,
                            headers={"Content-Type": "application/x-ndjson", **headers})
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code == 202:
                return True
            if r.status_code not in (429, 502, 503, 504):
                try:
                    detail = r.json().get("detail", r.text)
                except ValueError:
                    detail = r.text
                res.errors.append(f"HTTP {r.status_code}: {detail}")
                return False
            problem = f"HTTP {r.status_code}"
            retry_after = r.headers.get("retry-after")
            if retry_after and retry_after.isdigit():
                delay = max(delay, float(retry_after))
        if attempt == max_retries:
            res.errors.append(f"gave up after {max_retries} retries: {problem}")
            res.aborted = problem.startswith(("Connect", "HTTP 5"))
            return False
        res.retries += 1
        sleep(delay)
        delay = min(delay * 2, 10.0)
    return False
