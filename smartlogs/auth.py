"""API keys: creation, hashed storage, verification, scopes, per-key rate limits.

Keys look like ``sl_<43 url-safe characters>`` (256 random bits) and are shown once, when
created. Only their SHA-256 is stored (a fast hash is right for random 256-bit secrets; slow
password hashes are for low-entropy passwords). Scopes: ``ingest`` (send events), ``read``
(queries and the console), ``admin`` (both).

While no key was ever created, the API is open — which ``smartlogs up``/``api`` allow only on
a loopback address. Once a key exists, every request except ``/healthz``, ``/metrics``, the API
docs and the console's page and its script/style files needs one (each route's scope is declared in ``ROUTE_SCOPES``, matched by exact path template, never by prefix); revoking every key does *not*
reopen the API (that would turn revoking a leaked key into exposing the server): it then refuses
everything protected until a key is created, or ``keys.db`` is deleted on purpose. A request needs ``Authorization: Bearer <key>``,
or ``Authorization: ApiKey <key>`` (also base64 ``id:key`` as Elasticsearch clients send it), or
``Authorization: Basic`` with the key as the password (for shippers that only know basic auth).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SCOPES", "ApiKey", "KeyStore", "RateLimiter", "parse_authorization", "required_scope",
           "route_template", "ROUTE_SCOPES",
           "is_loopback"]

SCOPES = ("ingest", "read", "admin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE, created REAL NOT NULL, revoked REAL
);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created: float
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        return self.revoked is None and (self.scope == "admin" or self.scope == scope)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """Keys in a small SQLite file; lookups served from memory, reloaded when the file changes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)  # nothing touches the disk until the first use
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKey] = {}
        self._any = False  # a key was created (active or revoked)
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.path, timeout=10) as conn:
                conn.executescript(_SCHEMA)
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
            self._ready = True
        return sqlite3.connect(self.path, timeout=10)

    def create(self, name: str, scope: str) -> tuple[ApiKey, str]:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if not name or len(name) > 100:
            raise ValueError("name must be 1-100 characters")
        secret = "sl_" + secrets.token_urlsafe(32)
        key = ApiKey(id=secrets.token_hex(4), name=name, scope=scope, created=time.time())
        try:
            with self._connect() as conn:
                conn.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
                             (key.id, name, scope, _hash(secret), key.created))
        except sqlite3.IntegrityError:
            raise ValueError(f"a key named {name!r} already exists") from None
        self._stamp = None
        return key, secret

    def list(self) -> list[ApiKey]:
        if not self.path.exists():  # listing creates nothing
            return []
        with self._connect() as conn:
            rows = conn.execute("SELECT id, name, scope, created, revoked FROM api_keys ORDER BY created")
            return [ApiKey(*r) for r in rows]

    def revoke(self, name_or_id: str) -> ApiKey:
        with self._connect() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked = ? WHERE (name = ? OR id = ?) AND revoked IS NULL",
                               (time.time(), name_or_id, name_or_id))
            if cur.rowcount == 0:
                raise KeyError(f"no active key named or with id {name_or_id!r}")
        self._stamp = None
        return next(k for k in self.list() if name_or_id in (k.name, k.id))

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < 2.0:
            return
        self._checked = now
        if not self.path.exists():
            self._by_hash, self._any, self._stamp = {}, False, ("absent",)
            return
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with self._connect() as conn:
            rows = conn.execute("SELECT id, name, scope, created, revoked, hash FROM api_keys").fetchall()
        with self._lock:
            self._by_hash = {r[5]: ApiKey(*r[:5]) for r in rows if r[4] is None}
            self._any = bool(rows)
            self._stamp = stamp

    @property
    def enabled(self) -> bool:
        """True once a key was created, even if every key is revoked since (fail closed): then
        every protected request needs an active one."""
        self._refresh()
        return self._any

    def active(self) -> int:
        """How many keys are not revoked."""
        self._refresh()
        return len(self._by_hash)

    def verify(self, secret: str) -> ApiKey | None:
        self._refresh()
        return self._by_hash.get(_hash(secret))

    def admits(self, secret: str | None, scope: str) -> bool:
        """Whether a request with ``secret`` may do what ``scope`` covers now: always while no
        key was ever created, else only with an active key of that scope."""
        if not self.enabled:
            return True
        key = self.verify(secret) if secret else None
        return key is not None and key.allows(scope)


