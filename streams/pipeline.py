"""The processing pipeline: parse → mine template → score → event record.

``Pipeline.process(items)`` is pure with respect to I/O: it takes accepted items (dicts
made by the ingest API, see ``ingest_api.decode``) and returns event records ready for a
sink. The embedded runner and the Kafka worker both call it; only the transport differs.

Processing is deterministic for a given state and input (seeded trees, no wall clock),
which is what makes recovery exact: after a crash the runner restores the last
checkpoint (written by ``streams.runtime.checkpoints``: the core does no file I/O) and re-runs the items accepted since, producing the same ids, templates and
scores; the sink drops the ones it already stored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime, timezone

from streams.catalog import TemplateChange, carry_marks, change_from_miner
from streams.formats import UserFormats
from streams.incidents import DEFAULT_EXAMPLES, DEFAULT_GAP, DEFAULT_QUIET, IncidentTracker
from streams.headers import SourceHeaders, normalize_single_letter
from streams.parsing import LineParser, ParsedLine, normalize_level
from streams.partitions import source_key, source_of
from streams.scoring import AnomalyScorer, incident_key
from streams.severity_words import severe_word
from streams.silence import SilenceWatch
from streams.templates import TemplateMiner
from streams.windows import window_start

__all__ = ["Pipeline", "PipelineConfig", "source_key"]

log = logging.getLogger(__name__)

_MIN_TS, _MAX_TS = -62135596800.0, 253402300800.0  # 0001-01-01 .. 9999-12-31, epoch seconds
# how far past its arrival an event's own time may lie: more than the year rule for syslog
# lines without a year allows (a month up to one month ahead stays in this year, ~35 days)
MAX_FUTURE_SECONDS = 62 * 86400.0


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    window_seconds: int = 60
    log_format: str | None = None
    year: int | None = None
    max_line_length: int = 65536
    hst_trees: int = 10
    hst_height: int = 6
    hst_window: int = 250
    anomaly_quantile: float = 0.995
    min_anomaly_score: float = 0.7
    # user-declared formats: (glob on the source name or host, grok/regex pattern), first wins
    log_patterns: tuple[tuple[str, str], ...] = ()
    builtin_formats: bool = True  # the parser's known formats first; False: inference alone
    infer_headers: bool = True  # learn each source's header layout (streams.headers)
    # incidents (streams.incidents): flagged lines of one cause at most incident_gap seconds
    # apart are one incident, resolved after incident_quiet seconds without a line
    incident_gap: float = DEFAULT_GAP
    incident_quiet: float = DEFAULT_QUIET
    incident_examples: int = DEFAULT_EXAMPLES

    @classmethod
    def from_settings(cls, s) -> "PipelineConfig":
        """From a ``smartlogs.settings.Settings`` (duck-typed: the core imports no settings)."""
        from streams.parsing import FORMATS

        patterns = tuple((getattr(s, "log_patterns", None) or {}).items())
        fmt = s.log_format
        if fmt is not None and fmt not in FORMATS:  # a pattern of the user's for every source
            patterns, fmt = (*patterns, ("*", fmt)), None
        return cls(
            window_seconds=s.window_seconds, log_format=fmt, year=s.default_year,
            log_patterns=patterns,
            max_line_length=s.max_line_length, hst_trees=s.hst_trees, hst_height=s.hst_height,
            hst_window=s.hst_window, anomaly_quantile=s.anomaly_quantile,
            min_anomaly_score=s.min_anomaly_score,
            builtin_formats=getattr(s, "builtin_formats", True),
            infer_headers=getattr(s, "infer_headers", True),
            incident_gap=getattr(s, "incident_gap_seconds", DEFAULT_GAP),
            incident_quiet=getattr(s, "incident_quiet_seconds", DEFAULT_QUIET),
            incident_examples=getattr(s, "incident_examples", DEFAULT_EXAMPLES),
        )


class Pipeline:
    """All per-line processing state in one picklable object."""

    def __init__(self, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        c = self.config
        self.parser = LineParser(c.log_format, year=c.year, max_length=c.max_line_length)
        self.miner = TemplateMiner()
        self.miner.changes = []  # its generalisations and merges: the catalog's history
        self.catalog: list[TemplateChange] = []  # made since the runtime last took them
        self.scorer = AnomalyScorer(
            n_trees=c.hst_trees,
            height=c.hst_height,
            window_size=c.hst_window,
            quantile=c.anomaly_quantile,
            min_score=c.min_anomaly_score,
        )
        self.sources: dict[str, SourceHeaders] = {}  # learned header layouts, per source
        self.user_formats = UserFormats(c.log_patterns)  # FormatError on a bad pattern
        self.incidents = IncidentTracker(gap=c.incident_gap, quiet=c.incident_quiet,
                                         examples=c.incident_examples)
        self.silences = SilenceWatch()  # sources gone quiet while their kind kept sending
        self.applied_seq = 0  # last input sequence number (spool offset) reflected in this state
        self.lines = 0

    # -- the hot path ---------------------------------------------------------------------
    def process(self, items: list[dict]) -> list[dict]:
        """Items in, events out, in order. Every line's features are computed first, then the
        batch is scored (each line before it is learned, as line by line: score_many)."""
        try:
            out, lines, kinds = self._featurise(items)
            scores = self.scorer.score_many(lines)
        except BaseException:
            self.scorer.discard_pending()
            raise
        incidents = self.incidents
        see, observe = incidents.see, incidents.observe
        watch = self.silences.see
        for e, s, (x, ctx), kind in zip(out, scores, lines, kinds):
            e["score"] = round(s.score, 4)
            e["anomaly"] = s.is_anomaly
            e["reason"] = s.reason
            e["warming_up"] = s.warming_up
            stream = e["source"]  # its host, else the source it is judged as
            see(stream, e["ts"])
            if s.is_anomaly:
                e["incident_id"] = observe(e, _incident_key(x, ctx, e, stream), stream)
            changed = watch(kind, stream, e["ts"], e["id"], e["host"])
            if changed:
                self._silences(kind, e, changed)
        incidents.sweep()
        self.lines += len(items)
        return out

    def _silences(self, kind: str, event: dict, changed: list[tuple]) -> None:
        """Silences the watch found (``streams.silence``) → incidents of their own."""
        for what, source, since_id, since_ts, at_ts, *rest in changed:
            if what == "close":
                self.incidents.close_silence(kind, source, event)
                continue
            minutes, usual, share, host = rest
            self.incidents.open_silence(
                kind, source, host, since_id, since_ts,
                at_ts, float(event.get("received") or at_ts),
                f"silence: {source} has sent nothing for {minutes} minutes in which other "
                f"sources of its kind kept sending (its longest usual gap: {usual} min; "
                f"it sent in {share:.0%} of their minutes)")

    def take_incidents(self) -> list[dict]:
        """Incident snapshots changed by the batches processed since the last call, for the
        store (upserted by id; the state here is authoritative)."""
        return self.incidents.take()

    def _featurise(self, items: list[dict]) -> tuple[list[dict], list[tuple[dict, dict]], list]:
        out, lines, kinds = [], [], []
        parse = self._parse
        mine = self.miner.mine
        notes = self.miner.changes
        features = self.scorer.features
        size = self.config.window_seconds
        limit = self.config.max_line_length
        for item in items:
            raw = item.get("raw")
            if raw is not None:
                cut = len(raw) > limit  # the parser cuts it too; what is stored must be cut as well
                if cut:
                    raw = raw[:limit]
                    p = parse(raw, item)
                    p.truncated = True
                else:
                    p = parse(raw, item)
                message, ts, host, component, pid = p.message, p.timestamp, p.host, p.component, p.pid
                level, ok, fmt, truncated, extra = p.level, p.ok, p.format, p.truncated, p.fields
                service = None
            else:
                message = item["message"]
                ts, host, component = item.get("ts"), item.get("host"), item.get("component")
                pid, level, extra = item.get("pid"), item.get("level"), item.get("fields") or {}
                ok, fmt, truncated = True, "json", False
                service = component  # declared by the sender (service/app/component)
                if ts is None and host is None and level is None and component is None:
                    # only a message: it may be a whole log line with its own header
                    p = parse(message, item, learn=False)
                    if p.ok:
                        message, ts, host, component, pid = (
                            p.message, p.timestamp, p.host, p.component, p.pid)
                        level, fmt, extra = p.level, p.format, {**p.fields, **extra}
                    else:
                        fmt = "message"
                    truncated = p.truncated
                if len(message) > limit:  # structured events obey the same limit, flagged
                    message, truncated = message[:limit], True
            received = item["received"]
            if isinstance(ts, datetime):
                ts = ts.timestamp()
            if ts is None:
                ts = received
            elif not (_MIN_TS <= ts < _MAX_TS):  # NaN, ±inf, outside years 1-9999: a poison pill
                extra = {**extra, "invalid_timestamp": str(ts)}
                ts = received
            elif ts > received + MAX_FUTURE_SECONDS:
                # a clock or a client far off (year 9999, 2262): kept, flagged, placed at arrival,
                # so it does not head every newest-first listing and window for years
                extra = {**extra, "future_timestamp": _iso(ts)}
                ts = received
            if level is not None:  # (both return None for None: no calls for most lines)
                level = normalize_level(normalize_single_letter(level))
            # streams.partitions' rule (a line with a host is its host's, without a call)
            source = host or source_of(item, host, service, component)
            # a multi-line event (a stack trace) is grouped by its first line; the rest is detail
            mined = mine(message if "\n" not in message else message.split("\n", 1)[0])
            if notes:  # this line generalised a template, or merged an enumeration
                self._record(notes, item["id"], ts, message)
            # a kind: hosts of one named stream (a service, a file) are each other's fleet,
            # else the hosts writing one format; a learned layout is its source's own
            stream = item.get("stream")
            kind = (f"{fmt}:{stream}" if stream
                    else fmt if fmt != "inferred" else f"inferred:{item.get('source')}")
            kinds.append(kind)
            x, ctx = features(  # by position (the hot path), in AnomalyScorer.features' order:
                mined.template_id,  # template_id
                mined.seen_before,  # seen_before
                mined.is_new,  # is_new
                level,  # level
                message.count(" ") + 1,  # tokens
                ok,  # parsed
                host,  # host
                window_start(ts, size),  # window_start
                ts,  # ts
                mined.params,  # params
                source,  # source: a line without a host is judged as its source
                kind,  # kind
                # word: a line without a level, a word that names a severity or an attack
                severe_word(message) if level is None else None,
            )
            lines.append((x, ctx))
            out.append({
                "id": item["id"],
                "ts": ts,
                "timestamp": _iso(ts),
                "received": received,
                "source": source,
                "receiver": item.get("source", "http"),
                "host": host,
                "component": component,
                "pid": pid,
                "level": level,
                "message": message,
                "raw": raw if not ok else None,
                "template_id": mined.template_id,
                "template": mined.template,
                "params": mined.params,
                "score": None,  # set by process() once the batch is scored
                "anomaly": False,
                "reason": None,
                "warming_up": True,
                "incident_id": None,  # set by process() for a flagged line
                "parse_ok": ok,
                "format": fmt,
                "truncated": truncated,
                "fields": extra or {},
            })
        return out, lines, kinds

    def _record(self, notes: list, event_id, ts: float, line: str) -> None:
        """The miner's change notes of one line → catalog records (``take_catalog``); a mark
        passes to the template an id was merged into."""
        for note in notes:
            change = change_from_miner(note, event_id=str(event_id), ts=ts, line=line)
            self.catalog.append(change)
            if change.into is not None:
                carry_marks(self.scorer.marks, {change.template_id: change.into})
        notes.clear()
        if len(self.catalog) > MAX_PENDING_CHANGES:  # nobody takes them (a tool, a benchmark)
            del self.catalog[:len(self.catalog) // 2]

    def adopt_aliases(self, aliases: dict[str, str]) -> dict[str, str]:
        """The catalog's aliases (id -> canonical id, ``streams.catalog``) taken by the miner
        (``TemplateMiner.adopt``): new lines carry the canonical ids; marks pass on as with a
        merge, and what the scorer learned of a template moves with it. Returns the ids
        renamed here."""
        changed = self.miner.adopt(aliases) if aliases else {}
        if changed:
            carry_marks(self.scorer.marks, changed)
            self.scorer.rename_templates(changed)
        return changed

    def take_catalog(self) -> list[TemplateChange]:
        """The catalog records made since the last call (the runtime stores them with the
        batch's events)."""
        out, self.catalog = self.catalog, []
        return out

    def _parse(self, line: str, item: dict, learn: bool = True) -> ParsedLine:
        """A declared format of the line's source first, then the built-in formats (unless
        switched off), then the source's learned layout; a line none fits comes back raw
        (ok=False). ``learn=False`` (a structured event's message): no layout is learned
        from message text. Written for the hot path: the built-in case costs a few lookups."""
        c = self.config
        key = item.get("stream") or item.get("key") or item.get("source") or "http"  # = source_key(item)
        if self.user_formats.formats:  # a format the user declared for this source
            f = self.user_formats.for_source(key, item.get("host"))
            if f is not None:
                q = f.parse(line, year=c.year, now=item.get("received"))
                if q is not None:
                    return q
        state = self.sources.get(key)
        infer = c.infer_headers and c.log_format is None and learn
        if not (c.builtin_formats or c.infer_headers or c.log_format):
            return ParsedLine(message=line.rstrip())  # both switched off: every line raw
        if c.builtin_formats or not infer:
            if state is not None and infer:
                recent = state.recent
                if recent and recent[-1]:
                    # the source's last line fitted its learned layout: that layout first (a
                    # layout is learned only from lines no built-in format took)
                    q = state.quick(line, year=c.year, now=item.get("received"))
                    if q is not None:
                        return q
            p = self.parser.parse(line, item.get("received"))
            if p.ok:
                if learn:  # counted for GET /api/sources
                    if state is None:
                        state = self._new_source(key)
                    state.lines += 1
                    state.parsed += 1
                    counts = state.builtin
                    counts[p.format] = counts.get(p.format, 0) + 1
                return p
            if not infer:
                return p
        if state is None:
            state = self._new_source(key)
        q = state.parse(line, year=c.year, now=item.get("received"))
        if q is None:
            return ParsedLine(message=line.rstrip())
        return q

    def _new_source(self, key: str) -> SourceHeaders:
        if len(self.sources) >= MAX_SOURCES:  # forget the source seen least
            del self.sources[min(self.sources, key=lambda k: self.sources[k].lines)]
        state = self.sources[key] = SourceHeaders()
        return state

    def upgrade(self, config: PipelineConfig) -> None:
        """After a restore: fill what older checkpoints lack, and take ``config`` (a model made
        with other settings keeps what it learned and uses the new settings)."""
        if not hasattr(self, "sources"):  # a checkpoint from before header inference
            self.sources = {}
        if not hasattr(self, "user_formats"):
            self.user_formats = UserFormats(())
        if not hasattr(self, "incidents"):  # a checkpoint from before incidents
            self.incidents = IncidentTracker(gap=config.incident_gap, quiet=config.incident_quiet,
                                             examples=config.incident_examples)
        if not hasattr(self, "silences"):  # a checkpoint from before silences were watched
            self.silences = SilenceWatch()
        if self.miner.changes is None:  # a checkpoint from before the template catalog
            self.miner.changes = []
        if self.miner.__dict__.pop("_legacy_ids", False):
            # ids were numbers (rows keyed by them): the next checkpoint rewrites every row
            self.ckpt_lineage = None
        if not hasattr(self, "catalog"):
            self.catalog = []
        if self.config != config:
            log.warning("checkpoint was made with other settings; keeping its model, using new settings")
            self.config = config
            self.parser = LineParser(config.log_format, year=config.year,
                                     max_length=config.max_line_length)
            self.user_formats = UserFormats(config.log_patterns)
            self.incidents.configure(gap=config.incident_gap, quiet=config.incident_quiet,
                                     examples=config.incident_examples)

    def keyed_maps(self) -> dict:
        """Name → the maps of per-key rows a checkpoint writes incrementally (``streams.keyed``)."""
        return {**{f"miner.{k}": v for k, v in self.miner.keyed_maps().items()},
                **{f"scorer.{k}": v for k, v in self.scorer.keyed_maps().items()}}

    def describe_sources(self) -> list[dict]:
        """Each source's learned layout, lines seen and the share that fitted it."""
        return [{"source": k, **v.describe()} for k, v in sorted(list(self.sources.items()))]

    def status(self) -> dict:
        return {
            "lines": self.lines,
            "templates": self.miner.template_count,
            "model_warmed_up": self.scorer.warmed_up,
            "threshold": self.scorer.threshold.value,
            "open_incidents": len(self.incidents.open),
            "silent_sources": len(self.silences.silent()),
        }


MAX_SOURCES = 1024
# catalog records kept until the runtime takes them (it does after every batch); a user of the
# pipeline that never takes them keeps the newest ones only
MAX_PENDING_CHANGES = 10_000


def _incident_key(x: dict, ctx: dict, event: dict, stream: str) -> tuple:
    """The scorer's "same incident" key (``incident_key``), kept apart per stream for lines
    without a host; a line whose evidence has no clear leader (severity, the trees) is keyed
    by its source and pattern; a line flagged for severity that counts (the first of a severe
    pattern from its host, ``streams.scoring.SEVERE_RARE``) by its pattern alone, so a panic
    that reaches host after host is one incident."""
    if ctx.get("first_severe") is not None:  # one severe pattern reaching host after host
        return ("severity", event["template_id"])
    key = incident_key(x, ctx)
    if key is None:
        kind = "severity" if x.get("severity", 0.0) >= 0.5 else "combination"
        return (kind, event["host"] or stream, event["template_id"])
    return key if event["host"] else (*key, stream)


@lru_cache(maxsize=4096)  # log timestamps repeat (many lines per second)
def _iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with milliseconds ("2026-12-07T20:30:00.123Z"): what
    ``datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")`` writes.
    Its second is memoised apart (a new millisecond of a second already written costs no
    datetime); the microseconds are rounded as CPython's ``fromtimestamp`` rounds them
    (``_PyTime_DoubleToDenominator``: modf, times 10**6, half to even, carried into the
    second), then cut to milliseconds as ``isoformat`` does."""
    try:
        frac, whole = math.modf(ts)
        us = round(frac * 1e6)
        if us >= 1_000_000:
            us -= 1_000_000
            whole += 1.0
        elif us < 0:
            us += 1_000_000
            whole -= 1.0
        return f"{_iso_second(int(whole))}.{us // 1000:03d}Z"
    except (ValueError, OverflowError, OSError):  # outside what the fast path handles
        return _iso_datetime(ts)


@lru_cache(maxsize=4096)
def _iso_second(sec: int) -> str:
    return datetime.fromtimestamp(sec, timezone.utc).isoformat(timespec="seconds")[:-6]


def _iso_datetime(ts: float) -> str:
    """The reference: ``datetime``'s own text (the fast path of ``_iso`` must equal it)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
