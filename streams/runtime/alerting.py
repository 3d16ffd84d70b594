"""Alerts at run time: the rule engine (``streams.alerts``) fed by stored batches, the alert
history (SQLite, next to the store), silences, and notification delivery.

Delivery never blocks the pipeline: alerts go into a bounded queue per target, and a thread per
target POSTs them (a generic JSON webhook, or a Slack-compatible incoming webhook) with retries
and exponential backoff on timeouts, connection errors, 408/429 and 5xx (a 4xx is final). Each
POST carries ``X-SmartLogs-Alert-Id`` (the alert's id and state), so a receiver can drop a
repeat. A full queue drops the alert from notification (it stays in the history) and counts it.

The engine's state outlives a restart, in the store the history lives in (``alerts.db`` in
embedded mode, Elasticsearch in Kafka mode): ``Alerting`` saves the engine's snapshot
(``AlertEngine.snapshot``, JSON, zlib) with the history's position every
``state_seconds`` when something changed, and at stop; at start it restores the snapshot and
applies the history records written after that position, so a crash between two saves still
knows every alert it opened or resolved (window counts may then miss the last seconds' lines:
the window of a restart never resolves an alert, see ``AlertEngine.restore``).
One implementation for both modes: each history offers ``position()``, ``save_state``,
``load_state``, ``follow`` and ``records_after``.

Several Kafka workers: one record per owner, not per process. A runtime that shares the raw
partitions with other workers sets ``Alerting.holds`` (the parts it holds now:
``streams.alerts.scopes_held``), and hands each stored batch over with its partition's
scope. The groups of a partition-local rule (``streams.alerts.placement``) belong to the
partition whose lines fed them and are saved under ``p<partition>``
(``streams.alerts.partition_scope``); the global rules' groups, the templates seen and the
lines observed under ``global``, held with partition 0. Each history record carries the
scope of its group. At each batch and tick the alerting restores the parts it gained
(``AlertEngine.restore(..., owner=scope)`` into the running engine, then that scope's records
written after the save) and forgets the groups of the parts it lost (``AlertEngine.drop``);
the worker saves the parts of the partitions being revoked before the rebalance completes
(``save(scopes=...)``), so the new holder reads them. A partition's part also records the
raw offset from which the partition's batches are not in it (``raw``, from ``on_stored``'s
``offset``): a batch its new holder processes again after a crash is judged by the
partition-local rules once, whether or not its old holder judged it. The history's ``follow(position)``
makes the records this process writes after taking a part up come after that part's saved
position (Elasticsearch's ``seq`` is a per-writer counter started at its clock), so a later
holder applies them whichever writer's clock is ahead. Embedded mode (``holds`` unset) saves
one record, ``engine``, with every group. The save and restore code is the same for both;
only the key differs.

Global rules with several workers (``streams.alerts.placement``): each worker that does not
hold every partition returns, from ``on_stored``, the *facts* of its stored batch
(``streams.alerts.facts_of``: the lines the global rules count, the first line of each
template); the runtime sends them to a one-partition topic, and the holder of partition 0
reads it and hands them to ``on_facts``, which judges them with the same engine code
(``observe``) under the global record. With ``shares`` and ``forward`` set, the alerts of
partition-local rules are not notified where they were raised but forwarded as facts too,
and ``on_facts`` admits them under the cap over every worker's firings
(``AlertEngine.admit``), notifies and records them with their partition's scope. A part is not
saved while an alert its groups raised is not delivered (``delivered``: recorded, or forwarded
and committed by the runtime), so a crash in between leaves the alert to be raised again from
the older save (``streams.runtime.alert_facts``). The
position of the next fact is saved with the global
record, so a new holder of partition 0 (after a rebalance or a crash) goes on from the facts
after the last save: those judged since are judged again, and the history records written
since (applied at the restore) keep their alerts from firing twice. ``facts_position`` says
whether, and from where, this process reads the facts now. An (id, state) recorded by this
process, or restored as recorded (the records after a part's save), is never notified nor
recorded again (``_first_record``), whichever path raises it again: the facts judged again,
a partition's raw records processed again from its saved offset by its new holder, two
workers' copies of one group. What remains is the window between handing an alert to the
notifier and writing its record: a kill -9 there sends it once more (at least once; the
``X-SmartLogs-Alert-Id`` header lets a receiver drop the repeat; the Slack message shows the
id, as Slack drops nothing). Limits: a part whose history records cannot be applied when it
is taken starts fresh (as a whole engine does at start; one that cannot be read at all is
tried again at the next batch or tick); the workers do not read the single ``engine`` record a
one-worker deployment saved before this (its open alerts may fire once more after the upgrade).

A part has one owner at a time, even when a worker was frozen past the session timeout and
wakes up believing it still holds its partitions: the Elasticsearch history writes a part
only if nobody wrote it since this writer read or wrote it (``if_seq_no``/``if_primary_term``;
the minimal distribution has them), and ``take_state`` writes the part back with a token of
its own (``claim``) as it reads it, so an earlier owner's later write is refused
(``StaleOwner``). A refused save makes this process drop the part, unsaved (``_lose``), and not
take it up again before the next assignment (``assigned``; after a missed generation of the
group, ``assigned(retake=True)`` reads back every part it keeps); before notifying (or
forwarding) alerts, ``_owned`` asks the store whether their part is still this process's
(``owns``: the claim token; the global part for the alerts the judge admits), so the alerts
an older state raises are neither notified nor recorded. ``alerts.db`` (embedded mode) has one
writer, its process: its ``take_state`` is a plain read and it owns every part.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson

from smartlogs.settings import rules_from_file  # read with the settings (the file is checked at start)
from streams.alerts import (GLOBAL_LAG_SECONDS, GLOBAL_SCOPE, MAX_GROUPS, Alert, AlertEngine,
                            alert_from_dict, facts_of, placement)

__all__ = ["AlertHistory", "EsAlertHistory", "Notifier", "Alerting", "StaleOwner",
           "json_payload", "slack_payload", "rules_from_file"]

log = logging.getLogger(__name__)


class StaleOwner(Exception):
    """A part of the engine's state was taken up by another owner since this process read or
    wrote it (it was frozen past the session timeout, or missed a rebalance): it is no longer
    this process's to write."""