def parse_authorization(header: str | None) -> str | None:
    """The key from 'Bearer <key>', 'ApiKey <key>' or 'ApiKey base64(id:key)'."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":  # shippers that only know user/password: any user, the key as password
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    if scheme.lower() == "apikey":
        if value.startswith("sl_"):
            return value
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return value or None
        return decoded.partition(":")[2] or decoded
    return None


# Every route of the API and the scope it needs, by exact path template and method (None: open).
# Open: health, metrics, the API docs, the console's page and its script/style files (a browser
# sends no key for a <script> tag; the page asks for a read key and sends it with its API calls),
# and ``GET /``, which answers browsers with the console and shippers' probes with an
# Elasticsearch-style banner. A path that matches no entry needs a read key (it is a 404 or 405
# for whoever holds one), so a route added to the app but not here is closed, and the test
# generated from the app's routes fails until it is listed.
_GET, _HEAD_GET = frozenset({"GET"}), frozenset({"GET", "HEAD"})
ROUTE_SCOPES: tuple[tuple[frozenset[str], str, str | None], ...] = (
    (_HEAD_GET, "/", None),
    (_GET, "/console/{name}", None),
    (_GET, "/healthz", None),
    (_GET, "/metrics", None),
    (_HEAD_GET, "/openapi.json", None),
    (_HEAD_GET, "/docs", None),
    (_HEAD_GET, "/docs/oauth2-redirect", None),
    (_HEAD_GET, "/docs/assets/{name}", None),  # Swagger UI's files (ingest_api/docs.py)
    (frozenset({"POST"}), "/ingest", "ingest"),
    (frozenset({"POST", "PUT"}), "/_bulk", "ingest"),
    (frozenset({"POST", "PUT"}), "/{index}/_bulk", "ingest"),
    (frozenset({"POST"}), "/loki/api/v1/push", "ingest"),
    (frozenset({"POST"}), "/v1/logs", "ingest"),
    # shippers probe these with the key they ingest with
    (_GET, "/_license", "ingest"),
    (_GET, "/_xpack", "ingest"),
    (_GET, "/_cluster/health", "ingest"),
    (_GET, "/ingest/runs/{run_id}", "ingest"),  # how much of a replay is stored: the replay's key
    (_GET, "/api/events", "read"),
    (_GET, "/api/stats", "read"),
    (_GET, "/api/templates", "read"),
    (_GET, "/api/templates/{template_id}", "read"),
    (frozenset({"POST"}), "/api/templates/{template_id}/feedback", "admin"),  # changes scoring
    (_GET, "/api/sources", "read"),
    (_GET, "/api/rejections", "read"),
    (_GET, "/api/stream", "read"),
    (_GET, "/api/alerts", "read"),
    (_GET, "/api/incidents", "read"),
    (_GET, "/api/incidents/{incident_id}", "read"),
    (frozenset({"POST"}), "/api/alerts/silences", "admin"),
)


def _template_regex(template: str) -> re.Pattern[str]:
    """``/{index}/_bulk`` → a regex matching one non-empty path segment per ``{name}``."""
    parts = re.split(r"\{[^/{}]+\}", template)
    return re.compile("[^/]+".join(re.escape(p) for p in parts) + r"\Z")


_ROUTES = tuple((methods, template, _template_regex(template), scope_)
                for methods, template, scope_ in ROUTE_SCOPES)


def _route(method: str, path: str) -> tuple[str, str | None] | None:
    for methods, template, regex, scope_ in _ROUTES:
        if method in methods and regex.match(path):
            return template, scope_
    return None


def route_template(method: str, path: str) -> str | None:
    """The path template of the route that ``method path`` reaches (None: no route).

    >>> route_template("POST", "/docs/_bulk"), route_template("GET", "/docs")
    ('/{index}/_bulk', '/docs')
    >>> route_template("POST", "/healthz") is None
    True
    """
    found = _route(method, path)
    return found[0] if found else None


def required_scope(method: str, path: str) -> str | None:
    """Which scope ``method path`` needs: None for the open routes (health, metrics, docs, the
    console), decided by the exact route it reaches, never by a prefix of the path; a path no
    route serves needs a read key.

    >>> required_scope("POST", "/docs/_bulk"), required_scope("GET", "/docsx")
    ('ingest', 'read')
    """
    found = _route(method, path)
    return found[1] if found else "read"


class RateLimiter:
    """Token bucket per key: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.burst = burst or max(1.0, rate * 2)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed, else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
