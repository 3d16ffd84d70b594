r"""Full-stack store: Elasticsearch 8.x, with the same write/query interface as SqliteStore.

Layout
  <prefix>-YYYY.MM      one index per UTC month of EVENT time (``ts``; ``index_period="month"``,
  <prefix>-YYYY.MM.DD   the settings' default) or per UTC day (``"day"``), created on first
                        write by the composable index template ``<prefix>`` (pattern
                        ``<prefix>-*``). An event always lands in the same index, so its id is a
                        stable ``_id``: ``op_type=create`` makes a retry or a replay a no-op
                        (409 = "already stored"). Retention = deleting whole old indices
                        (``delete_before``), which also works on distributions without ILM or
                        ``_delete_by_query``.

                        Why months by default: a replay of an old log spreads its lines over
                        its own days (Linux_2k.log: 2,000 lines over 44 days, BGL_2k over ~200),
                        so with daily indices every bulk touches ~10 shards and each of them
                        refreshes every second: measured on one node, 368 µs of Elasticsearch
                        CPU per document vs 77 when they share one index (bench/RESULTS.md),
                        and hundreds of shards for a handful of samples. Live logs land in
                        the current index either way; choose days for high volume and finer
                        retention. Changing the period later only affects new writes: data
                        re-sent after the change is stored again in the new index.

Mapping (``dynamic: false``: unknown keys stay in ``_source`` but never change the mapping)
  @timestamp date (event time, what Kibana uses), ts double (exact epoch seconds: filters and
  sort), keyword host/component/level/template_id/source/receiver/format/pid/incident_id, id
  keyword (no doc values: unique, only searched by prefix), words (the message's words: what
  the API's ``q`` and Kibana's free text (``index.query.default_field``) match, so search
  behaves like the embedded FTS5 index; kept in ``_source`` since schema 5, see below),
  template keyword, score float,
  anomaly/warming_up/parse_ok/truncated boolean, reason text + reason.keyword (flagged events
  only), received date (epoch seconds), seq long, fields flattened. Kept in ``_source`` for
  display and not indexed at all (no inverted index, no doc values), since nothing searches,
  sorts or aggregates them: message (``words`` is its searchable form), raw, params,
  timestamp (the ISO copy of @timestamp) and stored_at (write time, epoch ms). Indexing each
  of those cost Elasticsearch CPU on every event (bench/RESULTS.md, issue 18); indices made by
  an older template keep their mapping (a field's indexing cannot change in place).
  ``_source`` is the document as written, ``words`` included (schema 5): with ``words``
  excluded (schemas 2-4) Elasticsearch filtered and re-serialised every document and kept the
  whole original beside it as its recovery source, ~15% more of its indexing CPU and ~30% more
  bytes an event (bench/RESULTS.md, issue 18); and an event indexed again from its ``_source``
  (a template merge's rewrite) lost its words. Searches leave ``words`` out of their answers.

Sequence numbers
  ``seq`` = microseconds since the epoch at write time + the position in the batch, strictly
  increasing within a process; ``search(EventQuery(after_seq=N))`` tails by it. Documents become
  searchable at the next refresh (``refresh_interval``, 500 ms by default: the setting
  ``SMARTLOGS_ES_REFRESH_INTERVAL``, also applied to existing indices on start), or before ``write`` returns with
  ``refresh="wait_for"``. The tail is exact for one writer with ``refresh="wait_for"``; without
  it (or with several writers, whose clocks interleave) a reader can see a higher seq before a
  lower one becomes visible and skip the latter: tailing is then best effort, like ``tail -f``
  over a refresh interval. ``total``/``last_seq`` only count refreshed documents.

Writes
  ``_bulk`` requests (chunks of 2000, every line pre-serialised with orjson once). Per item:
  201 → new; 409 → already stored; 429/5xx, a lost connection, a timeout or a refusal that is
  about the cluster, not the document (read-only block, auth, closed index) → retried with
  exponential backoff (only the items without a definite answer; ``create`` makes that safe),
  then ``StoreUnavailable``;
  any other 4xx (mapping errors, ...) → ``dead_letter([{"event", "error"}])``, or
  ``DocumentsRejected`` when there is no dead-letter callback. A 409 on a retried item is
  checked against the ``seq`` we sent (``mget``): if it is ours, the earlier attempt stored it
  and it is counted as new, so the return value stays exact across lost responses.

Template catalog
  ``<prefix>.catalog`` (a name outside the events' pattern, made on first use): the history
  records of streams/catalog.py (generalised, merged, feedback), one document per record id
  (``op_type=create``: a batch processed again stores nothing twice). A template's count, first
  and last seen and example lines are aggregated from the events, as the template list is; its
  mark is its latest feedback record (a mark passes to the id a template was merged into).
  One id per template text (streams/catalog.py): each (id, text) pair a process has not
  recorded yet is a document of kind ``text`` (``h``: the text's 64-bit key), written with a
  refresh before the search for the text's other ids, so of two processes recording one text
  at once the later sees the earlier; the aliases are the ``merged`` records, read through
  ``streams.catalog.converge``; the events of a new alias are rewritten (``_rewrite``), and a
  process maps the ids of the events it writes by the aliases it last read
  (``template_aliases``, which also rewrites the events of aliases new to it).

Queries parse ``q`` with ``smartlogs.store.query`` (the same parser as SqliteStore) and run
under a time budget enforced by Elasticsearch: the search's ``timeout`` (``query_timeout``; a
search that timed out on any shard is an error, not partial results) and a client timeout a
little longer, whose closed connection makes Elasticsearch cancel the search task.
``interrupt_queries()`` (server shutdown) refuses new queries.

Queries never use ``GET /`` (the minimal distribution answers 405) and tolerate a pattern that
matches no index yet (``ignore_unavailable``/``allow_no_indices``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal

import orjson
from elasticsearch import ApiError, Elasticsearch, TransportError
from elasticsearch.helpers import scan, streaming_bulk
from elasticsearch.serializer import OrjsonSerializer

from smartlogs.security import redact, redact_url
from elastic_transport import ConnectionTimeout

from smartlogs.store import query as qsyntax
from smartlogs.store.base import (DEFAULT_QUERY_TIMEOUT, EventQuery, QueryInterrupted,
                                  QueryTimeout, SearchResult, search_words, template_detail,
                                  template_row)
from streams.catalog import (MAX_EXAMPLE_CHARS, alias_change, carry_marks, converge, text_key,
                             texts_of)
from streams.incidents import merge_part
from streams.pipeline import _iso  # one formatter for every timestamp we emit

__all__ = [
    "ElasticsearchStore", "ElasticsearchStoreError", "StoreUnavailable", "DocumentsRejected",
    "index_template",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5  # 2: ``words`` holds word positions (phrase queries); 3: incident_id;
#                    4: fields never searched are not indexed (bench/RESULTS.md, issue 18);
#                    5: ``words`` kept in _source (no excludes: less indexing work, fewer bytes)
# how often new documents become searchable: the p99 ingest->searchable target of 1 s needs
# less than 1 s here (a document waits up to a whole interval), measured in bench/RESULTS.md
DEFAULT_REFRESH_INTERVAL = "500ms"
_INTERVAL = re.compile(r"[1-9]\d*(ms|s)")
TEMPLATE_PRIORITY = 200
MAX_ID_BYTES = 512            # Elasticsearch's limit for _id
MAX_RESULT_WINDOW = 10_000    # index.max_result_window (default)
QUERY_RETRIES = 1             # queries fail fast (a user waits); writes retry max_retries times
_MERGE_ATTEMPTS = 20          # a shared incident re-read and merged after a conflicting write
KEYWORD_IGNORE_ABOVE = 1024   # longer values are kept in _source but not indexed (never rejected)
_DAY = re.compile(r"\d{4}\.\d{2}\.\d{2}")
_MONTH = re.compile(r"\d{4}\.\d{2}")
INDEX_PERIODS = ("day", "month")

# the event keys, in the order SqliteStore returns them
_COLUMNS = (
    "seq", "id", "ts", "timestamp", "received", "source", "receiver", "host", "component", "pid",
    "level", "message", "raw", "template_id", "template", "params", "score", "anomaly", "reason",
    "warming_up", "parse_ok", "format", "truncated", "fields",
)
_FLAGS = ("anomaly", "warming_up", "parse_ok", "truncated")
_PASSTHROUGH = ("timestamp", "source", "receiver", "host", "component", "pid", "level", "message", "raw",
                "template_id", "template", "params", "score", "reason", "format", "incident_id")


class ElasticsearchStoreError(Exception):
    """Base class of this store's own errors."""