# (id, state) pairs remembered as recorded (``Alerting._first_record``): 4 x 10,000 groups
_RECORDED_MAX = 4 * MAX_GROUPS


# -- payloads --------------------------------------------------------------------------------
def console_link(base: str | None, alert: Alert) -> str | None:
    """The console's search filtered to the alert's group and window."""
    if not base:
        return None
    params = {"since": f"{alert.window_start:.0f}", "until": f"{alert.window_end + 1:.0f}"}
    if alert.kind in ("new_template", "template_spike") and alert.group != "*":
        params["template"] = alert.group
    elif alert.group not in ("*", "-") and alert.kind in ("anomaly_burst", "error_flood", "silence", "match"):
        params["host"] = alert.group
    if alert.kind == "anomaly_burst":
        params["anomaly"] = "true"
    return f"{base.rstrip('/')}/#search?{urlencode(params)}"


def json_payload(alert: Alert, console_url: str | None = None) -> dict:
    body = asdict(alert)
    body["link"] = console_link(console_url, alert)
    return body


def slack_payload(alert: Alert, console_url: str | None = None) -> dict:
    icon = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}.get(alert.state, ":mute:")
    title = f"{icon} [{alert.state.upper()}] {alert.rule} ({alert.kind}) — {alert.group}"
    lines = [f"*{title}*", f"count {alert.count}" + (
        f" vs baseline {alert.baseline:.1f}" if alert.baseline is not None else "")]
    lines += [f"• {r}" for r in alert.reasons[:5]]
    if alert.warming_up:
        lines.append(f"_the model is still warming up ({alert.lines_learned:,} lines learned): "
                     "its judgement is not trusted yet_")
    if alert.trigger:
        lines.append(f"> {str(alert.trigger.get('message', ''))[:300]}")
    link = console_link(console_url, alert)
    if link:
        lines.append(f"<{link}|open in SmartLogs>")
    # Slack drops no repeat (it ignores X-SmartLogs-Alert-Id): the id lets people tell a repeat
    # (delivery is at least once) from a new alert
    return {"text": title, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        {"type": "context", "elements": [{"type": "mrkdwn",
                                          "text": f"alert `{alert.id}|{alert.state}`"}]}]}


# -- delivery --------------------------------------------------------------------------------
class Notifier:
    """One target: a queue and a thread that delivers with retries; ``submit`` never blocks."""

    def __init__(self, url: str, *, kind: str = "webhook", console_url: str | None = None,
                 max_queue: int = 1000, timeout: float = 5.0, max_attempts: int = 8,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 client: httpx.Client | None = None, sleep: Callable[[float], object] | None = None):
        self.url, self.kind, self.console_url = url, kind, console_url
        self.max_attempts, self.backoff, self.max_backoff = max_attempts, backoff, max_backoff
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._client = client or httpx.Client(timeout=timeout)
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: threading.Thread | None = None
        self.delivered = self.failed = self.dropped = 0

    def submit(self, alert: Alert) -> bool:
        try:
            self._queue.put_nowait(alert)
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("alert queue for %s is full: alert %s not notified (kept in the history)",
                        self.url, alert.id)
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"smartlogs-notify-{self.kind}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)  # wakes the thread if it waits for work
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            alert = self._queue.get()
            if alert is None:
                return
            self.deliver(alert)

    def deliver(self, alert: Alert) -> bool:
        body = (slack_payload if self.kind == "slack" else json_payload)(alert, self.console_url)
        data = orjson.dumps(body)
        headers = {"Content-Type": "application/json",
                   "X-SmartLogs-Alert-Id": f"{alert.id}|{alert.state}"}
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                r = self._client.post(self.url, content=data, headers=headers)
                if r.status_code < 300:
                    self.delivered += 1
                    return True
                if r.status_code < 500 and r.status_code not in (408, 429):
                    log.error("alert %s refused by %s: %d %s", alert.id, self.url, r.status_code,
                              r.text[:200])
                    break
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if self._stop.is_set() or attempt == self.max_attempts:
                break
            log.warning("alert %s to %s failed (%s); retrying in %.1fs", alert.id, self.url, why, delay)
            self._sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        self.failed += 1
        return False


