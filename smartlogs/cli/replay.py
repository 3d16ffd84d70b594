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

from streams.multiline import join_lines
from streams.parsing import LineParser

__all__ = ["ReplayResult", "PostOutcome", "count_lines", "count_events", "read_lines", "plan_batches",
           "send_batches", "post_ingest", "retry_after_seconds"]


@dataclass
class ReplayResult:
    """What became of the planned lines: each is exactly one of accepted, rejected (the server
    answered and refused it, with a reason in ``errors``), undelivered (tried, but no answer or
    only busy/unavailable ones after the retries) or unsent (never tried: the replay stopped)."""

    sent: int = 0  # lines the server answered for: accepted + rejected
    accepted: int = 0
    rejected: int = 0
    undelivered: int = 0
    unsent: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # why the rest of the file was not sent: "unavailable" (server unreachable/5xx) or "auth"
    abort_reason: str | None = None

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def planned(self) -> int:
        return self.accepted + self.rejected + self.undelivered + self.unsent

    @property
    def not_delivered(self) -> int:
        """Lines the server never got to answer for: a rerun with the same run id sends them."""
        return self.undelivered + self.unsent


def count_lines(path: Path) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def count_events(path: Path, repeat: int = 1, *, multiline: bool = True) -> int:
    """How many lines (events) :func:`read_lines` yields: blank lines skipped, continuation
    lines joined. One pass of the file, multiplied by ``repeat``."""
    return sum(1 for _ in read_lines(path, multiline=multiline)) * repeat


def read_lines(path: Path, repeat: int = 1, *, multiline: bool = True) -> Iterator[tuple[int, str]]:
    """(line number, text) pairs; bytes that are not UTF-8 are replaced, never dropped.
    ``multiline``: a stack trace or an indented continuation joins the line before it, as one
    event numbered by its first line (streams.multiline)."""
    def physical() -> Iterator[tuple[int, str]]:
        n = 0
        for _ in range(repeat):
            with open(path, "rb") as f:
                for raw in f:
                    n += 1
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if line.strip():
                        yield n, line

    return join_lines(physical()) if multiline else physical()


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
    retry_for: float | None = None,
    on_batch: Callable[[int, str], None] | None = None,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayResult:
    """POST each batch as NDJSON to ``url``/ingest; retry transient failures with backoff:
    ``max_retries`` times (about 33 s with the default 8), or, with ``retry_for``, for up to
    that many seconds per batch however many retries that takes (a long outage).

    ``on_batch(lines, outcome)`` after each batch, outcome "accepted", "rejected" (the server
    refused it: a 4xx) or "undelivered" (no answer, or still busy/unavailable after the
    retries). Once the server is known to be down or to refuse the key, the rest is not sent
    and counted as ``unsent``."""
    res = ReplayResult()
    own = client is None
    client = client or httpx.Client(timeout=60)
    start = time.monotonic()
    batches = iter(batches)  # one pass: what is left after a stop is counted from the same plan
    try:
        for due, batch in batches:
            wait = due - (time.monotonic() - start)
            if wait > 0:
                sleep(wait)
            body = b"\n".join(orjson.dumps({"id": f"{run_id}:{n}", "raw": line}) for n, line in batch)
            outcome = _post(client, url, body, headers or {}, max_retries, res, sleep,
                            retry_for=retry_for, clock=clock)
            if outcome == "undelivered":
                res.undelivered += len(batch)
            else:
                res.sent += len(batch)
                if outcome == "accepted":
                    res.accepted += len(batch)
                else:
                    res.rejected += len(batch)
            if on_batch:
                on_batch(len(batch), outcome)
            if res.aborted:
                # count what is left (the plan is pure: no waiting), so the summary can say it
                res.unsent = sum(len(b) for _, b in batches)
                break
    finally:
        res.seconds = time.monotonic() - start
        if own:
            client.close()
    return res


@dataclass
class PostOutcome:
    """What :func:`post_ingest` got: accepted, or why not."""

    ok: bool
    status: int | None = None  # the last HTTP status (None: no answer)
    retries: int = 0
    error: str | None = None  # the last problem, e.g. "HTTP 422: ..." or "ConnectError: ..."
    transient: bool = False  # the last problem was retryable (gave up, or asked to stop)


RETRYABLE = (429, 502, 503, 504)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) → seconds to wait; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def post_ingest(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    max_retries: int | None = 8,
    sleep: Callable[[float], object] = time.sleep,
    first_delay: float = 0.2,
    max_delay: float = 10.0,
    max_retry_after: float = 300.0,
    should_stop: Callable[[], bool] | None = None,
    on_retry: Callable[[str, float], None] | None = None,
    retry_for: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PostOutcome:
    """POST an NDJSON body to ``url``/ingest until it is accepted (202).

    Connection errors, timeouts and 429/502/503/504 are retried with exponential backoff
    (``first_delay`` doubling up to ``max_delay``), waiting at least what ``Retry-After``
    asks (capped at ``max_retry_after``); ``max_retries=None`` retries forever (until
    ``should_stop()``). ``retry_for``: give up once that many seconds passed since the first
    attempt (instead of counting retries; the last wait is cut to end at that time). Any other
    answer is final. Reused by ``replay`` and ``ship``.
    """
    delay, attempt = first_delay, 0
    started = clock()
    out = PostOutcome(ok=False)
    while True:
        try:
            r = client.post(f"{url.rstrip('/')}/ingest", content=body,
                            headers={"Content-Type": "application/x-ndjson", **(headers or {})})
        except httpx.TransportError as exc:
            out.status, out.error = None, f"{type(exc).__name__}: {exc}"
            wait = delay
        else:
            out.status = r.status_code
            if r.status_code == 202:
                out.ok, out.error, out.transient = True, None, False
                return out
            if r.status_code not in RETRYABLE:
                try:
                    detail = r.json().get("detail", r.text)
                except (ValueError, AttributeError):
                    detail = r.text
                out.error, out.transient = f"HTTP {r.status_code}: {detail}", False
                return out
            out.error = f"HTTP {r.status_code}"
            asked = retry_after_seconds(r.headers.get("retry-after"))
            wait = max(delay, min(asked, max_retry_after)) if asked is not None else delay
        out.transient = True
        if retry_for is not None:
            left = retry_for - (clock() - started)
            if left <= 0 or (should_stop and should_stop()):
                return out
            wait = min(wait, left)
        elif (max_retries is not None and attempt >= max_retries) or (should_stop and should_stop()):
            return out
        attempt += 1
        out.retries += 1
        if on_retry:
            on_retry(out.error, wait)
        sleep(wait)
        delay = min(delay * 2, max_delay)


def _post(client, url, body, headers, max_retries, res, sleep, *, retry_for=None,
          clock=time.monotonic) -> str:
    """"accepted", "rejected" (a final refusal) or "undelivered" (gave up on a transient one)."""
    out = post_ingest(client, url, body, headers, max_retries=max_retries, sleep=sleep,
                      retry_for=retry_for, clock=clock)
    res.retries += out.retries
    if out.ok:
        return "accepted"
    if out.transient:
        tried = (f"{out.retries} retries over {retry_for:g}s" if retry_for is not None
                 else f"{max_retries} retries")
        res.errors.append(f"gave up after {tried}: {out.error}")
        if out.error.startswith(("Connect", "HTTP 5")):
            res.abort_reason = "unavailable"
        return "undelivered"
    res.errors.append(out.error)
    if out.status in (401, 403):  # every later batch would be refused the same way
        res.abort_reason = "auth"
    return "rejected"
