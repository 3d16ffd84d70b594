"""Incidents: flagged lines that share a cause, grouped into one record with a count.

A flood of identical failures is one thing to look at, not forty. ``IncidentTracker`` is part
of the pipeline's state (pickled with it in every checkpoint) and, like the rest of the core,
reads no clock and does no I/O: times are the lines' own event times (``ts``) and arrival
times (``received``, stamped by the API and kept in the spool or the Kafka message), so a
re-run of the same input after a crash gives the same incidents, ids and counts.

Which lines belong together: the key ``streams.scoring.incident_key`` gives, the one the
adaptive threshold already uses ("the same strongest evidence for the same host or pattern");
a flagged line whose evidence has no clear leader (severity, the trees) is keyed by its source
and pattern. A line joins the open incident of its key when it comes at most ``gap`` seconds
(event time) after that incident's last line and at most ``quiet`` seconds after it arrived;
otherwise the incident is resolved and the line opens a new one.

When an incident is resolved:
  * when a later line of the same stream (a replayed file, a shipper's path, a receiver;
    ``ctx["source"]`` or the line's host) passes ``last + quiet`` in event time: a replay of
    last year's logs resolves its incidents in its own time, however fast it runs, and is
    not resolved by live lines of today;
  * on ``tick(now)``, which the runtime calls when it is idle (nothing waiting to be
    processed): incidents whose last line arrived more than ``quiet`` seconds before ``now``
    (a source that went quiet sends no later line). A line that arrives later would not have
    joined them anyway (its ``received`` is past ``last_received + quiet``), so ticks do not
    change what a re-run computes.

Incident ids are ``I`` + 16 hex digits of a hash of the key's kind and the first line's event
id: the same on a re-run. Every change bumps ``rev`` (twice the count, plus one once resolved);
stores keep the snapshot with the highest ``rev``, so an older snapshot written late never
overwrites a newer one, and a re-run writes the same snapshots again.

Silences (``streams.silence``) are incidents of kind ``source_silence`` without lines of their
own: opened by the kind of source's clock when a regularly active source has gone quiet while
its peers keep sending (``open_silence``: first_ts = its last line, last_ts = when it was
noticed), resolved only when that source sends again (``close_silence``: the line back is its
last_event_id and its example), never by quiet periods or ticks. Their id hashes the kind and
the source's last line before the silence.

**Shared incidents** (one severe pattern reaching hosts in several partitions): a key
``("severity", template_id)`` (``streams.pipeline``: the first line of a severe pattern from a
host) is the same in every partition, but each partition has its own tracker and none sees the
others' lines. Its incident id is therefore derived from the pattern and the clock hour of
event time (``SHARED_SPAN``) the line falls in, not from a first line: every partition gives a
line of that pattern in that hour the same id, whatever the order they run in, with no message
between them. Each partition's record is a *part* (``part``: today's id of its first line) with
its own exact count; the stores keep one record per id, merging the parts by ``merge_part``
(count = sum of the parts' counts, first/last = the earliest/latest, open while a part is
open; a part's older snapshot never overwrites its newer one), so a re-run writes the same
record again. A shared incident ends at the hour's end (the next line opens the next hour's),
which is where two partitions' lines could otherwise disagree.

Memory is bounded: resolved incidents leave the state once handed to the runtime
(``take()``), open ones are capped at ``max_open`` (beyond, the one quiet longest is resolved).

>>> t = IncidentTracker(gap=300, quiet=300, examples=3)
>>> ev = lambda i, ts: {"id": f"e{i}", "ts": ts, "received": ts, "message": "auth failure",
...                     "host": "h1", "template_id": "T1", "template": "auth failure",
...                     "score": 0.9, "reason": "burst", "level": "ERROR", "source": "http"}
>>> key = ("template_burst", "h1", "T1")
>>> ids = {t.observe(ev(i, 100.0 + i), key) for i in range(40)}
>>> len(ids), t.open[next(iter(t.open))]["count"]
(1, 40)
>>> [s["status"] for s in t.tick(1000.0)]
['resolved']
"""

from __future__ import annotations

import hashlib
from operator import itemgetter

__all__ = ["IncidentTracker", "incident_id", "DEFAULT_GAP", "DEFAULT_QUIET", "DEFAULT_EXAMPLES",
           "SILENCE", "SHARED_SPAN", "merge_part", "merge_snapshot"]