# -- history and silences --------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, state TEXT NOT NULL,
    rule TEXT NOT NULL, kind TEXT NOT NULL, grp TEXT NOT NULL, at REAL NOT NULL,
    historical INTEGER NOT NULL, notified INTEGER NOT NULL, body BLOB NOT NULL, scope TEXT
);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts(rule, seq);
CREATE TABLE IF NOT EXISTS silences (
    rule TEXT NOT NULL, grp TEXT NOT NULL, until REAL NOT NULL, PRIMARY KEY (rule, grp)
);
CREATE TABLE IF NOT EXISTS engine_state (
    scope TEXT PRIMARY KEY, position INTEGER NOT NULL, saved REAL NOT NULL, state BLOB NOT NULL
);
"""


class AlertHistory:
    """Alerts as they were raised, and silences, in ``alerts.db`` (the embedded mode's store;
    in Kafka mode the worker keeps its own next to its checkpoint)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        if "scope" not in {r[1] for r in self._db.execute("PRAGMA table_info(alerts)")}:
            self._db.execute("ALTER TABLE alerts ADD COLUMN scope TEXT")  # a db made before it

    def record(self, alert: Alert, notified: bool, scope: str | None = None) -> None:
        """Keep ``alert``; ``scope``: the part of the engine's state its group is in."""
        with self._lock:
            self._db.execute(
                "INSERT INTO alerts (id, state, rule, kind, grp, at, historical, notified, body, "
                "scope) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (alert.id, alert.state, alert.rule, alert.kind, alert.group, alert.at,
                 int(alert.historical), int(notified), orjson.dumps(asdict(alert)), scope))

    def list(self, *, rule: str | None = None, state: str | None = None, limit: int = 100) -> list[dict]:
        sql, args = "SELECT body, notified FROM alerts", []
        where = []
        if rule:
            where.append("rule = ?")
            args.append(rule)
        if state:
            where.append("state = ?")
            args.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [{**orjson.loads(b), "notified": bool(n)} for b, n in rows]

    def silence(self, rule: str, group: str, until: float) -> None:
        with self._lock:
            self._db.execute("INSERT INTO silences (rule, grp, until) VALUES (?, ?, ?) "
                             "ON CONFLICT (rule, grp) DO UPDATE SET until = excluded.until",
                             (rule, group, until))

    def silenced(self, rule: str, group: str, now: float) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT max(until) FROM silences WHERE rule = ? AND grp IN (?, '*')",
                (rule, group)).fetchone()
        return bool(row and row[0] and row[0] > now)

    def silences(self, now: float) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT rule, grp, until FROM silences WHERE until > ? "
                                    "ORDER BY until", (now,)).fetchall()
        return [{"rule": r, "group": g, "until": u} for r, g, u in rows]

    # the engine's state (see the module docstring)
    def position(self) -> int:
        """The last record written: the records after it are not in a snapshot taken now."""
        with self._lock:
            return self._db.execute("SELECT coalesce(max(seq), 0) FROM alerts").fetchone()[0]

    def save_state(self, scope: str, state: bytes, position: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO engine_state (scope, position, saved, state) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
                             "position = excluded.position, saved = excluded.saved, "
                             "state = excluded.state", (scope, position, time.time(), state))

    def load_state(self, scope: str) -> tuple[bytes | None, int | None]:
        with self._lock:
            row = self._db.execute("SELECT state, position FROM engine_state WHERE scope = ?",
                                   (scope,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    # one process owns ``alerts.db``: no other owner can write a part behind its back
    take_state = load_state

    def owns(self, scope: str) -> bool:
        return True

    def follow(self, position: int | None) -> None:
        """Records written from now on come after ``position`` (a state saved by another
        process): always so here, one sequence for all."""

    def records_after(self, position: int | None, scope: str | None = None) -> Iterator[dict]:
        """The alerts recorded after ``position`` (all of them for None), oldest first; only
        those of ``scope`` if given."""
        last = -1 if position is None else position
        where = "seq > ?" + (" AND scope = ?" if scope is not None else "")
        while True:
            with self._lock:
                rows = self._db.execute(f"SELECT seq, body FROM alerts WHERE {where} ORDER BY seq "
                                        "LIMIT 1000", (last, scope) if scope is not None
                                        else (last,)).fetchall()
            if not rows:
                return
            for seq, body in rows:
                yield orjson.loads(body)
            last = rows[-1][0]

    def close(self) -> None:
        self._db.close()


class EsAlertHistory:
    """The same history in Elasticsearch (the full stack): ``<prefix>.alerts`` (one document
    per record) and ``<prefix>.alert-silences`` (one per rule and group), names outside the
    events' pattern, made on first use. The worker records, the API lists and silences; a
    record is searchable within the index's refresh interval (1 s)."""

    _MAPPINGS = {"dynamic": False, "properties": {
        "id": {"type": "keyword"}, "state": {"type": "keyword"}, "rule": {"type": "keyword"},
        "kind": {"type": "keyword"}, "group": {"type": "keyword"}, "at": {"type": "double"},
        "seq": {"type": "long"}, "historical": {"type": "boolean"},
        "notified": {"type": "boolean"}, "scope": {"type": "keyword"},
        "body": {"type": "object", "enabled": False}}}
    _SILENCE_MAPPINGS = {"dynamic": False, "properties": {
        "rule": {"type": "keyword"}, "group": {"type": "keyword"}, "until": {"type": "double"}}}
    _STATE_MAPPINGS = {"dynamic": False, "properties": {
        "position": {"type": "long"}, "saved": {"type": "double"},
        "state": {"type": "binary"}, "claim": {"type": "keyword"}}}

    def __init__(self, client, prefix: str):
        self._es = client
        self.index = f"{prefix}.alerts"
        self.silence_index = f"{prefix}.alert-silences"
        self.state_index = f"{prefix}.alert-state"
        self._ready = False
        self._seq = time.time_ns()  # orders records of one writer (the worker) as written
        # per part: the version (seq_no, primary_term) of this writer's last read or write,
        # and the token it claimed the part with (``take_state``)
        self._versions: dict[str, tuple[int, int]] = {}
        self._claims: dict[str, str] = {}

    def _ensure(self) -> None:
        if self._ready:
            return
        es = self._es.options(ignore_status=400)  # already there
        es.indices.create(index=self.index, mappings=self._MAPPINGS,
                          settings={"number_of_replicas": 0})
        es.indices.create(index=self.silence_index, mappings=self._SILENCE_MAPPINGS,
                          settings={"number_of_replicas": 0})
        es.indices.create(index=self.state_index, mappings=self._STATE_MAPPINGS,
                          settings={"number_of_replicas": 0})
        # an index made before records had a scope: add the field (a no-op when it is there)
        es.indices.put_mapping(index=self.index, properties={"scope": {"type": "keyword"}})
        self._ready = True

    def record(self, alert: Alert, notified: bool, scope: str | None = None) -> None:
        self._ensure()
        self._seq += 1
        doc = {"id": alert.id, "state": alert.state, "rule": alert.rule, "kind": alert.kind,
               "group": alert.group, "at": alert.at, "seq": self._seq,
               "historical": alert.historical, "notified": notified, "scope": scope,
               "body": asdict(alert)}
        # one record per (alert, state): a batch processed again after a crash rewrites it
        self._es.index(index=self.index, id=f"{alert.id}|{alert.state}", document=doc)

    def list(self, *, rule: str | None = None, state: str | None = None, limit: int = 100) -> list[dict]:
        self._ensure()
        filters = [{"term": {k: v}} for k, v in (("rule", rule), ("state", state)) if v]
        res = self._es.search(index=self.index, size=limit, query={"bool": {"filter": filters}},
                              sort=[{"seq": "desc"}], source=["body", "notified"])
        return [{**h["_source"]["body"], "notified": h["_source"]["notified"]}
                for h in res["hits"]["hits"]]

    def silence(self, rule: str, group: str, until: float) -> None:
        self._ensure()
        self._es.index(index=self.silence_index, id=f"{rule}|{group}", refresh="true",
                       document={"rule": rule, "group": group, "until": until})

    def silenced(self, rule: str, group: str, now: float) -> bool:
        self._ensure()
        res = self._es.search(index=self.silence_index, size=1, query={"bool": {"filter": [
            {"term": {"rule": rule}}, {"terms": {"group": [group, "*"]}},
            {"range": {"until": {"gt": now}}}]}})
        return bool(res["hits"]["hits"])

    def silences(self, now: float) -> list[dict]:
        self._ensure()
        res = self._es.search(index=self.silence_index, size=1000,
                              query={"range": {"until": {"gt": now}}}, sort=[{"until": "asc"}])
        return [{"rule": h["_source"]["rule"], "group": h["_source"]["group"],
                 "until": h["_source"]["until"]} for h in res["hits"]["hits"]]

    # the engine's state (see the module docstring): one document per scope; a record's
    # ``seq`` orders the history (this writer's counter starts at the clock's nanoseconds, so
    # a restarted writer's records come after its predecessor's, and ``follow`` moves it past
    # the position of a state another worker saved, so that this worker's records of that
    # scope come after it whatever the two clocks say)
    def position(self) -> int:
        return self._seq

    def follow(self, position: int | None) -> None:
        if position is not None:
            self._seq = max(self._seq, int(position))

    #
    # Ownership of a part (several workers): a worker frozen past the session timeout (SIGSTOP,
    # a GC pause, a starved VM) wakes up believing it still holds its partitions, and would
    # write its older in-memory part over the one their new holder saved. So every write of a
    # part is conditional (Elasticsearch's optimistic concurrency, ``if_seq_no`` and
    # ``if_primary_term``: in every distribution, the minimal one too) on the version this
    # writer last read or wrote; taking a part up (``take_state``) reads it and writes it
    # back at once with a token of its own (``claim``), so from then on any earlier owner's
    # write is refused (``StaleOwner``), saved before or not. ``owns`` compares the token.
    def save_state(self, scope: str, state: bytes, position: int) -> None:
        import base64

        self._ensure()
        self._write(scope, {"position": position, "saved": time.time(),
                            "state": base64.b64encode(state).decode("ascii")})

    def _write(self, scope: str, doc: dict) -> None:
        """Write ``scope``'s part if nobody else wrote it since this writer read or wrote it
        (a first one only if there is none); else ``StaleOwner``."""
        from elasticsearch import ConflictError

        doc = {**doc, "claim": self._claims.get(scope)}
        for _ in range(2):
            version = self._versions.get(scope)
            try:
                if version is None:
                    res = self._es.index(index=self.state_index, id=scope, document=doc,
                                         op_type="create")
                else:
                    res = self._es.index(index=self.state_index, id=scope, document=doc,
                                         if_seq_no=version[0], if_primary_term=version[1])
            except ConflictError:
                # refused: unless the newer version is this writer's own (a write that
                # landed though its answer was lost), another owner wrote it
                found = self._read(scope)
                if (found is not None and doc["claim"] is not None
                        and found[0].get("claim") == doc["claim"]):
                    self._versions[scope] = found[1]
                    continue
                self._versions.pop(scope, None)
                raise StaleOwner(scope) from None
            self._versions[scope] = (res["_seq_no"], res["_primary_term"])
            return
        raise StaleOwner(scope)

    def _read(self, scope: str) -> tuple[dict, tuple[int, int]] | None:
        doc = self._es.options(ignore_status=404).get(index=self.state_index, id=scope)
        if not doc.get("found"):
            return None
        return doc["_source"], (doc["_seq_no"], doc["_primary_term"])

    def load_state(self, scope: str) -> tuple[bytes | None, int | None]:
        """``scope``'s saved part and position (None, None if none): a read, no claim."""
        import base64

        self._ensure()
        found = self._read(scope)
        if found is None or not found[0].get("state"):  # none, or only claimed
            return None, None
        return base64.b64decode(found[0]["state"]), found[0]["position"]

    def take_state(self, scope: str) -> tuple[bytes | None, int | None]:
        """Read ``scope``'s part and claim it (see above): the writes of whoever held it
        before are refused from now on; ``StaleOwner`` if another took it meanwhile."""
        import base64

        self._ensure()
        found = self._read(scope)
        self._versions.pop(scope, None)
        src = {"position": None, "saved": time.time(), "state": None}
        if found is not None:
            src, self._versions[scope] = found[0], found[1]
        self._claims[scope] = uuid.uuid4().hex
        self._write(scope, {**src, "claimed": time.time()})
        if not src.get("state"):
            return None, None
        return base64.b64decode(src["state"]), src["position"]

    def owns(self, scope: str) -> bool:
        """Whether ``scope``'s part is still this writer's (nobody claimed it since): True
        when this writer never took it, or the store cannot say (an error is not a loss)."""
        mine = self._claims.get(scope)
        if mine is None:
            return True
        try:
            doc = self._es.options(ignore_status=404).get(
                index=self.state_index, id=scope, source_includes=["claim"])
        except Exception:  # noqa: BLE001 - cannot tell: at least once (README)
            log.warning("cannot read who owns the alert engine's %s part; going on", scope)
            return True
        return not doc.get("found") or (doc.get("_source") or {}).get("claim") == mine

    def records_after(self, position: int | None, scope: str | None = None) -> Iterator[dict]:
        self._ensure()
        self._es.indices.refresh(index=self.index)  # the records of the last second too
        flt = [] if position is None else [{"range": {"seq": {"gt": position}}}]
        if scope is not None:
            flt.append({"term": {"scope": scope}})
        query = {"bool": {"filter": flt}}
        after = None
        while True:
            res = self._es.search(index=self.index, size=1000, query=query, sort=[{"seq": "asc"}],
                                  source=["body"], search_after=after)
            hits = res["hits"]["hits"]
            if not hits:
                return
            for h in hits:
                yield h["_source"]["body"]
            after = hits[-1]["sort"]

    def close(self) -> None:
        pass  # the client is the store's


class Alerting:
    """Engine + history + notifiers, fed by the stored batches (``on_stored``) and a clock
    thread (``tick`` every second); thread-safe. The engine's state is restored from the
    history's store before the first batch or tick, and saved there every ``state_seconds``
    when it changed and at stop, under ``scope`` (one engine per scope). A runtime that
    shares the partitions with other workers sets ``holds`` instead: the state is then saved
    and restored per owner (``streams.alerts.scopes_held``), see the module docstring."""

    def __init__(self, engine: AlertEngine, history: AlertHistory, notifiers: list[Notifier],
                 *, clock: Callable[[], float] = time.time, tick_seconds: float = 1.0,
                 state_seconds: float = 5.0, scope: str = "engine"):
        self.engine, self.history, self.notifiers = engine, history, notifiers
        self.clock, self.tick_seconds = clock, tick_seconds
        self.state_seconds, self.scope = state_seconds, scope
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # set by the runtime: whether accepted lines still wait to be processed (then the
        # clock does not close windows: their lines may still come, e.g. after a restart)
        self.busy: Callable[[], bool] | None = None
        # set by a runtime that shares the events with other workers: () -> (the rules judged
        # over this process's events, the global ones it judges over every worker's facts:
        # streams.alerts.assign_rules)
        self.plan: Callable[[], tuple[tuple, tuple]] | None = None
        # set by a runtime whose events are split by partition over several workers: () -> the
        # parts of the state it holds now (``streams.alerts.scopes_held``); None: one process,
        # one record under ``scope``
        self.holds: Callable[[], set[str]] | None = None
        # the facts (streams.alerts.facts_of) judged here: the offset of the next one in their
        # topic (-1: none known; saved with the global record), the templates passed on, and
        # whether a revocation's save fenced the judging off until the new assignment
        self._facts_next = -1
        self._passed: set[str] = set()
        self._fenced = False
        # set by a runtime whose events are split over several workers: () -> whether this
        # process shares the partitions with others now, and ``forward(record)`` (any thread)
        # to send a facts record; its partition-local rules' alerts then go to the holder of
        # partition 0, which applies the cap over every worker's firings (``AlertEngine.admit``)
        self.shares: Callable[[], bool] | None = None
        self.forward: Callable[[dict], None] | None = None
        # (id, state) of the alerts recorded by this process or after a restored record's
        # position (oldest first, bounded): one is never notified nor recorded twice, whichever
        # path raises it again (a partition's raw records processed again after a crash, the
        # facts judged again from the saved position, two workers' copies of one group)
        self._recorded: dict[tuple[str, str], None] = {}
        self._recorded_lock = threading.Lock()
        self._held: set[str] = set()   # the records restored (and not dropped since)
        # the records another owner took up since this process did (a write of it refused:
        # this process was frozen or missed a rebalance): not taken up again before the next
        # assignment (``assigned``)
        self._lost: set[str] = set()
        self._untaken: set[str] = set()  # the records whose take-up failed (store unreadable)
        self._dirty: set[str] = set()  # the records whose part changed since its last save
        # per partition part held (with ``on_stored(..., offset=...)``, the Kafka worker): the
        # raw offset from which its batches are not in that part's state yet, saved with it
        # (``raw``): a batch processed again after a crash is judged by the partition-local
        # rules from its stored events when at or past it, and not at all before it. None: a
        # part saved before this was recorded (its rules judge the events newly stored)
        self._local_next: dict[str, int | None] = {}
        # per record: the (id, state) of the alerts its groups raised that are not delivered
        # yet (recorded here, or forwarded and committed: ``delivered``); the record is not
        # saved meanwhile, so a save never covers an alert that a crash loses (its next
        # holder, from the older save, raises it again; the same id: not recorded twice)
        self._undelivered: dict[str, set[tuple[str, str]]] = {}
        self._last_save = time.monotonic()
        self._save_cost = 0.0  # seconds the last save took

    def on_stored(self, events: list[dict], owner: str | None = None, *,
                  seen: list[dict] | None = None, offset: int | None = None,
                  batch: list[dict] | None = None) -> list[dict] | None:
        """Judge a stored batch; ``owner``: the scope of the partition it came from
        (``streams.alerts.partition_scope``; with ``holds`` set). ``seen``: the batch's events
        the global rules see, when not ``events`` (the Kafka worker's: the batch's stored
        events when its global-rule input was never committed, though Elasticsearch had its
        events already, and none when it was: ``streams.runtime.alert_facts``). ``offset``
        and ``batch`` (the Kafka worker's): the batch's raw offset and all its stored events;
        the partition-local rules then judge ``batch`` when the offset is at or past the
        first one the owner's saved part does not cover, nothing before it (a batch
        processed again after a crash: its events were stored, ``events``, the newly stored
        ones, is empty), and ``events`` when the part predates that record. Returns the
        facts the holder of partition 0 needs of it (``streams.alerts.facts_of``) when its
        global rules are judged there: a list, maybe empty (its lines still count towards
        the warm-up there), to send; None when this process judges every rule of it."""
        local = self.plan()[0] if self.plan is not None else None
        glob = events if seen is None else seen
        with self._lock:
            done = self._sync()
            if offset is not None and batch is not None and owner in self._local_next:
                start = self._local_next[owner]
                if start is not None:
                    events = batch if offset >= start else []  # (``seen`` is it, usually)
                self._local_next[owner] = max(start or 0, offset + 1)
            away = () if local is None else tuple(
                r for r in self.engine.rules if placement(r) == "global" and r not in local)
            if glob is events or away:
                # lines whose global rules are judged from the facts count there (warm-up)
                done += self._scoped(self.engine.observe(events, local, owner,
                                                         lines=0 if away else None))
            else:  # judged here: the partition-local rules over ``events``, the global over
                # ``seen`` (which counts the lines and templates)
                chosen = self.engine.rules if local is None else local
                alerts = self.engine.observe(
                    events, tuple(r for r in chosen if placement(r) == "partition"), owner, lines=0)
                alerts += self.engine.observe(
                    glob, tuple(r for r in chosen if placement(r) == "global"), owner)
                done += self._scoped(alerts)
            facts = facts_of(away, glob, self._passed) if away else None
            if self.holds is not None and owner is not None and owner not in self._held:
                # the last batch of a partition revoked meanwhile: judged and recorded (its
                # new holder applies the records), not kept (nobody here saves that part)
                self.engine.drop(owner)
                self._local_next.pop(owner, None)
            # the batch's groups moved; so did the templates seen and lines observed (global)
            self._dirty |= {self._record_of(owner), self._record_of(GLOBAL_SCOPE)}
        self._dispatch(done)
        return facts

    def facts_position(self) -> int | None:
        """Whether this process judges the facts now (it holds the global rules' part, taken
        up here, and no revocation fenced it off): the offset of the next fact it expects
        (-1: none known, e.g. a first start), else None."""
        with self._lock:
            done = self._sync()
            judging = (not self._fenced and
                       (self.holds is None or GLOBAL_SCOPE in self._held))
            position = self._facts_next if judging else None
        self._dispatch(done)
        return position

    def on_facts(self, records: list[tuple[int, dict]]) -> None:
        """Judge the facts of other workers' (and this one's) stored batches by the global
        rules: ``records`` are (offset in the facts topic, ``{"lines": n, "events": [...]}``),
        in order. Ignored unless this process judges them now (``facts_position``); a record
        before the next one expected was judged already (it is not judged twice)."""
        rules = tuple(r for r in self.engine.rules if placement(r) == "global")
        with self._lock:
            done = self._sync()
            if self._fenced or (self.holds is not None and GLOBAL_SCOPE not in self._held):
                records = []
            alerts, admitted = [], []
            for offset, fact in records:
                if 0 <= offset < self._facts_next:
                    continue
                alerts += self.engine.observe(fact.get("events") or [], rules, GLOBAL_SCOPE,
                                              lines=int(fact.get("lines") or 0))
                for d in fact.get("alerts") or ():  # a partition-local rule's, from a worker
                    # (those judged by the previous holder after its save are recorded: not
                    # twice)
                    admitted += [(x, d.get("scope") if x.state != "suppressed" else None)
                                 for x in self.engine.admit(alert_from_dict(d))
                                 if not self._was_recorded(x)]
                self._facts_next = offset + 1
            done += self._scoped(alerts) + admitted
            if records:
                self._dirty.add(self._record_of(GLOBAL_SCOPE))
        self._dispatch(done, route=False)

    def assigned(self, *, retake: bool = False) -> None:
        """A rebalance is over (the runtime's assignment is the new one): the facts may be
        judged again, by this process if it still holds partition 0, and the parts lost to
        another owner may be taken up again (read back) if held now. ``retake``: this process
        missed a generation of the group (another may have held its partitions meanwhile):
        the parts it held are forgotten and read back too, not kept."""
        with self._lock:
            self._fenced = False
            self._lost.clear()
            for scope in sorted(self._held) if retake else ():
                self._forget(scope)

    def tick(self) -> None:
        busy = self.busy is not None and self.busy()
        local, shared = self.plan() if self.plan is not None else (None, ())
        now = self.clock()
        with self._lock:
            done = self._sync()
            alerts = []
            if not busy:
                alerts += self.engine.tick(now, local)
                if shared:  # the facts of the window's last lines may still be on their way
                    alerts += self.engine.tick(now - GLOBAL_LAG_SECONDS, shared)
            done += self._scoped(alerts)
        self._dispatch(done)

    # -- state across restarts ---------------------------------------------------------------
    def _record_of(self, owner: str | None) -> str | None:
        """The record an owner's part of the state is saved in: its own with ``holds`` (None
        for no owner), else the one ``scope``."""
        return owner if self.holds is not None else self.scope

    def _scoped(self, alerts: list[Alert]) -> list[tuple[Alert, str | None]]:
        """(Under the lock.) Each alert with the record its group is part of, which it
        changed."""
        out = [(a, self._record_of(self.engine.owner_of(a))) for a in alerts]
        self._dirty.update(scope for _, scope in out)
        for a, scope in out:  # not saved before they are delivered (``_dispatch``)
            self._undelivered.setdefault(scope, set()).add((a.id, a.state))
        return out

    def _sync(self) -> list[tuple[Alert, str | None]]:
        """(Under the lock.) Restore the records this process holds now and did not restore
        yet (one process: ``scope``'s, once), and forget the groups of those it no longer
        holds (their new holder restores them; they were saved when revoked); the alerts the
        restores close."""
        wanted = {self.scope} if self.holds is None else set(self.holds()) - self._lost
        done = []
        for scope in sorted(wanted - self._held):
            done += self._restore(scope)
        for scope in self._held - wanted:
            self._forget(scope)
        return done

    def _forget(self, scope: str) -> int:
        """(Under the lock.) Drop ``scope``'s groups, unsaved: its holder reads it back."""
        if scope == GLOBAL_SCOPE:
            self._facts_next = -1  # the next holder goes on from the saved position
        dropped = self.engine.drop(scope)
        self._local_next.pop(scope, None)
        self._undelivered.pop(scope, None)
        self._held.discard(scope)
        self._dirty.discard(scope)
        log.info("alert engine: %s is no longer held here (%d group(s) forgotten)",
                 scope, dropped)
        return dropped

    def _lose(self, scope: str) -> None:
        """(Under the lock.) Another owner took ``scope`` up since this process did (its write
        was refused): forget it, unsaved, and do not take it up again before the next
        assignment (this process is frozen or behind the group: it learns soon)."""
        log.warning("alert engine: %s was taken up by another worker since this one held it "
                    "(it was frozen or missed a rebalance): its state here is older, dropped "
                    "without saving, and not taken up again before the next assignment", scope)
        self._lost.add(scope)
        self._undelivered.pop(scope, None)  # (its groups are not this process's to save)
        if scope in self._held:
            self._forget(scope)

    def _restore(self, scope: str) -> list[tuple[Alert, str | None]]:
        """(Under the lock.) Take ``scope``'s saved state up (``take_state``: with several
        workers, a claim that refuses any earlier owner's later write) and its history
        records after it; the alerts ``restore`` closes. A store that cannot be read is
        logged and tried again at the next batch or tick; one whose records cannot be applied,
        logged, and that part starts fresh (an alert open before may then fire again)."""
        self._held.add(scope)
        self._undelivered.pop(scope, None)  # (left from an earlier holding: none of its groups)
        owner = scope if self.holds is not None else None
        local = owner is not None and owner != GLOBAL_SCOPE
        if local:  # a part that starts fresh covers no batch
            self._local_next[scope] = 0
        try:
            blob, position = self.history.take_state(scope)
        except StaleOwner:  # another worker claimed it meanwhile: not this one's
            self._held.discard(scope)
            self._local_next.pop(scope, None)
            self._lose(scope)
            return []
        except Exception as exc:  # noqa: BLE001 - alerting must never take the platform down
            # not taken up (nor claimed): tried again at the next batch or tick (logged once
            # until it succeeds: the store may be down for a while)
            self._held.discard(scope)
            self._local_next.pop(scope, None)
            (log.debug if scope in self._untaken else log.warning)(
                "the alert engine's state (%s) could not be taken up (%s: %s); tried again at "
                "each batch and tick", scope, type(exc).__name__, str(exc)[:200])
            self._untaken.add(scope)
            return []
        self._untaken.discard(scope)
        try:
            self.history.follow(position)  # this process's records of it come after the save
            saved = orjson.loads(zlib.decompress(blob)) if blob is not None else {}
            if local and blob is not None:
                self._local_next[scope] = saved.get("raw")
            if owner is None or owner == GLOBAL_SCOPE:  # the facts judged before the save
                self._facts_next = int(saved.get("facts", -1))
                if self.shares is not None and position is not None:
                    # the forwarded alerts recorded since the save: not admitted twice
                    self._remember(self.history.records_after(position))
            records = list(self.history.records_after(position, owner))
            self._remember(records)  # raised again (its raw records processed again): not sent
            now = self.clock()
            closed = self.engine.restore(
                saved.get("engine"), records, now=now,
                paused=max(0.0, now - saved["at"]) if "at" in saved else 0.0, owner=owner)
        except Exception:  # noqa: BLE001 - alerting must never take the platform down
            log.exception("the alert engine's state (%s) could not be restored: it starts fresh, "
                          "so an alert open before may fire again", scope)
            if local:
                self._local_next[scope] = 0
            return []
        opened = sum(1 for a in self.engine.open_alerts()
                     if owner is None or self.engine.owner_of(a) == owner)
        log.info("alert engine state %s restored (%s): %d alert(s) open, %d closed as their rule "
                 "changed", scope, ("saved state and history" if blob is not None else
                                    "history only")
                 + ("" if saved.get("clean", True) else ", after a crash"), opened, len(closed))
        return [(a, scope) for a in closed]

    def save(self, *, clean: bool = False, scopes: set[str] | None = None,
             fence: bool = False) -> bool:
        """Save the engine's state if it changed since the last save (``clean``: at a stop,
        or of the partitions being revoked, whatever changed: nothing of it is observed here
        after it): each record held (``scopes``: only those); False if one failed (it is saved
        again at the next interval) or was refused (another owner took that part up since:
        it is dropped here, see ``_lose``). The global record carries the position of the next fact
        to judge. ``fence``: the partitions saved are being revoked; if partition 0 is among
        them, no fact is judged here until ``assigned`` (its next holder takes over from this
        save, so a fact is judged by one of the two)."""
        started = time.monotonic()
        position = self.history.position()  # before the snapshot: a record after it is applied
        with self._lock:
            due = self._held if clean else self._held & self._dirty
            if scopes is not None:
                due = due & set(scopes)
            waiting = {scope for scope in due if self._undelivered.get(scope)}
            if waiting:  # saved once their alerts are delivered (a later save)
                log.debug("alert engine: %s not saved yet (alerts not delivered)", sorted(waiting))
                due = due - waiting
            blobs = {scope: orjson.dumps({
                "engine": self.engine.snapshot(scope if self.holds is not None else None),
                "clean": clean, "at": self.clock(),
                **({"facts": self._facts_next} if scope in (GLOBAL_SCOPE, self.scope) else {}),
                **({"raw": self._local_next[scope]} if self._local_next.get(scope) is not None
                   else {})})
                for scope in sorted(due)}
            self._dirty -= set(blobs)
            if fence and GLOBAL_SCOPE in due:
                # partition 0 is being revoked: the facts after this save are its next
                # holder's to judge (judged here again only once the rebalance is over)
                self._fenced = True
        ok = not waiting
        for scope, blob in blobs.items():
            try:
                self.history.save_state(scope, zlib.compress(blob, 1), position)
            except StaleOwner:  # a newer owner's save stays; this process's part is older
                with self._lock:
                    self._lose(scope)
                ok = False
            except Exception:  # noqa: BLE001 - saved again at the next interval
                log.exception("saving the alert engine's state (%s) failed; retried in %.0f s",
                              scope, self.state_seconds)
                with self._lock:
                    if scope in self._held:
                        self._dirty.add(scope)
                ok = False
        if blobs and ok:
            self._save_cost = time.monotonic() - started
        self._last_save = time.monotonic()
        return ok

    def delivered(self, scope: str | None, keys) -> None:
        """The alerts ``keys`` ((id, state)) of ``scope``'s groups are delivered: recorded, or
        (the Kafka worker, ``forward``) committed in the partition's transaction."""
        with self._lock:
            left = self._undelivered.get(scope)
            if left is not None:
                left.difference_update(keys)
                if not left:
                    del self._undelivered[scope]

    def _dispatch(self, alerts: list[tuple[Alert, str | None]], *, route: bool = True) -> None:
        """Notify and record ``alerts``; with ``route`` and several workers (``shares``), the
        alerts of partition-local rules are forwarded to the holder of partition 0 instead,
        which admits them under the cap over every worker's firings (``on_facts``)."""
        alerts = self._owned(alerts, route)  # (forwarded or not) none of a part lost
        routed = (route and alerts and self.forward is not None and self.shares is not None
                  and self.shares())
        if routed:
            local = {r.name for r in self.engine.rules if placement(r) == "partition"}
            away = [{**asdict(a), "scope": scope} for a, scope in alerts if a.rule in local]
            if away:  # delivered once the runtime committed them (``delivered``)
                self.forward({"lines": 0, "events": [], "alerts": away})
                alerts = [(a, scope) for a, scope in alerts if a.rule not in local]
        now = self.clock()
        for a, scope in alerts:
            if not self._first_record(a):
                log.info("alert %s %s: recorded already, not notified again", a.state, a.id)
                self.delivered(scope, [(a.id, a.state)])
                continue
            try:
                notify = not a.historical and not self.history.silenced(a.rule, a.group, now)
                if notify:
                    for n in self.notifiers:
                        n.submit(a)
                self.history.record(a, notified=notify and bool(self.notifiers), scope=scope)
            finally:  # (a record that failed does not stop the part's saves)
                self.delivered(scope, [(a.id, a.state)])
            log.info("alert %s %s: %s", a.state, a.id, "; ".join(a.reasons[:2]))

    def _owned(self, alerts: list[tuple[Alert, str | None]],
               route: bool) -> list[tuple[Alert, str | None]]:
        """``alerts`` without those of a part another worker took up since this process did
        (checked in the store, once per part; those parts are dropped here): a worker that
        wakes up from a freeze past the session timeout does not notify nor record the
        alerts of its older state. The part that decides is the alert's own, or the global
        one for the alerts the judge admits from the facts (``route`` False). One process
        (``holds`` unset) owns every part."""
        if not alerts or self.holds is None:
            return alerts
        verdict: dict[str, bool] = {}
        kept = []
        for a, scope in alerts:
            part = scope if route else GLOBAL_SCOPE
            if part is not None and part not in verdict:
                verdict[part] = self.history.owns(part)
                if not verdict[part]:
                    with self._lock:
                        self._lose(part)
            if part is None or verdict[part]:
                kept.append((a, scope))
            else:
                log.warning("alert %s %s: not notified nor recorded here (%s belongs to another "
                            "worker now, which judges it)", a.state, a.id, part)
        return kept

    def _remember(self, records) -> None:
        with self._recorded_lock:
            for r in records:
                self._recorded[(r.get("id"), r.get("state"))] = None
            self._trim()

    def _was_recorded(self, alert: Alert) -> bool:
        with self._recorded_lock:
            return (alert.id, alert.state) in self._recorded

    def _first_record(self, alert: Alert) -> bool:
        """Whether ``alert`` (its id and state) was not recorded yet; it counts as recorded
        from now on (checked and marked at once: two threads may dispatch the same alert)."""
        key = (alert.id, alert.state)
        with self._recorded_lock:
            if key in self._recorded:
                return False
            self._recorded[key] = None
            self._trim()
        return True

    def _trim(self) -> None:
        """(Under ``_recorded_lock``.) Forget the oldest beyond a bound: an alert that old is
        known to its group in the engine, which does not raise it again."""
        while len(self._recorded) > _RECORDED_MAX:
            del self._recorded[next(iter(self._recorded))]

    def start(self) -> None:
        for n in self.notifiers:
            n.start()
        with self._lock:
            closed = self._sync()
        self._dispatch(closed)
        self._thread = threading.Thread(target=self._run, name="smartlogs-alert-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - alerting must never take the platform down
                log.exception("alert tick failed")
            # at most every ten times as long as a save takes (a bounded share of a core)
            if time.monotonic() - self._last_save >= max(self.state_seconds, 10 * self._save_cost):
                self.save()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.save(clean=True)
        for n in self.notifiers:
            n.stop()
        self.history.close()

    @classmethod
    def from_settings(cls, settings, history=None) -> "Alerting | None":
        """From the settings; ``history``: where alerts are kept (default ``alerts.db`` in the
        data directory; the Kafka worker passes an :class:`EsAlertHistory`)."""
        if settings.alert_rules is None:
            return None
        rules, warmup = rules_from_file(settings.alert_rules)
        notifiers = []
        console = settings.console_url or f"http://{settings.host}:{settings.port}"
        if settings.alert_webhook_url:
            notifiers.append(Notifier(settings.alert_webhook_url, kind="webhook", console_url=console))
        if settings.alert_slack_url:
            notifiers.append(Notifier(settings.alert_slack_url, kind="slack", console_url=console))
        if history is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            history = AlertHistory(settings.data_dir / "alerts.db")
        return cls(AlertEngine(rules, warmup_lines=warmup), history, notifiers,
                   state_seconds=settings.checkpoint_seconds)


class AlertsView:
    """What the API of the full stack serves about alerts: the rules (to check a silence's
    rule) and the history the worker writes to Elasticsearch."""

    def __init__(self, rules, history: EsAlertHistory):
        self.engine = AlertEngine(rules)
        self.history = history

    @classmethod
    def from_settings(cls, settings, client) -> "AlertsView | None":
        if settings.alert_rules is None:
            return None
        rules, _warmup = rules_from_file(settings.alert_rules)
        return cls(rules, EsAlertHistory(client, settings.es_index_prefix))