class StoreUnavailable(ElasticsearchStoreError):
    """Elasticsearch did not take (part of) a batch after every retry; retrying later is safe."""

    def __init__(self, message: str, *, stored: int = 0, pending: int = 0):
        super().__init__(message)
        self.stored = stored      # newly stored before giving up (those events carry "seq")
        self.pending = pending    # events without a definite answer


class DocumentsRejected(ElasticsearchStoreError):
    """Elasticsearch refused documents for good and the store has no dead-letter callback."""

    def __init__(self, rejected: list[dict], *, stored: int = 0):
        first = rejected[0]["error"] if rejected else ""
        super().__init__(f"{len(rejected)} document(s) rejected, e.g. {first}")
        self.rejected = rejected  # [{"event": e, "error": reason}]
        self.stored = stored


def _keyword(**extra) -> dict:
    return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE, **extra}


# fields kept in _source for display only: no inverted index, no doc values
_NOT_SEARCHED = {"index": False, "doc_values": False}


def index_template(prefix: str, refresh_interval: str = DEFAULT_REFRESH_INTERVAL) -> dict:
    """The composable index template body for ``<prefix>-*`` (PUT _index_template/<prefix>)."""
    return {
        "index_patterns": [f"{prefix}-*"],
        "priority": TEMPLATE_PRIORITY,
        "version": SCHEMA_VERSION,
        "_meta": {"managed_by": "smartlogs",
                  "description": "SmartLogs events, one index per UTC month or day of event time"},
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": 1,
                    "auto_expand_replicas": "0-1",   # green on one node, a replica on two
                    "refresh_interval": refresh_interval,
                    "query": {"default_field": ["words"]},  # Kibana free-text searches
                },
            },
            "mappings": {
                "dynamic": False,
                "_meta": {"schema_version": SCHEMA_VERSION},
                "properties": {
                    "@timestamp": {"type": "date"},
                    # a copy of @timestamp, and the write time: displayed, never searched
                    "timestamp": {"type": "date", "ignore_malformed": True, **_NOT_SEARCHED},
                    "ts": {"type": "double"},
                    "id": _keyword(doc_values=False),  # unique: searched (prefix), never sorted
                    "received": {"type": "date", "format": "epoch_second"},
                    "stored_at": {"type": "date", "format": "epoch_millis", **_NOT_SEARCHED},
                    "seq": {"type": "long"},
                    "source": _keyword(),
                    "receiver": _keyword(),
                    "host": _keyword(),
                    "component": _keyword(),
                    "pid": _keyword(),
                    "level": _keyword(),
                    "format": _keyword(),
                    "message": {"type": "text", "index": False},
                    # the message's words, space-separated: the
                    # API's q matches these (with positions, for phrases), so "workerEnv" finds
                    # "workerEnv.init()" and
                    # "218" finds "rhost=218.188.2.4", exactly like the embedded FTS5 index
                    "words": {"type": "text", "analyzer": "standard", "norms": False,
                              "index_options": "positions"},
                    "raw": {"type": "text", "index": False},
                    "template_id": _keyword(),
                    "template": {"type": "keyword", "ignore_above": 4096},
                    "params": {"type": "keyword", **_NOT_SEARCHED},
                    "score": {"type": "float"},
                    "anomaly": {"type": "boolean"},
                    "reason": {"type": "text", "analyzer": "standard",
                               "fields": {"keyword": _keyword()}},
                    "warming_up": {"type": "boolean"},
                    "parse_ok": {"type": "boolean"},
                    "truncated": {"type": "boolean"},
                    "fields": {"type": "flattened", "ignore_above": KEYWORD_IGNORE_ABOVE},
                    "incident_id": _keyword(),
                },
            },
        },
    }


def incidents_index_body() -> dict:
    """Settings and mappings of ``<prefix>.incidents`` (the snapshot stays whole in _source)."""
    kw = _keyword()
    return {
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        "mappings": {"dynamic": False, "properties": {
            "id": kw, "status": kw, "source": kw, "host": kw, "template_id": kw, "kind": kw,
            "first_ts": {"type": "double"}, "last_ts": {"type": "double"},
            "last_received": {"type": "double"},
            "count": {"type": "long"}, "rev": {"type": "long"},
        }},
    }


# the template catalog's index: history records (streams.catalog.TemplateChange) and an order
_CATALOG_SETTINGS = {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}}
_CATALOG_MAPPINGS = {"dynamic": False, "properties": {
    "id": _keyword(), "template_id": _keyword(), "into": _keyword(), "kind": _keyword(),
    "at": {"type": "double"}, "order": {"type": "long"}, "mark": _keyword(),
    # kind "text": a (template id, text) pair recorded, by the text's key (streams.catalog)
    "h": {"type": "long"}}}