DEFAULT_GAP = 300.0  # seconds of event time between two lines of one incident, at most
DEFAULT_QUIET = 300.0  # seconds without a line after which an incident is resolved
DEFAULT_EXAMPLES = 5  # example lines kept per incident
SILENCE = "source_silence"  # the kind of a silence incident (streams.silence): no lines of its own
MAX_OPEN = 10_000  # open incidents kept; beyond, the one quiet longest is resolved
_MAX_STREAMS = 10_000  # streams whose latest event time is kept
_MAX_EXAMPLE_CHARS = 2000  # an example line is kept up to this length
# a shared incident (one severe pattern over partitions) covers one clock hour of event time:
# the span every partition agrees on without telling the others (see "Shared incidents")
SHARED_SPAN = 3600.0
_SHARED_KINDS = ("severity",)


def incident_id(key: tuple, first_event_id: str) -> str:
    """A stable id: the same kind of evidence and first line give the same id on every run.
    Only the key's kind counts, not its host or template id: a template id may change after
    the lines were stored (a merge, or the catalog naming it by another worker's id), and the
    re-run's incident must keep the id its lines were stored with."""
    kind = key[0] if key else None
    h = hashlib.sha256(repr((kind, str(first_event_id))).encode("utf-8", "surrogatepass"))
    return "I" + h.hexdigest()[:16]


def _shared(key: tuple) -> bool:
    """A key every partition computes alike for one cause: a severe pattern (no host in it)."""
    return len(key) == 2 and key[0] in _SHARED_KINDS


def shared_incident_id(key: tuple, ts: float) -> tuple[str, int]:
    """The id of a shared key's incident for a line at event time ``ts``, and its hour."""
    span = int(ts // SHARED_SPAN)
    h = hashlib.sha256(repr(("shared", key[0], str(key[1]), span)).encode("utf-8", "surrogatepass"))
    return "I" + h.hexdigest()[:16], span


def merge_part(stored: dict | None, snap: dict) -> dict | None:
    """The record a store keeps for a shared incident after one partition's snapshot
    (``snap``, with its ``part``) joins ``stored`` (None when there is none): the parts'
    latest snapshots, counts summed. None when ``snap`` changes nothing (that part's snapshot
    stored is as new or newer: a re-run, or a late write).

    >>> a = {"id": "I1", "part": "Ia", "status": "open", "count": 2, "rev": 4, "first_ts": 10.0,
    ...      "last_ts": 12.0, "first_received": 10.0, "last_received": 12.0, "max_score": 0.8,
    ...      "last_event_id": "a2", "last_message": "m", "last_reason": "r", "examples": [],
    ...      "resolved_ts": None, "examples_cap": 5}
    >>> b = {**a, "part": "Ib", "count": 1, "rev": 3, "status": "resolved", "first_ts": 11.0,
    ...      "last_ts": 11.0, "last_event_id": "b1", "resolved_ts": 311.0}
    >>> m = merge_part(merge_part(None, a), b)
    >>> m["count"], m["status"], m["first_ts"], m["last_event_id"], sorted(m["parts"])
    (3, 'open', 10.0, 'a2', ['Ia', 'Ib'])
    >>> merge_part(m, b) is None, merge_part(m, {**a, "rev": 2}) is None
    (True, True)
    """
    parts = dict((stored or {}).get("parts") or {})
    old = parts.get(snap["part"])
    if old is not None and int(old["rev"]) >= int(snap["rev"]):
        return None
    parts[snap["part"]] = {k: v for k, v in snap.items() if k != "parts"}
    ps = sorted(parts.values(), key=lambda p: (p["first_ts"], p["part"]))
    last = max(ps, key=lambda p: (p["last_ts"], p["part"]))
    out = {k: v for k, v in ps[0].items() if k != "part"}
    opened = [p for p in ps if p["status"] == "open"]
    cap = max(int(p.get("examples_cap") or DEFAULT_EXAMPLES) for p in ps)
    out.update({
        "status": "open" if opened else "resolved",
        "resolved_ts": None if opened else max(p["resolved_ts"] or p["last_ts"] for p in ps),
        "count": sum(int(p["count"]) for p in ps),
        "rev": sum(int(p["rev"]) for p in ps),
        "last_ts": last["last_ts"],
        "first_received": min(p["first_received"] for p in ps),
        "last_received": max(p["last_received"] for p in ps),
        "max_score": max(p["max_score"] for p in ps),
        "last_event_id": last["last_event_id"], "last_message": last["last_message"],
        "last_reason": last["last_reason"],
        "examples": sorted((x for p in ps for x in p["examples"]),
                           key=lambda x: (x["ts"], str(x["id"])))[:cap],
        "parts": parts,
    })
    return out


def merge_snapshot(stored: dict | None, snap: dict) -> dict | None:
    """What a store keeps after ``snap``: a part merged (``merge_part``), else the snapshot
    itself when its ``rev`` is at least the stored one's (None: keep what is stored)."""
    if snap.get("part") is not None:
        return merge_part(stored, snap)
    if stored is not None and int(stored["rev"]) > int(snap["rev"]):
        return None
    return snap


def _example(e: dict) -> dict:
    return {"id": e["id"], "ts": e["ts"], "timestamp": e.get("timestamp"),
            "host": e.get("host"), "level": e.get("level"), "score": e.get("score"),
            "message": (e.get("message") or "")[:_MAX_EXAMPLE_CHARS]}


class IncidentTracker:
    """Open incidents by key; ``observe`` each flagged line, ``take`` the changed snapshots."""

    def __init__(self, *, gap: float = DEFAULT_GAP, quiet: float = DEFAULT_QUIET,
                 examples: int = DEFAULT_EXAMPLES, max_open: int = MAX_OPEN):
        self.gap = float(gap)
        self.quiet = float(quiet)
        self.examples = int(examples)
        self.max_open = int(max_open)
        self.open: dict[tuple, dict] = {}  # key -> the incident's record (the snapshot)
        self._latest: dict[str, float] = {}  # stream -> latest event time seen
        self._changed: dict[str, dict] = {}  # id -> snapshot, not yet handed to the runtime

    def configure(self, *, gap: float, quiet: float, examples: int) -> None:
        """New settings for a restored tracker (open incidents keep what they have)."""
        self.gap, self.quiet, self.examples = float(gap), float(quiet), int(examples)

    # -- the hot path (flagged lines only) ------------------------------------------------
    def see(self, stream: str, ts: float) -> None:
        """Every line's event time moves its stream's clock (flagged or not)."""
        latest = self._latest
        last = latest.get(stream)
        if last is None:
            if len(latest) >= _MAX_STREAMS:  # forget the half seen least recently in event time
                keep = sorted(latest.items(), key=itemgetter(1))[len(latest) // 2:]
                self._latest = latest = dict(keep)
            latest[stream] = ts
        elif ts > last:
            latest[stream] = ts

    def observe(self, event: dict, key: tuple, stream: str | None = None) -> str:
        """A flagged line: join it to its open incident or open one; returns the incident id."""
        ts = float(event["ts"])
        received = float(event.get("received") or ts)
        stream = stream or event.get("source") or "-"
        inc = self.open.get(key)
        if inc is not None and not self._continues(inc, ts, received):
            self._resolve(key, inc)
            inc = None
        shared = _shared(key)
        if shared and inc is not None and inc.get("span") is not None \
                and int(ts // SHARED_SPAN) != inc["span"]:  # a shared incident's hour is over
            self._resolve(key, inc)
            inc = None
        if inc is None:
            if len(self.open) >= self.max_open:
                k, oldest = min(self.open.items(), key=lambda kv: (kv[1]["last_received"],
                                                                   kv[1]["id"]))
                self._resolve(k, oldest)
            inc = self.open[key] = {
                "id": incident_id(key, event["id"]), "status": "open",
                "kind": key[0] if key else None,
                "source": event.get("host") or stream, "stream": stream,
                "host": event.get("host"), "template_id": event.get("template_id"),
                "template": event.get("template"), "level": event.get("level"),
                "reason": event.get("reason"), "first_ts": ts, "last_ts": ts,
                "first_received": received, "last_received": received,
                "resolved_ts": None, "count": 0, "max_score": 0.0,
                "first_event_id": event["id"], "last_event_id": event["id"],
                "last_message": None, "last_reason": None, "examples": [], "rev": 0,
            }
            if shared:  # the same id in every partition; this partition's record is a part
                inc["part"] = inc["id"]
                inc["id"], inc["span"] = shared_incident_id(key, ts)
                inc["examples_cap"] = self.examples
        inc["count"] += 1
        inc["last_ts"] = max(inc["last_ts"], ts)
        inc["last_received"] = max(inc["last_received"], received)
        inc["last_event_id"] = event["id"]
        inc["last_message"] = (event.get("message") or "")[:_MAX_EXAMPLE_CHARS]
        inc["last_reason"] = event.get("reason")
        inc["stream"] = stream
        score = event.get("score") or 0.0
        if score > inc["max_score"]:
            inc["max_score"] = score
        if len(inc["examples"]) < self.examples:
            inc["examples"].append(_example(event))
        inc["rev"] = 2 * inc["count"]
        self._changed[inc.get("part") or inc["id"]] = inc
        return inc["id"]

    # -- silences (streams.silence): opened by the stream's clock, closed by the source ------
    def open_silence(self, kind: str | None, source: str, host: str | None, since_id,
                     since_ts: float, at_ts: float, received: float, reason: str) -> str:
        """A source gone quiet while its kind kept sending: an incident without lines, from
        its last line (``since_id`` at ``since_ts``) to the line that ends it (``close``).
        Not resolved by quiet periods or ticks: only by the source sending again."""
        key = (SILENCE, kind, source)
        old = self.open.get(key)
        if old is not None:  # (cannot happen: a source is silent once until it speaks)
            self._resolve(key, old)
        if len(self.open) >= self.max_open:
            k, oldest = min(self.open.items(), key=lambda kv: (kv[1]["last_received"],
                                                               kv[1]["id"]))
            self._resolve(k, oldest)
        inc = self.open[key] = {
            "id": incident_id(key, since_id), "status": "open", "kind": SILENCE,
            "source": source, "stream": kind, "host": host, "template_id": None,
            "template": None, "level": None, "reason": reason, "first_ts": since_ts,
            "last_ts": at_ts, "first_received": received, "last_received": received,
            "resolved_ts": None, "count": 0, "max_score": 0.0,
            "first_event_id": since_id, "last_event_id": since_id,
            "last_message": None, "last_reason": reason, "examples": [], "rev": 2,
            "silent_since": since_ts, "detected_ts": at_ts,
        }
        self._changed[inc.get("part") or inc["id"]] = inc
        return inc["id"]

    def close_silence(self, kind: str | None, source: str, event: dict) -> str | None:
        """The silent source sent ``event``: its silence incident is resolved at that line."""
        inc = self.open.pop((SILENCE, kind, source), None)
        if inc is None:  # forgotten (max_open) or never opened
            return None
        ts = float(event["ts"])
        inc["status"] = "resolved"
        inc["last_ts"] = inc["resolved_ts"] = max(ts, inc["last_ts"])
        inc["last_received"] = max(float(event.get("received") or ts), inc["last_received"])
        inc["last_event_id"] = event["id"]
        inc["last_message"] = (event.get("message") or "")[:_MAX_EXAMPLE_CHARS]
        inc["examples"] = [_example(event)]  # the line that ended it
        inc["rev"] = 3
        self._changed[inc.get("part") or inc["id"]] = inc
        return inc["id"]

    def _continues(self, inc: dict, ts: float, received: float) -> bool:
        return (ts <= inc["last_ts"] + self.gap
                and received <= inc["last_received"] + self.quiet
                and not self._quiet_by_events(inc))

    def _quiet_by_events(self, inc: dict) -> bool:
        latest = self._latest.get(inc["stream"])
        return latest is not None and latest > inc["last_ts"] + self.quiet

    def _resolve(self, key: tuple, inc: dict) -> None:
        del self.open[key]
        inc["status"] = "resolved"
        inc["resolved_ts"] = inc["last_ts"] + self.quiet
        inc["rev"] = 2 * inc["count"] + 1 if inc["kind"] != SILENCE else 3
        self._changed[inc.get("part") or inc["id"]] = inc

    # -- periodic -------------------------------------------------------------------------
    def sweep(self) -> None:
        """Resolve the open incidents whose stream's later lines passed ``last + quiet``
        (called after each batch; the same answer ``observe`` would give line by line)."""
        for key, inc in list(self.open.items()):
            if inc["kind"] != SILENCE and self._quiet_by_events(inc):
                self._resolve(key, inc)

    def tick(self, now: float) -> list[dict]:
        """Resolve what went quiet in arrival time (``now``: the runtime's clock, when nothing
        is waiting to be processed) and by event time; returns the changed snapshots."""
        self.sweep()
        for key, inc in list(self.open.items()):
            if inc["kind"] != SILENCE and now > inc["last_received"] + self.quiet:
                self._resolve(key, inc)
        return self.take()

    def take(self) -> list[dict]:
        """The snapshots changed since the last call (copies), for the store to upsert."""
        if not self._changed:
            return []
        out = [snapshot(inc) for inc in self._changed.values()]
        self._changed = {}
        return out

    def describe(self) -> dict:
        return {"open": len(self.open), "gap": self.gap, "quiet": self.quiet}


def snapshot(inc: dict) -> dict:
    """A copy of an incident's record, as the stores keep it."""
    out = dict(inc)
    out["examples"] = [dict(x) for x in inc["examples"]]
    return out