def _doc_id(event_id: str) -> str:
    if len(event_id.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def _aligned(t: float, size: int) -> float:
    """The first window start ≥ t: stats select whole windows by their start, like SqliteStore."""
    return math.ceil(t / size) * size


class _Pending:
    __slots__ = ("event", "index", "id", "seq", "body", "header", "attempts")

    def __init__(self, event: dict, index: str, doc_id: str, seq: int, body: bytes,
                 header: bytes):
        self.event, self.index, self.id, self.seq, self.body = event, index, doc_id, seq, body
        self.header = header  # its bulk line: {"create":{"_index":...,"_id":...}}
        self.attempts = 0


# the ISO time of an event's ts: lines of one second share it (one formatting per second of
# log, not per line: ~0.4 µs a line of the worker's CPU, bench/RESULTS.md)
_iso_of = functools.lru_cache(maxsize=4096)(_iso)
_HEADS_MAX = 10_000  # index names (days or months) whose bulk header start is kept


class ElasticsearchStore:
    """Event sink and query backend on Elasticsearch 8.x (same interface as SqliteStore)."""

    def __init__(self, url: str, *, index_prefix: str = "smartlogs-events",
                 dead_letter: Callable[[list[dict]], None] | None = None,
                 refresh: bool | str = False, max_retries: int = 8, window_seconds: int = 60,
                 request_timeout: float = 30.0, chunk_size: int = 2000,
                 backoff: float = 0.1, max_backoff: float = 5.0,
                 client: Elasticsearch | None = None, client_kwargs: dict | None = None,
                 index_period: str = "day", query_timeout: float = DEFAULT_QUERY_TIMEOUT,
                 refresh_interval: str = DEFAULT_REFRESH_INTERVAL):
        if index_prefix != index_prefix.lower() or not index_prefix or any(
                c in index_prefix for c in ' "*\\<|,>/?#:'):
            raise ValueError(f"invalid index prefix {index_prefix!r} (lowercase, no wildcards)")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if index_period not in INDEX_PERIODS:
            raise ValueError(f"index_period must be one of {INDEX_PERIODS}, not {index_period!r}")
        if not _INTERVAL.fullmatch(refresh_interval):
            raise ValueError(f"refresh_interval must be like 500ms or 1s, not {refresh_interval!r}")
        self.refresh_interval = refresh_interval
        self.index_period = index_period
        self.query_timeout = query_timeout
        self._stopping = threading.Event()
        self._suffix_len = 10 if index_period == "day" else 7  # of the ISO date: YYYY-MM(-DD)
        self._heads: dict[str, tuple[str, bytes]] = {}  # date -> (index, its bulk header start)
        self.url = redact_url(url)  # for messages: a user:password in the URL stays hidden
        self.index_prefix = index_prefix
        self.pattern = f"{index_prefix}-*"
        self.incidents_index = f"{index_prefix}.incidents"  # not matched by the pattern
        self.catalog_index = f"{index_prefix}.catalog"  # not matched by the events' pattern
        self._catalog_ready = False
        # the catalog's aliases as this process last read them (id -> canonical id), and the
        # (text key, id) pairs it has recorded (streams.catalog: one id per template text)
        self._aliases: dict[str, str] = {}
        self._texts_known: set[tuple[int, str]] = set()
        self._stored_texts_recorded = False
        self.template_name = index_prefix
        self.window_seconds = int(window_seconds)
        self.max_retries = max_retries
        self.chunk_size = chunk_size
        self.dead_lettered = 0  # documents refused for good so far (dead-lettered or raised)
        self._dead_letter = dead_letter
        self._refresh = ("true" if refresh else None) if isinstance(refresh, bool) else refresh
        self._backoff, self._max_backoff = backoff, max_backoff
        self._owns_client = client is None
        # client_kwargs: credentials and TLS (smartlogs.security.es_client_kwargs)
        self._es = client or Elasticsearch(
            url, request_timeout=request_timeout, serializer=OrjsonSerializer(),
            max_retries=2, retry_on_timeout=True, **(client_kwargs or {}),
        )
        # the bulk path retries by itself: it must know which attempt got which answer
        self._bulk_es = self._es.options(max_retries=0, retry_on_timeout=False)
        self._setup_done = False
        self._setup_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._last_seq = 0

    @property
    def client(self):
        """The Elasticsearch client (for what lives beside the events: the alert history)."""
        return self._es

    # -- setup ----------------------------------------------------------------------------
    def ensure_setup(self) -> None:
        """Install (or update) the index template. Idempotent; called lazily by the first write."""
        with self._setup_lock:
            if self._setup_done:
                return
            self._retrying("put index template", lambda: self._es.indices.put_index_template(
                name=self.template_name,
                **index_template(self.index_prefix, self.refresh_interval)))
            # indices made before incident_id and receiver were mapped learn them (adding a
            # field is allowed); a field's indexing cannot change in an existing index, so
            # those made before schema 4 keep indexing what it no longer does (harmless)
            self._retrying("put mapping", lambda: self._es.indices.put_mapping(
                index=self.pattern, ignore_unavailable=True, allow_no_indices=True,
                properties={"incident_id": _keyword(), "receiver": _keyword()}))
            # the refresh interval is dynamic: existing indices (the current month's takes
            # the live events) follow the setting too
            self._retrying("put settings", lambda: self._es.indices.put_settings(
                index=self.pattern, ignore_unavailable=True, allow_no_indices=True,
                settings={"index": {"refresh_interval": self.refresh_interval}}))
            self._setup_done = True

    def _ensure_incidents_index(self) -> None:
        if getattr(self, "_incidents_ready", False):
            return
        body = incidents_index_body()

        def create():
            try:
                self._es.indices.create(index=self.incidents_index, **body)
            except ApiError as exc:
                if exc.status_code != 400 or "resource_already_exists" not in str(exc):
                    raise
                self._map_incident_arrival()
        self._retrying("create incidents index", create)
        self._incidents_ready = True

    def _map_incident_arrival(self) -> None:
        """An incidents index made before incidents were listed in arrival time does not index
        ``last_received`` (its mapping is not dynamic), though every snapshot carries it: map
        it and re-index the stored snapshots, once, each under its own version (a snapshot
        written meanwhile has a higher one and wins). Done here rather than by
        ``_update_by_query``, which needs Elasticsearch's reindex module."""
        mapping = self._es.indices.get_mapping(index=self.incidents_index).body
        props = next(iter(mapping.values()), {}).get("mappings", {}).get("properties", {})
        if "last_received" in props:
            return
        self._es.indices.put_mapping(index=self.incidents_index,
                                     properties={"last_received": {"type": "double"}})
        actions = (({"index": {"_index": self.incidents_index, "_id": hit["_id"],
                               "version": hit["_version"], "version_type": "external_gte"}},
                    orjson.dumps(hit["_source"], option=_ORJSON_OPTS))
                   for hit in scan(self._es, index=self.incidents_index, version=True,
                                   query={"query": {"match_all": {}}}))
        n = 0
        for ok, info in streaming_bulk(self._bulk_es, actions, chunk_size=self.chunk_size,
                                       expand_action_callback=_identity, raise_on_error=False,
                                       max_retries=0):
            status = next(iter(info.values())).get("status", 500)
            if not (200 <= status < 300 or status == 409):  # 409: a newer snapshot is stored
                raise ElasticsearchStoreError(
                    f"re-indexing incidents for last_received: {_reason(next(iter(info.values())))}")
            n += 1
        log.info("%s: last_received mapped, %d stored incident(s) re-indexed",
                 self.incidents_index, n)

    def _ensure_catalog(self) -> None:
        """Create the catalog index with its mapping (idempotent; on first use)."""
        if self._catalog_ready:
            return
        self._retrying("create the catalog index", lambda: self._es.options(ignore_status=400)
                       .indices.create(index=self.catalog_index, settings=_CATALOG_SETTINGS,
                                       mappings=_CATALOG_MAPPINGS))
        # an index made before the text keys: the field is added (a mapping only grows)
        self._retrying("update the catalog mapping", lambda: self._es.indices.put_mapping(
            index=self.catalog_index, properties={"h": {"type": "long"}}))
        self._catalog_ready = True

    def _retrying(self, what: str, fn: Callable, retries: int | None = None):
        retries = self.max_retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return fn()
            except (TransportError, ApiError) as exc:
                status = getattr(exc, "status_code", None)
                transient = status is None or status == 429 or status >= 500
                if not transient or attempt == retries:
                    if transient:
                        raise StoreUnavailable(f"{what}: {exc}") from exc
                    raise
                log.warning("%s failed (%s); retrying", what, exc)
                self._sleep(attempt)

    def _sleep(self, attempt: int) -> None:
        delay = min(self._max_backoff, self._backoff * 2 ** attempt)
        time.sleep(delay * (0.5 + random.random() / 2))

    def close(self) -> None:
        if self._owns_client:
            self._es.close()

    def health(self) -> dict:
        """Cluster health (``GET /_cluster/health``: this distribution has no ``GET /``)."""
        try:
            resp = self._es.options(request_timeout=5).cluster.health()
        except (TransportError, ApiError) as exc:
            # wrong credentials (401) or too few privileges (403): say so, not "unreachable"
            denied = getattr(exc, "status_code", None) in (401, 403)
            return {"status": "unauthorized" if denied else "unreachable", "error": redact(exc)}
        return {"status": resp["status"], "nodes": resp["number_of_nodes"]}

    # -- sink -----------------------------------------------------------------------------
    def _next_seqs(self, n: int) -> int:
        with self._seq_lock:
            base = max(time.time_ns() // 1000, self._last_seq + 1)
            self._last_seq = base + n - 1
            return base

    def write(self, events: list[dict], *, window_seconds: int = 60, applied_seq: int = 0,
              catalog: list | None = None) -> int:
        """Store a batch idempotently; return how many events were new (those get ``e["seq"]``).
        ``catalog``: the template catalog's records the batch made, stored after its events.

        ``window_seconds`` and ``applied_seq`` are accepted for interface compatibility: windows
        are aggregated at query time here, and the stream's offsets are the transport's business.
        """
        if self._aliases:  # ids the catalog made aliases: stored under the canonical id
            for e in events:
                c = self._aliases.get(e["template_id"])
                if c is not None:
                    e["template_id"] = c
        new = self._write_events(events) if events else 0
        if catalog:
            self._write_catalog(catalog)
        merged = [(c.template_id, c.into) for c in catalog or () if c.kind == "merged"]
        self._settle(texts_of(events, catalog), merged)
        return new

    def write_batch(self, batch, *, window_seconds: int = 60) -> int:
        """Store a processed batch (``streams.runtime.stage.Batch``): its events and catalog
        records (``write``), then its incident snapshots (after the events they count; a retry
        writes both again, absorbed: events by id, snapshots by ``rev``). The interface both
        stores give ``streams.runtime.stage.Sink``; ``batch.cursors`` is the embedded spool's
        (the stream's offsets are the transport's here). Returns how many events were new."""
        new = (self.write(batch.events, window_seconds=window_seconds, catalog=batch.catalog)
               if batch.events or batch.catalog else 0)
        if batch.incidents:
            self.write_incidents(batch.incidents)
        return new

    # -- one id per template text (streams.catalog) ---------------------------------------
    def _settle(self, pairs: set[tuple[str, str]], links: list[tuple[str, str]]) -> int:
        """Record the (id, text) pairs this process has not recorded yet (visible to every
        process when this returns), link each to the ids recorded with its text before, and
        apply the canonical-id rule to those links and to ``links`` (merges): new aliases get
        a ``merged`` record each, and the events of every id that is an alias now are
        rewritten. Of two processes recording one text at once, the later search sees the
        earlier pair (each write is refreshed before its search)."""
        if not self._stored_texts_recorded:
            pairs = set(pairs) | self._stored_texts()
        keyed = {(text_key(text), tid) for tid, text in pairs} - self._texts_known
        links = list(links)
        if keyed:
            self._ensure_catalog()
            now = time.time()
            self._write_docs([{"_op_type": "create", "_index": self.catalog_index,
                               "_id": f"text/{h}/{tid}",
                               "_source": {"kind": "text", "template_id": tid, "h": h,
                                           "at": now}} for h, tid in sorted(keyed)])
            hashes = sorted({h for h, _ in keyed})
            ids_of: dict[int, set[str]] = {}
            for i in range(0, len(hashes), 1000):
                for hit in scan(self._es, index=self.catalog_index, size=1000,
                                query={"query": {"bool": {"filter": [
                                    {"term": {"kind": "text"}},
                                    {"terms": {"h": hashes[i:i + 1000]}}]}}}):
                    src = hit["_source"]
                    ids_of.setdefault(src["h"], set()).add(src["template_id"])
            for h, tid in sorted(keyed):
                links.extend((tid, other) for other in sorted(ids_of.get(h, ())) if other != tid)
        if getattr(self, "_pending_mark", False):
            self._write_docs([{"_op_type": "create", "_index": self.catalog_index,
                               "_id": self._TEXTS_MARK, "_source": {"kind": "meta"}}])
            self._pending_mark = False
        if not links:
            self._texts_known |= keyed
            return 0
        full = self._read_aliases()
        changes = converge(links, full)
        if changes:
            recorded = set(links)
            now = time.time()
            records = [alias_change(o, n, at=now) for o, n in sorted(changes.items())
                       if (o, n) not in recorded]
            base = self._next_seqs(len(records)) if records else 0
            self._write_docs([{"_op_type": "create", "_index": self.catalog_index,
                               "_id": _doc_id(r.id), "_source": {**r.as_dict(), "order": base + i}}
                              for i, r in enumerate(records)])
            full.update(changes)
            for root in set(changes.values()):
                full.pop(root, None)
        self._aliases = full
        ids = {x for link in links for x in link}
        roots = {full.get(x, x) for x in ids}
        n = self._rewrite({x: c for x, c in full.items() if c in roots})
        self._texts_known |= keyed  # (only once linked: a failure above tries them again)
        return n

    _TEXTS_MARK = "meta/stored-texts-recorded"

    def _stored_texts(self) -> set[tuple[str, str]]:
        """Once per catalog: the (id, latest text) of every template stored before the catalog
        recorded texts (ids numbered T1, T2, ...), so a model that names those templates by
        their text joins the stored ids. A mark document says it was done; each process
        checks it once."""
        self._ensure_catalog()
        done = self._retrying("read the catalog mark", lambda: self._es.options(
            ignore_status=404).get(index=self.catalog_index, id=self._TEXTS_MARK))
        if done.body.get("found"):
            self._stored_texts_recorded = True
            return set()
        pairs = {(r["id"], r["template"]) for r in self.templates(limit=10_000_000)
                 if r.get("template")}
        self._stored_texts_recorded = True  # (the mark is written once these are recorded)
        self._pending_mark = True
        return pairs

    def _write_docs(self, actions: list[dict]) -> None:
        """Catalog documents, each stored once (``create``; 409: stored before), visible to
        searches when this returns."""
        if not actions:
            return

        def bulk() -> None:
            for ok, info in streaming_bulk(self._bulk_es, actions, chunk_size=self.chunk_size,
                                           raise_on_error=False, raise_on_exception=False,
                                           max_retries=0, refresh=True):
                item = next(iter(info.values()))
                if not ok and item.get("status") != 409:
                    status = item.get("status", 500)
                    if status == 429 or status >= 500:
                        raise StoreUnavailable(f"catalog write: {_reason(item)}")
                    raise ElasticsearchStoreError(f"catalog write: {_reason(item)}")

        self._retrying("write catalog records", bulk)

    def _read_aliases(self) -> dict[str, str]:
        """Every alias in the catalog (id -> canonical id): the canonical-id rule over every
        ``merged`` record (a miner's merge or an alias the catalog made)."""
        self._ensure_catalog()
        self._retrying("refresh the catalog", lambda: self._es.indices.refresh(
            index=self.catalog_index, ignore_unavailable=True))
        links = [(h["_source"]["template_id"], h["_source"]["into"])
                 for h in scan(self._es, index=self.catalog_index, size=2000,
                               query={"query": {"term": {"kind": "merged"}}})
                 if h["_source"].get("into")]
        return converge(links, {})

    def template_aliases(self) -> dict[str, str]:
        """Every id that is an alias in the catalog → the canonical id of its template (what
        the runtimes hand their miners). Aliases new to this process have their events
        rewritten (events this process stored under them before it knew), and the ids of the
        events it writes from now on are mapped."""
        full = self._read_aliases()
        new = {k: v for k, v in full.items() if self._aliases.get(k) != v}
        self._aliases = full
        if new:
            roots = set(new.values())
            self._rewrite({x: c for x, c in full.items() if c in roots})
        return dict(full)

    def _write_catalog(self, records: list, refresh: bool | str = False) -> None:
        """History records, each stored once (``create`` on the record id; 409: stored before)."""
        self._ensure_catalog()
        base = self._next_seqs(len(records))
        actions = [{"_op_type": "create", "_index": self.catalog_index, "_id": _doc_id(r.id),
                    "_source": {**r.as_dict(), "order": base + i}} for i, r in enumerate(records)]

        def bulk() -> None:
            failed = []
            for ok, info in streaming_bulk(self._bulk_es, actions, chunk_size=self.chunk_size,
                                           raise_on_error=False, raise_on_exception=False,
                                           max_retries=0, refresh=refresh or None):
                item = next(iter(info.values()))
                if not ok and item.get("status") != 409:
                    failed.append(item)
            if failed:
                status = failed[0].get("status", 500)
                if status == 429 or status >= 500:
                    raise StoreUnavailable(f"catalog write: {_reason(failed[0])}")
                raise ElasticsearchStoreError(f"catalog write: {_reason(failed[0])}")

        self._retrying("write catalog records", bulk)

    def _write_events(self, events: list[dict]) -> int:
        self.ensure_setup()
        seen: set = set()
        batch: list[dict] = []
        for e in events:  # a repeated id within the batch: the first one wins (like SqliteStore)
            key = e.get("id") if isinstance(e, dict) else None
            if key is not None:  # (no id: dead-lettered below, never dropped silently)
                key = str(key)
                if key in seen:
                    continue
                seen.add(key)
            batch.append(e)
        base = self._next_seqs(len(batch))
        stored_at = time.time_ns() // 1_000_000
        pending: list[_Pending] = []
        dead: list[dict] = []
        for i, e in enumerate(batch):
            try:
                pending.append(self._prepare(e, base + i, stored_at))
            except Exception as exc:  # noqa: BLE001 - a malformed event must not sink the batch
                dead.append({"event": e,
                             "error": f"unindexable event: {type(exc).__name__}: {exc}"})

        # group by daily index: a chunk then touches few shards (one translog sync each), which
        # matters when a replay spreads a batch over many days; seq keeps the batch order
        pending.sort(key=lambda p: p.index)
        new = 0
        verify: list[_Pending] = []
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(attempt - 1)
            retry: list[_Pending] = []
            done = 0
            try:
                for p, item in self._bulk(pending):
                    done += 1
                    p.attempts += 1
                    status = item.get("status", 500)
                    if 200 <= status < 300:
                        new += 1
                        p.event["seq"] = p.seq
                    elif status == 409:
                        if p.attempts > 1:  # an earlier attempt may have stored it
                            verify.append(p)
                    elif status == 429 or status >= 500 or _store_side(status, item):
                        retry.append(p)
                    else:
                        dead.append({"event": p.event, "error": _reason(item)})
            except TransportError as exc:
                # no answer for the rest (a chunk may or may not have been applied)
                for p in pending[done:]:
                    p.attempts += 1
                retry.extend(pending[done:])
                log.warning("bulk write to %s failed (%s): %d document(s) to retry",
                            self.url, exc, len(pending) - done)
            if retry:
                log.warning("bulk write: %d document(s) not taken yet (attempt %d of %d)",
                            len(retry), attempt + 1, self.max_retries + 1)
            pending = retry
            if not pending:
                break
        if verify:
            new += self._verify_ours(verify)
        if dead:
            self.dead_lettered += len(dead)
            log.error("Elasticsearch rejected %d document(s), e.g. %s", len(dead), dead[0]["error"])
            if self._dead_letter is not None:
                self._dead_letter(dead)
        if pending:
            raise StoreUnavailable(
                f"Elasticsearch at {self.url} did not take {len(pending)} document(s) after "
                f"{self.max_retries + 1} attempts", stored=new, pending=len(pending))
        if dead and self._dead_letter is None:
            raise DocumentsRejected(dead, stored=new)
        return new

    def _bulk(self, pending: list[_Pending]):
        """(pending, its bulk item) in order, one ``_bulk`` request per chunk (at most
        ``chunk_size`` documents and 10 MiB). The request body is joined from the bytes
        ``_prepare`` made: ``helpers.streaming_bulk`` would serialise every action header again
        and wrap every answer (~3 µs of the writer's CPU per event, bench/RESULTS.md), and its
        retries are not used (this store retries by item). A refusal of a whole request (an
        ``ApiError``: 429, 5xx, 413, ...) answers each of its documents with that status; a
        ``TransportError`` (no answer) propagates: the documents from that chunk on are
        retried. A missing answer for a document is a 500 (retried)."""
        limit = 10 * 1024 * 1024
        extra = {"refresh": self._refresh} if self._refresh else {}
        start = 0
        while start < len(pending):
            end, size = start, 0
            while end < len(pending) and end - start < self.chunk_size:
                n = len(pending[end].header) + len(pending[end].body) + 2
                if end > start and size + n > limit:
                    break
                size += n
                end += 1
            chunk = pending[start:end]
            lines: list[bytes] = []
            for p in chunk:
                lines.append(p.header)
                lines.append(p.body)
            lines.append(b"")  # the body ends with a newline
            try:  # one bytes body: the client's NDJSON serialiser would copy it line by line
                resp = self._bulk_es.bulk(
                    operations=b"\n".join(lines), filter_path="errors,items.*.status,items.*.error",
                    **extra)  # filter_path: a much smaller answer
                items = [next(iter(it.values())) for it in resp.body.get("items") or ()]
            except ApiError as exc:
                items = [{"status": exc.status_code, "error": str(exc)}] * len(chunk)
            for k, p in enumerate(chunk):
                yield p, (items[k] if k < len(items) else {"status": 500, "error": "no answer"})
            start = end

    def _prepare(self, e: dict, seq: int, stored_at: int) -> _Pending:
        """An event's document and bulk header, serialised once. Per-line work of the worker
        (~9 µs a line before, bench/RESULTS.md): the ISO time is formatted once per distinct
        ts, the header's start once per index, the four flags without a loop; the bytes are
        the same as before (tests/unit/test_es_documents.py)."""
        event_id = e["id"]
        if not isinstance(event_id, str):
            event_id = str(event_id)
        ts = float(e["ts"])
        iso = _iso_of(ts)
        get = e.get
        doc: dict = {"@timestamp": iso, "id": event_id, "ts": ts}
        for k in _PASSTHROUGH:
            v = get(k)
            if v is not None:
                doc[k] = v
        message = get("message")
        if isinstance(message, str):
            doc["words"] = " ".join(search_words(message))
        if "timestamp" not in doc:
            doc["timestamp"] = iso
        received = get("received")
        if received is not None:
            doc["received"] = received
        doc["anomaly"] = bool(get("anomaly"))  # _FLAGS, in their order
        doc["warming_up"] = bool(get("warming_up"))
        doc["parse_ok"] = bool(get("parse_ok"))
        doc["truncated"] = bool(get("truncated"))
        fields = get("fields")
        if fields:
            doc["fields"] = fields
        doc["stored_at"] = stored_at
        doc["seq"] = seq
        day = iso[:self._suffix_len]
        head = self._heads.get(day)
        if head is None:
            if len(self._heads) >= _HEADS_MAX:
                self._heads.clear()
            index = f"{self.index_prefix}-{day.replace('-', '.')}"
            head = self._heads[day] = (index, b'{"create":{"_index":' + orjson.dumps(index)
                                       + b',"_id":')
        # (at most 4 UTF-8 bytes a character: an id this short is within _id's limit)
        doc_id = event_id if len(event_id) <= MAX_ID_BYTES // 4 else _doc_id(event_id)
        body = orjson.dumps(doc, default=_json_default, option=_ORJSON_OPTS)
        return _Pending(e, head[0], doc_id, seq, body, head[1] + orjson.dumps(doc_id) + b"}}")

    def merge_templates(self, merges: dict[str, str]) -> int:
        """Apply a miner's merges (old id → the id that took it over) to the catalog: each
        links two ids of one template, whose id is the smallest of all ids so linked
        (``streams.catalog.converge``); the events of the others are rewritten (``_rewrite``).
        Idempotent. Returns how many events were rewritten."""
        links = [(old, new) for old, new in merges.items() if new != old]
        if not links:
            return 0
        return self._settle(set(), links)

    def _rewrite(self, merges: dict[str, str]) -> int:
        """Rewrite the events of template ids that are aliases (old id → canonical id)
        to the canonical id: a scroll over the matching events, then each one indexed again
        whole, in bulk (the minimal distribution has neither ``_update_by_query`` nor
        painless; a partial update would have Elasticsearch re-render the stored epoch floats
        as ``1.79E9``, which the ``received`` date field then refuses).
        Events keep the template text they were emitted with. Idempotent: ids already
        rewritten match nothing. Returns how many events were rewritten. Windows and template
        lists are aggregated from the events here, so they follow."""
        pairs = {old: new for old, new in merges.items() if new != old}
        if not pairs:
            return 0
        self.ensure_setup()

        def rewrite() -> int:
            # a search sees what the last refresh made visible: the batch just written too
            self._es.indices.refresh(index=self.pattern, ignore_unavailable=True,
                                     allow_no_indices=True)
            hits = scan(self._es, index=self.pattern, ignore_unavailable=True,
                        allow_no_indices=True, size=2000,
                        query={"query": {"terms": {"template_id": sorted(pairs)}}})
            actions = []
            for h in hits:
                src = h["_source"]
                src["template_id"] = pairs[src["template_id"]]
                if "words" not in src and isinstance(src.get("message"), str):
                    # an index made before schema 5 keeps them out of _source: indexed
                    # again without them, the event would not be found by its words
                    src["words"] = " ".join(search_words(src["message"]))
                actions.append({"_op_type": "index", "_index": h["_index"], "_id": h["_id"],
                                "_source": src})
            n = 0
            for ok, info in streaming_bulk(self._bulk_es, actions, chunk_size=self.chunk_size,
                                           raise_on_error=False, max_retries=0, refresh=True):
                if not ok:
                    raise RuntimeError(f"template merge: {_reason(next(iter(info.values())))}")
                n += 1
            return n

        return self._retrying("merge templates", rewrite)

    def _verify_ours(self, items: list[_Pending]) -> int:
        """409s after a lost answer: count those whose stored seq is the one we sent."""
        new = 0
        for i in range(0, len(items), 1000):
            chunk = items[i:i + 1000]
            resp = self._retrying("mget", lambda: self._es.mget(
                docs=[{"_index": p.index, "_id": p.id} for p in chunk], source_includes=["seq"]))
            for p, doc in zip(chunk, resp["docs"]):
                if doc.get("found") and (doc.get("_source") or {}).get("seq") == p.seq:
                    new += 1
                    p.event["seq"] = p.seq
        return new

    # -- queries --------------------------------------------------------------------------
    def interrupt_queries(self) -> None:
        """Refuse new queries (the server is shutting down); running ones end within their
        budget, which Elasticsearch enforces."""
        self._stopping.set()

    def _search(self, **body):
        """A search of the events' indices (``_search_index``)."""
        return self._search_index(self.pattern, **body)

    def _search_index(self, index: str, **body) -> dict:
        """A search of ``index`` (a pattern, or one index that may not exist yet: no hits)
        within the query budget: a timeout or a partial answer is ``QueryTimeout``, a stop
        ``QueryInterrupted``."""
        budget = self.query_timeout
        es = self._es.options(request_timeout=budget + 2, max_retries=0, retry_on_timeout=False)

        def once():
            if self._stopping.is_set():
                raise QueryInterrupted(budget)
            try:
                return es.search(index=index, ignore_unavailable=True, allow_no_indices=True,
                                 timeout=f"{max(1, int(budget * 1_000_000))}micros", **body)
            except ConnectionTimeout:  # not retried: the budget is spent
                raise QueryTimeout(budget) from None
            except ApiError as exc:
                if exc.status_code == 400 and "without position data" in str(exc):
                    raise qsyntax.QueryUnsupported(
                        "a phrase needs word positions, which indices made before SmartLogs' "
                        f"index template version {SCHEMA_VERSION} lack; search the words "
                        "without quotes, or reindex") from None
                raise

        resp = self._retrying("search", once, retries=QUERY_RETRIES)
        if resp.body.get("timed_out"):  # partial results would be wrong totals
            raise QueryTimeout(budget)
        return resp.body

    def search(self, query: EventQuery) -> SearchResult:
        flt: list[dict] = []
        node = qsyntax.parse_query(query.q) if query.q else None
        if node is not None:  # text without words filters nothing, like SqliteStore
            flt.append(qsyntax.elasticsearch(node, "words"))
        for field, val in (("host", query.host), ("level", query.level),
                           ("template_id", query.template)):
            if val is not None:
                flt.append({"term": {field: val}})
        if query.source is not None:
            # a document written before events had a source held the receiver in ``source``
            # (and no ``receiver``): its source is its host
            flt.append({"bool": {"minimum_should_match": 1, "should": [
                {"term": {"source": query.source}},
                {"bool": {"filter": [{"term": {"host": query.source}}],
                          "must_not": [{"exists": {"field": "receiver"}}]}}]}})
        if query.anomaly is not None:
            flt.append({"term": {"anomaly": bool(query.anomaly)}})
        if query.incident is not None:
            flt.append({"term": {"incident_id": query.incident}})
        if query.basis == "arrival":
            flt.extend(_arrival_range(query.since, query.until))
        else:
            rng = {}
            if query.since is not None:
                rng["gte"] = query.since
            if query.until is not None:
                rng["lt"] = query.until
            if rng:
                flt.append({"range": {"ts": rng}})
        if query.after_seq is not None:
            flt.append({"range": {"seq": {"gt": query.after_seq}}})
        # tailing reads forward from a cursor; everything else is newest first
        if query.after_seq is not None:
            sort = [{"seq": {"order": "asc", "unmapped_type": "long"}}]
        elif query.arrival:
            sort = [{"seq": {"order": "desc", "unmapped_type": "long"}}]
        else:
            sort = [{"ts": {"order": "desc", "unmapped_type": "double"}},
                    {"seq": {"order": "desc", "unmapped_type": "long"}}]
        limit = min(query.limit if query.limit >= 0 else MAX_RESULT_WINDOW, MAX_RESULT_WINDOW)
        extra = {}
        if query.page_after is not None:  # the next page: search_after the key, in that order
            key = query.page_after
            extra["search_after"] = ([int(key[0])] if len(sort) == 1
                                     else [float(key[0]), int(key[1])])
        body = self._search(
            query={"bool": {"filter": flt}}, sort=sort, size=min(limit + 1, MAX_RESULT_WINDOW),
            # exact up to the limit, then "gte" (Elasticsearch's default of 10,000)
            track_total_hits=True if query.total_limit is None else query.total_limit,
            source_excludes=["@timestamp", "stored_at", "words"],
            aggs={"all": {"global": {}, "aggs": {"last_seq": {"max": {"field": "seq"}}}}},
            **extra,
        )
        last = ((body.get("aggregations") or {}).get("all") or {}).get("last_seq", {}).get("value")
        hits = body["hits"]["hits"]
        more = len(hits) > limit
        total = body["hits"]["total"]
        return SearchResult(total=total["value"],
                            events=[_source_to_event(h["_source"]) for h in hits[:limit]],
                            last_seq=int(last) if last is not None else 0, more=more,
                            total_relation=total.get("relation", "eq"))

    def _stats_filter(self, since: float | None, until: float | None,
                      field: str = "@timestamp") -> dict | None:
        """Whole windows whose start is in [since, until), as SqliteStore selects them."""
        rng: dict = {"format": "epoch_millis"}
        if since is not None:
            if math.isnan(since) or since == math.inf:
                return None
            if since != -math.inf:
                rng["gte"] = int(_aligned(since, self.window_seconds) * 1000)
        if until is not None:
            if math.isnan(until) or until == -math.inf:
                return None
            if until != math.inf:
                rng["lt"] = int(_aligned(until, self.window_seconds) * 1000)
        return {"range": {field: rng}} if len(rng) > 1 else {"match_all": {}}

    def stats(self, *, since: float | None = None, until: float | None = None,
              windows: int = 60, top: int = 10, basis: str = "event") -> dict:
        # windows of event time (@timestamp) or of arrival time (received), like SqliteStore
        field = "received" if basis == "arrival" else "@timestamp"
        flt = self._stats_filter(since, until, field)
        query = flt if flt is not None else {"match_none": {}}
        top_n = top if top >= 0 else MAX_RESULT_WINDOW
        want = windows if windows >= 0 else math.inf
        shard_size = max(100, top_n * 10)
        # (the "" bucket is merged into "-", as SqliteStore's `value or "-"` does: ask for one more)
        terms = lambda field: {"terms": {"field": field, "missing": "-",  # noqa: E731
                                         "size": top_n + 1, "shard_size": shard_size}}
        aggs: dict = {
            "anomalies": {"filter": {"term": {"anomaly": True}}},
            "all_templates": {"global": {}, "aggs": {"n": {"cardinality": {
                "field": "template_id", "precision_threshold": 40000}}}},
        }
        if top_n > 0:
            aggs |= {
                "top_hosts": terms("host"), "top_components": terms("component"),
                "top_levels": terms("level"),
                "top_templates": {"terms": {"field": "template_id", "size": top_n,
                                            "shard_size": shard_size},
                                  "aggs": {"latest": _latest_template()}},
            }
        if want > 0:
            aggs["windows"] = self._windows_agg(min(want, 1000), field=field)
        body = self._search(query=query, size=0, track_total_hits=True, aggs=aggs)
        res = body.get("aggregations") or {}

        page = res.get("windows") or {}
        buckets = list(page.get("buckets", []))
        while page.get("buckets") and page.get("after_key") and len(buckets) < want:
            more = self._search(query=query, size=0, aggs={"windows": self._windows_agg(
                min(want - len(buckets), 1000), after=page["after_key"], field=field)})
            page = (more.get("aggregations") or {}).get("windows") or {}
            buckets.extend(page.get("buckets", []))
        out_windows = []
        for b in reversed(buckets):  # newest first from the agg; oldest first in the answer
            out_windows.append({
                "start": _iso(b["key"]["w"] / 1000),
                "total": b["doc_count"],
                "anomalies": b["anomalies"]["doc_count"],
                "levels": dict(_merge_missing(b["levels"]["buckets"], None)),
            })

        def top_of(name: str) -> list[dict]:
            if name not in res:
                return []
            return [{"key": k, "count": c}
                    for k, c in _merge_missing(res[name]["buckets"], top_n)]

        top_templates = [
            {"key": b["key"], "count": b["doc_count"], "template": _latest_text(b["latest"])}
            for b in (res.get("top_templates") or {}).get("buckets", [])
        ]
        return {
            "totals": {
                "events": body["hits"]["total"]["value"],
                "anomalies": (res.get("anomalies") or {}).get("doc_count", 0),
                "templates": int(
                    ((res.get("all_templates") or {}).get("n") or {}).get("value") or 0),
            },
            "windows": out_windows,
            "top_hosts": top_of("top_hosts"),
            "top_components": top_of("top_components"),
            "top_levels": top_of("top_levels"),
            "top_templates": top_templates,
        }

    def _windows_agg(self, size: int, after: dict | None = None,
                     field: str = "@timestamp") -> dict:
        composite: dict = {
            "size": size,
            "sources": [{"w": {"date_histogram": {
                "field": field, "fixed_interval": f"{self.window_seconds}s",
                "order": "desc"}}}],
        }
        if after:
            composite["after"] = after
        return {"composite": composite, "aggs": {
            "anomalies": {"filter": {"term": {"anomaly": True}}},
            "levels": {"terms": {"field": "level", "missing": "-", "size": 100}},
        }}

    def templates(self, *, limit: int = 100, sort: str = "count",
                  since: float | None = None) -> list[dict]:
        """The template catalog, like SqliteStore's (exact counts: a composite aggregation over
        every template id; ``since`` keeps those whose first event is at or after it)."""
        if limit == 0:
            return []
        rows: list[dict] = []
        after = None
        while True:  # every template id (composite: exact counts whatever the shard count)
            comp: dict = {"size": 1000, "sources": [{"id": {"terms": {"field": "template_id"}}}]}
            if after:
                comp["after"] = after
            body = self._search(size=0, aggs={"t": {"composite": comp, "aggs": {
                "first": {"min": {"field": "ts"}}, "last": {"max": {"field": "ts"}}}}})
            agg = (body.get("aggregations") or {}).get("t") or {}
            for b in agg.get("buckets", []):
                rows.append({"id": b["key"]["id"], "template": None, "count": b["doc_count"],
                             "first_ts": b["first"]["value"], "last_ts": b["last"]["value"]})
            after = agg.get("after_key")
            if not after or not agg.get("buckets"):
                break
        if since is not None:
            rows = [r for r in rows if r["first_ts"] is not None and r["first_ts"] >= since]
        rows.sort(key=lambda r: r["id"])  # then, stable: the order asked for (ties by id)
        if sort == "count":
            rows.sort(key=lambda r: -r["count"])
        else:
            key = "first_ts" if sort == "first_seen" else "last_ts"
            rows.sort(key=lambda r: -(r[key] if r[key] is not None else -math.inf))
        if limit > 0:
            rows = rows[:limit]
        for i in range(0, len(rows), 1000):  # the latest text of each chosen template
            chunk = rows[i:i + 1000]
            body = self._search(size=0, query={"terms": {"template_id": [r["id"] for r in chunk]}},
                                aggs={"t": {"terms": {"field": "template_id", "size": len(chunk)},
                                            "aggs": {"latest": _latest_template()}}})
            texts = {b["key"]: _latest_text(b["latest"]) for b in
                     ((body.get("aggregations") or {}).get("t") or {}).get("buckets", [])}
            for r in chunk:
                r["template"] = texts.get(r["id"])
        marks = self.template_marks() if rows else {}
        return [template_row(r["id"], r["template"], r["count"], r["first_ts"], r["last_ts"],
                             marks.get(r["id"])) for r in rows]

    def template(self, template_id: str, *, history: int = 100) -> dict | None:
        """One template (``smartlogs.store.base.template_detail``), None when no event has it."""
        first = {"top_hits": {"size": 1, "sort": [{"seq": {"order": "asc"}}],
                              "_source": {"includes": ["message"]}}}
        last = {"top_hits": {"size": 1, "sort": [{"seq": {"order": "desc"}}],
                             "_source": {"includes": ["message", "template"]}}}
        body = self._search(size=0, track_total_hits=True,
                            query={"term": {"template_id": template_id}},
                            aggs={"lo": {"min": {"field": "ts"}}, "hi": {"max": {"field": "ts"}},
                                  "first": first, "last": last})
        count = body["hits"]["total"]["value"]
        if not count:
            return None
        aggs = body["aggregations"]

        def src(name: str) -> dict:
            hits = aggs[name]["hits"]["hits"]
            return (hits[0].get("_source") or {}) if hits else {}

        newest = src("last")
        cut = lambda m: m[:MAX_EXAMPLE_CHARS] if isinstance(m, str) else None  # noqa: E731
        row = template_row(template_id, newest.get("template"), count, aggs["lo"]["value"],
                           aggs["hi"]["value"], self.template_marks().get(template_id))
        records, total = self._catalog_records(template_id, history)
        return template_detail(row, records, first=cut(src("first").get("message")),
                               last=cut(newest.get("message")), total=total)

    def _catalog_search(self, **body) -> dict:
        return self._retrying("search the catalog", lambda: self._es.search(
            index=self.catalog_index, ignore_unavailable=True, allow_no_indices=True,
            **body), retries=QUERY_RETRIES).body

    def _catalog_records(self, template_id: str, limit: int) -> tuple[list[dict], int]:
        """The latest ``limit`` history records of a template (and of ids merged into it)."""
        body = self._catalog_search(
            size=limit, track_total_hits=True,
            query={"bool": {"should": [{"term": {"template_id": template_id}},
                                       {"term": {"into": template_id}}],
                            "minimum_should_match": 1,
                            "must_not": [{"term": {"kind": "text"}}]}},
            sort=[{"at": "desc"}, {"order": "desc"}])
        records = [h["_source"] for h in body["hits"]["hits"]]
        return records, body["hits"]["total"]["value"]

    def merged_into(self, template_id: str) -> str | None:
        """The id a template was merged into (its lines carry that id now), or None."""
        body = self._catalog_search(size=1, sort=[{"order": "desc"}], query={"bool": {"filter": [
            {"term": {"template_id": template_id}}, {"term": {"kind": "merged"}}]}})
        hits = body["hits"]["hits"]
        return hits[0]["_source"].get("into") if hits else None

    def set_mark(self, change) -> bool:
        """Feedback: a history record (its mark is the template's mark from now on), visible
        to searches when this returns. False when no event has the template."""
        found = self._retrying("count", lambda: self._es.count(
            index=self.pattern, ignore_unavailable=True, allow_no_indices=True,
            query={"term": {"template_id": change.template_id}}), retries=QUERY_RETRIES)
        if not found["count"]:
            return False
        self._write_catalog([change], refresh="wait_for")
        return True

    def template_marks(self) -> dict[str, str]:
        """Every marked template's mark: its latest feedback record's, passed on to the id it
        was merged into unless that one has its own (``streams.catalog.carry_marks``)."""
        latest: dict[str, tuple] = {}
        merges: dict[str, str] = {}
        for h in scan(self._es, index=self.catalog_index, ignore_unavailable=True, size=1000,
                      query={"query": {"terms": {"kind": ["feedback", "merged"]}}}):
            r = h["_source"]
            if r["kind"] == "merged":
                merges[r["template_id"]] = r["into"]
                continue
            key = (r["at"], r.get("order", 0))
            if r["template_id"] not in latest or key > latest[r["template_id"]][0]:
                latest[r["template_id"]] = (key, r.get("mark"))
        marks = {tid: mark for tid, (_, mark) in latest.items() if mark}
        return carry_marks(marks, merges)

    # -- incidents ------------------------------------------------------------------------
    def write_incidents(self, incidents: list[dict]) -> None:
        """Upsert incident snapshots by id; a snapshot older (lower ``rev``) than the stored
        one is refused by Elasticsearch (409) and skipped. Retries like events, then
        ``StoreUnavailable``."""
        if not incidents:
            return
        self._ensure_incidents_index()
        parts = [inc for inc in incidents if inc.get("part") is not None]
        if parts:
            self._merge_incident_parts(parts)
            incidents = [inc for inc in incidents if inc.get("part") is None]
            if not incidents:
                return
        latest: dict[str, dict] = {}
        for inc in incidents:  # one batch may carry several snapshots of one incident
            if inc["id"] not in latest or inc["rev"] >= latest[inc["id"]]["rev"]:
                latest[inc["id"]] = inc
        pending = list(latest.values())
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(attempt - 1)
            actions = [({"index": {"_index": self.incidents_index, "_id": inc["id"],
                                   "version": int(inc["rev"]), "version_type": "external_gte"}},
                        orjson.dumps(inc, default=_json_default, option=_ORJSON_OPTS))
                       for inc in pending]
            retry = []
            try:
                for (ok, info), inc in zip(streaming_bulk(
                        self._bulk_es, actions, chunk_size=self.chunk_size,
                        expand_action_callback=_identity, raise_on_error=False,
                        raise_on_exception=False, max_retries=0,
                        filter_path="errors,items.*.status,items.*.error",
                        **({"refresh": self._refresh} if self._refresh else {})), pending):
                    status = next(iter(info.values())).get("status", 500)
                    if 200 <= status < 300 or status == 409:  # 409: a newer one is stored
                        continue
                    if status == 429 or status >= 500 or _store_side(status, next(iter(info.values()))):
                        retry.append(inc)
                    else:
                        raise ElasticsearchStoreError(
                            f"incident {inc['id']} refused: {_reason(next(iter(info.values())))}")
            except TransportError as exc:
                log.warning("incident write to %s failed (%s); retrying", self.url, exc)
                retry = pending
            pending = retry
            if not pending:
                return
        raise StoreUnavailable(f"Elasticsearch at {self.url} did not take {len(pending)} "
                               f"incident snapshot(s)", pending=len(pending))

    def _merge_incident_parts(self, parts: list[dict]) -> None:
        """Parts of shared incidents (one severe pattern over partitions, whose workers write
        concurrently): each id's stored record is read, the parts merged into it
        (``streams.incidents.merge_part``) and written back only if no one wrote it meanwhile
        (``if_seq_no``/``if_primary_term``; a new record with ``op_type=create``); on a
        conflict, read and merged again."""
        by_id: dict[str, list[dict]] = {}
        for snap in parts:
            by_id.setdefault(snap["id"], []).append(snap)
        es = self._es.options(request_timeout=self.query_timeout + 2, ignore_status=404)
        extra = {"refresh": self._refresh} if self._refresh else {}
        for inc_id, snaps in by_id.items():
            for _ in range(_MERGE_ATTEMPTS):
                got = self._retrying("get incident", lambda: es.get(
                    index=self.incidents_index, id=inc_id)).body
                found = got.get("found", False)
                merged = got.get("_source") if found else None
                changed = False
                for snap in snaps:
                    m = merge_part(merged, snap)
                    if m is not None:
                        merged, changed = m, True
                if not changed:
                    break
                body = orjson.dumps(merged, default=_json_default, option=_ORJSON_OPTS)
                cond = ({"if_seq_no": got["_seq_no"], "if_primary_term": got["_primary_term"]}
                        if found else {"op_type": "create"})
                try:
                    self._retrying("write incident", lambda: self._es.index(
                        index=self.incidents_index, id=inc_id, document=body, **cond, **extra))
                    break
                except ApiError as exc:
                    if exc.status_code != 409:  # 409: written meanwhile; merge again
                        raise
            else:
                raise StoreUnavailable(f"incident {inc_id}: {_MERGE_ATTEMPTS} conflicting "
                                       f"writes in a row", pending=len(snaps))

    def incidents(self, *, status: str | None = None, since: float | None = None,
                  source: str | None = None, template: str | None = None,
                  limit: int = 100, basis: str = "event") -> list[dict]:
        """Incidents, the latest line first, in event or arrival time (like
        SqliteStore.incidents)."""
        when = "last_received" if basis == "arrival" else "last_ts"
        flt: list[dict] = []
        for field, val in (("status", status), ("source", source), ("template_id", template)):
            if val is not None:
                flt.append({"term": {field: val}})
        if since is not None:
            flt.append({"range": {when: {"gte": since}}})
        body = self._search_index(self.incidents_index, query={"bool": {"filter": flt}},
                                  sort=[{when: {"order": "desc", "unmapped_type": "double"}},
                                        {"id": {"order": "asc", "unmapped_type": "keyword"}}],
                                  size=min(limit, MAX_RESULT_WINDOW))
        return [h["_source"] for h in body["hits"]["hits"]]

    def incident(self, incident_id: str) -> dict | None:
        """One incident by id (a realtime get: seen as soon as written), or None."""
        es = self._es.options(request_timeout=self.query_timeout + 2, ignore_status=404)
        resp = self._retrying("get incident", lambda: es.get(index=self.incidents_index,
                                                             id=incident_id),
                              retries=QUERY_RETRIES)
        return resp.body.get("_source") if resp.body.get("found") else None

    def count_ids(self, prefix: str) -> int:
        """Events whose id (a keyword) starts with ``prefix``."""
        resp = self._retrying("count", lambda: self._es.count(
            index=self.pattern, ignore_unavailable=True, allow_no_indices=True,
            query={"prefix": {"id": prefix}}), retries=QUERY_RETRIES)
        return int(resp["count"])

    def count_events(self) -> int:
        resp = self._retrying("count", lambda: self._es.count(
            index=self.pattern, ignore_unavailable=True, allow_no_indices=True),
            retries=QUERY_RETRIES)
        return int(resp["count"])

    # -- housekeeping ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Make everything written so far searchable now (tests, tools; not the hot path)."""
        self._retrying("refresh", lambda: self._es.indices.refresh(
            index=f"{self.pattern},{self.catalog_index}", ignore_unavailable=True,
            allow_no_indices=True))

    def indices(self) -> list[str]:
        """The indices of this store (daily or monthly), oldest first."""
        resp = self._retrying("get indices", lambda: self._es.indices.get(
            index=self.pattern, ignore_unavailable=True, allow_no_indices=True,
            expand_wildcards="open,closed"))
        return sorted(resp.body)

    def delete_before(self, ts: float) -> list[str]:
        """Retention: delete whole indices whose day or month ends at or before ``ts`` (by
        name: wildcard deletes are refused by default), whichever period made them. Returns the
        deleted index names."""
        day = _iso(ts)[:10].replace("-", ".")
        month = day[:7]
        doomed = []
        for i in self.indices():
            suffix = i[len(self.index_prefix) + 1:]
            if (_DAY.fullmatch(suffix) and suffix < day) or (_MONTH.fullmatch(suffix) and suffix < month):
                doomed.append(i)
        for name in doomed:
            self._retrying("delete index", lambda n=name: self._es.indices.delete(
                index=n, ignore_unavailable=True))
        return doomed


_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json_default(obj):
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Decimal):
        return float(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _identity(action):
    return action


# refusals that say nothing about the document (disk full → read-only block, auth, a closed or
# missing index when auto-create is off): retried, then StoreUnavailable; never dead-lettered
_STORE_SIDE_ERRORS = {"cluster_block_exception", "index_not_found_exception",
                      "index_closed_exception", "security_exception"}


def _store_side(status: int, item: dict) -> bool:
    if status in (401, 403, 404, 408):
        return True
    err = item.get("error")
    return isinstance(err, dict) and err.get("type") in _STORE_SIDE_ERRORS


def _reason(item: dict) -> str:
    err = item.get("error")
    status = item.get("status")
    if isinstance(err, dict):
        text = f"{err.get('type')}: {err.get('reason')}"
        cause = err.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
    else:
        text = str(err)
    return f"{text} [status {status}]"


def _arrival_range(since: float | None, until: float | None) -> list[dict]:
    """since/until on ``received`` (a date: millisecond precision), as SqliteStore compares
    them (an infinite or NaN bound: no bound, or nothing at all)."""
    rng: dict = {"format": "epoch_millis"}
    far = 8e12  # seconds (year ~255,000): beyond what a date holds; a bound past it is ±inf
    for name, v, empty in (("gte", since, math.inf), ("lt", until, -math.inf)):
        if v is None or math.copysign(1, -empty) * v >= far:
            continue  # since=-inf or until=+inf: no bound
        if math.isnan(v) or math.copysign(1, empty) * v >= far:
            return [{"match_none": {}}]
        rng[name] = math.floor(v * 1000)
    return [{"range": {"received": rng}}] if len(rng) > 1 else []


def _latest_template() -> dict:
    return {"top_hits": {"size": 1, "sort": [{"seq": {"order": "desc"}}],
                         "_source": {"includes": ["template"]}}}


def _latest_text(agg: dict) -> str | None:
    hits = agg.get("hits", {}).get("hits", [])
    return (hits[0].get("_source") or {}).get("template") if hits else None


def _merge_missing(buckets: Iterable[dict], top: int | None) -> list[tuple[str, int]]:
    counts: Counter = Counter()
    for b in buckets:
        counts[b["key"] if b["key"] != "" else "-"] += b["doc_count"]
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ordered if top is None else ordered[:top]


def _num(v, cast):
    if v is None:
        return None
    try:
        return cast(v)
    except (TypeError, ValueError):
        return v


def _source_to_event(src: dict) -> dict:
    """A stored document → the event dict SqliteStore returns (same keys, order and types)."""
    e = {c: src.get(c) for c in _COLUMNS}
    e["seq"] = int(e["seq"]) if e["seq"] is not None else 0
    e["ts"] = _num(e["ts"], float)
    e["received"] = _num(e["received"], float)
    e["score"] = _num(e["score"], float)
    if e["pid"] is not None and not isinstance(e["pid"], str):
        e["pid"] = str(e["pid"])
    e["params"] = e["params"] if isinstance(e["params"], list) else (
        [e["params"]] if e["params"] is not None else [])
    e["fields"] = e["fields"] or {}
    for flag in _FLAGS:
        e[flag] = bool(e[flag])
    e["incident_id"] = src.get("incident_id")
    if e["receiver"] is None:  # written before events had a source: ``source`` was the receiver
        e["receiver"] = e["source"]
        e["source"] = e["host"] or e["source"]
    return e
