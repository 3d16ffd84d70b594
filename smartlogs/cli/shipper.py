"""``smartlogs ship PATH...``: follow log files like ``tail -F`` and send their lines to SmartLogs.

* **Following.** Each PATH is followed by name: a file that does not exist yet is waited for;
  rotation by rename (logrotate's default: ``app.log`` → ``app.log.1``, new ``app.log``) is
  seen as a new inode at the path, and the old file is read to its end (the writer may still be
  finishing its last line: ``rotate_wait``) before the new one is read from its start;
  truncation in place (logrotate ``copytruncate``, ``: > app.log``) is seen as a file shorter
  than the position, or whose first bytes changed, and is read again from its start.
* **Position.** A state file holds, per path, the file's identity (device, inode, a digest of
  its first KiB) and the byte offset up to which lines were *accepted* by the API (written
  atomically after each accepted batch). A restart resumes there: lines are neither skipped
  nor repeated. A file rotated while the shipper was stopped is found again by its inode in
  the same directory and finished first.
* **Ids.** Every line is sent with the id ``<file id>:<byte offset of the line>``; the file id
  is a random token given to each file (each truncation gives a new one) and kept in the state
  file before any of its lines is sent. A batch that is sent again (after a timeout, a 503, or
  a kill before the state was saved) therefore carries the same ids, and the store keeps each
  id once.
* **Sending.** Lines are batched (``batch_size`` lines / ``batch_bytes``) as NDJSON
  ``{"id", "raw"}`` items to ``POST /ingest``; connection errors, timeouts, 429 and 5xx
  answers are retried with exponential backoff, honouring ``Retry-After`` (lines written
  meanwhile wait in their files): forever, or for ``give_up_after`` seconds (``--once``),
  after which the shipper stops with the positions of the lines accepted so far.
  ``SMARTLOGS_API_KEY`` is sent as ``Authorization: Bearer``. A 401/403/4xx answer stops the
  shipper with the reason; the position is not advanced, so nothing is lost.
* **Multi-line events.** A stack trace or an indented continuation joins the line before it
  (``streams.multiline``); the event keeps the id of its first line. A file's last event is held
  back (its offset not committed) until the next line starts or ``idle_flush`` seconds pass with
  no new line, so a trace being written is not cut in two, also across a restart.
* **Long lines.** Otherwise one line is one event. A line longer than ``max_line_length`` characters
  (the API's ``SMARTLOGS_MAX_LINE_LENGTH``) is sent cut to one character more than that, so
  that the API cuts it to its limit and flags it ``truncated`` as it does for any longer line;
  the rest of the line is skipped. At most ``4 * max_line_length + 4`` bytes of a line are read
  into memory (enough for that many characters): a line still being written is sent as soon
  as that much of it is there, and the state file records that its rest is to be skipped
  (``skip``), so a restart in the middle of it does not send its rest as a line.

Limits: only complete (LF-terminated) lines are sent, except the last line of a rotated file
and the start of an over-long line; NUL bytes in front of a line (the hole a writer without
``O_APPEND`` leaves after ``copytruncate``) are skipped; lines written between the copy and
the truncation of ``copytruncate`` are in the copy only (inherent to copytruncate; the rename
rotation has no such gap).
"""

from __future__ import annotations

import fcntl
import gzip as gzip_mod
import hashlib
import logging
import os
import re
import secrets
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import httpx
import orjson
import typer

from smartlogs.cli.replay import post_ingest
from streams.multiline import MultilineJoiner

__all__ = ["FileState", "StateFile", "FollowedFile", "Shipper", "ShipError", "ShipStats",
           "ship_command", "default_state_path"]

log = logging.getLogger(__name__)

HEAD_BYTES = 1024  # identity digest over the first KiB of a file
STATE_VERSION = 1
MAX_LINE_LENGTH = 65536  # the API's default SMARTLOGS_MAX_LINE_LENGTH
_NOT_NUL = re.compile(rb"[^\0]")


class ShipError(Exception):
    """The API refused in a way retrying cannot fix (bad key, payload refused)."""


# -- persisted state ------------------------------------------------------------------------

@dataclass
class FileState:
    """Where one followed file stands. ``offset``: every line before it was accepted."""

    fid: str
    dev: int
    ino: int
    offset: int = 0
    head: str = ""  # blake2b of the first head_len bytes ("" with head_len 0)
    head_len: int = 0
    skip: bool = False  # offset is inside an over-long line already sent: skip to its LF


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def exclusive_lock(path: Path):
    """``path`` opened and exclusively locked (released by the OS when the process ends,
    however it ends), or None when another process holds it."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _state_doc(st: FileState) -> dict:
    doc = asdict(st)
    if not doc["skip"]:  # the usual case: state files stay readable by older shippers
        del doc["skip"]
    return doc


def check_url(url: str) -> None:
    """A URL that can never answer is a setup mistake: said at once, not retried forever."""
    from smartlogs.urls import http_url_problem

    problem = http_url_problem(url, "--url", "http://127.0.0.1:8000")
    if problem:
        raise ShipError(problem)


def check_paths(paths: list[Path], *, missing_ok: bool = True) -> None:
    """Refuse what can never be followed: a directory or another non-regular file, and a path
    that does not exist unless ``missing_ok`` (followed files may appear later)."""
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if missing_ok:
                continue
            raise ShipError(f"{p} does not exist (without --once, a missing file is waited "
                            "for)") from None
        except OSError as exc:
            raise ShipError(f"{p}: {exc.strerror or exc}") from None
        if stat.S_ISDIR(st.st_mode):
            raise ShipError(f"{p} is a directory; give the files in it (e.g. {p}/*.log)")
        if not stat.S_ISREG(st.st_mode):
            raise ShipError(f"{p} is not a regular file")
        if not os.access(p, os.R_OK):
            raise ShipError(f"{p} is not readable")


def _open_regular(path) -> int | None:
    """``path`` opened for reading, or None when it is missing or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "smartlogs" / "ship-state.json"


class StateFile:
    """``{"version": 1, "files": {abs path: FileState}}``, replaced atomically on save.

    Holds an exclusive lock (``<state>.lock``) so two shippers never share a state file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive_lock(Path(str(self.path) + ".lock"))
        if self._lock is None:
            raise ShipError(f"another shipper is using the state file {self.path}")
        self.files: dict[str, FileState] = {}
        if self.path.exists():
            try:
                doc = orjson.loads(self.path.read_bytes())
                self.files = {p: FileState(**v) for p, v in doc.get("files", {}).items()}
            except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
                self._lock.close()
                raise ShipError(f"state file {self.path} is unreadable ({exc}); move it away to "
                                "start over (lines already sent would be sent again)") from None

    def get(self, path: str) -> FileState | None:
        return self.files.get(path)

    def set(self, path: str, st: FileState) -> None:
        self.files[path] = st

    def save(self) -> None:
        doc = {"version": STATE_VERSION, "files": {p: _state_doc(s) for p, s in self.files.items()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()


# -- one followed path ----------------------------------------------------------------------

@dataclass
class _Open:
    fd: int
    dev: int
    ino: int
    st: FileState
    name: str  # where it was opened (for messages)
    rotated_at: float | None = None  # when the path stopped pointing at this file


class FollowedFile:
    """One PATH followed by name (``tail -F``). ``read`` gives lines after the accepted
    offset; ``commit`` moves that offset once the API took them."""

    def __init__(self, path: Path, state: StateFile, *, start_at_end: bool = False,
                 rotate_wait: float = 2.0, max_line_length: int = MAX_LINE_LENGTH,
                 clock: Callable[[], float] = time.monotonic, multiline: bool = False,
                 idle_flush: float = 2.0):
        self.path = Path(os.path.abspath(path))
        self.key = str(self.path)
        self.state = state
        self.start_at_end = start_at_end
        self.rotate_wait = rotate_wait
        self.max_line_length = max_line_length
        self.max_line_bytes = 4 * max_line_length + 4  # holds more than max_line_length chars
        self.clock = clock
        self.cur: _Open | None = None
        # (offset, skip) after the lines last read, not yet committed
        self.pending: tuple[int, bool] | None = None
        self._cut_logged = False
        self.multiline, self.idle_flush = multiline, idle_flush
        self._held: tuple[int, float] | None = None  # (offset, since when) of the event held back
        self._first = True
        self._missing_logged = False

    # -- tracking the file behind the name ----------------------------------------------
    def refresh(self) -> None:
        """Open, or notice truncation/rotation; switch to the new file once the old is done."""
        if self.cur is None:
            self._open_initial()
            return
        cur = self.cur
        size = os.fstat(cur.fd).st_size
        if size < cur.st.offset or not self._head_ok(cur):
            log.info("%s was truncated (size %d < position %d, or its start changed): "
                     "reading it again from the start", cur.name, size, cur.st.offset)
            self._new_generation(cur, 0)
        try:
            pst = os.stat(self.path)
        except FileNotFoundError:
            pst = None
        if pst is not None and (pst.st_dev, pst.st_ino) == (cur.dev, cur.ino):
            cur.rotated_at = None
            return
        now = self.clock()
        if cur.rotated_at is None:
            cur.rotated_at = now
            log.info("%s was rotated (%s); finishing the old file first", self.key,
                     "removed" if pst is None else "new file")
        done = cur.st.offset >= os.fstat(cur.fd).st_size
        if done and pst is not None and (pst.st_size > 0 or now - cur.rotated_at >= self.rotate_wait):
            self._close()
            self._open_new_path()

    def _open_initial(self) -> None:
        saved = self.state.get(self.key)
        first, self._first = self._first, False
        fd = _open_regular(self.path)
        if saved is not None:
            if fd is not None:
                fst = os.fstat(fd)
                if (fst.st_dev, fst.st_ino) == (saved.dev, saved.ino):
                    cur = _Open(fd, fst.st_dev, fst.st_ino, saved, self.key)
                    self.cur = cur
                    if fst.st_size < saved.offset or not self._head_ok(cur):
                        log.info("%s was truncated while not followed: reading it from the start",
                                 self.key)
                        self._new_generation(cur, 0)
                    elif first and saved.offset:
                        log.info("%s: resuming at byte %d", self.key, saved.offset)
                    return
            old = self._find_rotated(saved)
            if old is not None:  # rotated while we were away: finish it first
                if fd is not None:
                    os.close(fd)
                ofd, name = old
                fst = os.fstat(ofd)
                self.cur = _Open(ofd, fst.st_dev, fst.st_ino, saved, name, rotated_at=self.clock())
                log.info("%s was rotated while not followed: finishing %s from byte %d first",
                         self.key, name, saved.offset)
                return
            if fd is not None:
                log.warning("%s: the file followed before (inode %d) is gone; following the new "
                            "file from its start", self.key, saved.ino)
        if fd is None:
            if not self._missing_logged:
                log.info("%s does not exist (yet) as a file; waiting for it", self.key)
                self._missing_logged = True
            return
        self._missing_logged = False
        fst = os.fstat(fd)
        self.cur = _Open(fd, fst.st_dev, fst.st_ino, FileState("", fst.st_dev, fst.st_ino), self.key)
        start, skip = (self._line_start_before(fd, fst.st_size) if (first and self.start_at_end)
                       else (0, False))
        self._new_generation(self.cur, start, skip)

    def _open_new_path(self) -> None:
        fd = _open_regular(self.path)
        if fd is None:
            return
        fst = os.fstat(fd)
        self.cur = _Open(fd, fst.st_dev, fst.st_ino, FileState("", fst.st_dev, fst.st_ino), self.key)
        self._new_generation(self.cur, 0)

    def _new_generation(self, cur: _Open, offset: int, skip: bool = False) -> None:
        """A file (or a truncated file's new content) gets a new id, saved before any send."""
        cur.st = FileState(secrets.token_hex(8), cur.dev, cur.ino, offset, skip=skip)
        self._update_head(cur)
        self.pending = None
        self.state.set(self.key, cur.st)
        self.state.save()

    def _find_rotated(self, saved: FileState) -> tuple[int, str] | None:
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return None
        for e in entries:
            try:
                if e.inode() != saved.ino or not e.is_file(follow_symlinks=False):
                    continue
                fd = os.open(e.path, os.O_RDONLY)
            except OSError:
                continue
            fst = os.fstat(fd)
            if fst.st_dev == saved.dev and fst.st_size >= saved.offset and (
                    saved.head_len == 0 or _digest(os.pread(fd, saved.head_len, 0)) == saved.head):
                return fd, e.path
            os.close(fd)
        return None

    @staticmethod
    def _line_start_before(fd: int, size: int) -> tuple[int, bool]:
        """Start of the line that contains ``size`` (for ``--start-at end``), and whether it
        is to be skipped (a line longer than 64 KiB: started before, its rest is skipped)."""
        lo = max(0, size - (1 << 16))
        tail = os.pread(fd, size - lo, lo)
        nl = tail.rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1, False
        return (size, True) if lo else (0, False)

    def _head_ok(self, cur: _Open) -> bool:
        st = cur.st
        return st.head_len == 0 or _digest(os.pread(cur.fd, st.head_len, 0)) == st.head

    def _update_head(self, cur: _Open) -> None:
        st = cur.st
        want = min(HEAD_BYTES, st.offset)
        if want > st.head_len:
            data = os.pread(cur.fd, want, 0)
            st.head, st.head_len = _digest(data), len(data)

    def _close(self) -> None:
        if self.cur is not None:
            os.close(self.cur.fd)
            self.cur = None
            self.pending = None

    # -- lines ----------------------------------------------------------------------------
    def read(self, max_lines: int, max_bytes: int) -> list[tuple[str, str]]:
        """``(id, event)`` pairs after the accepted offset (blank lines skipped); sets ``pending``.

        Without ``multiline``, one pair per line. With it, continuation lines join their event
        (``streams.multiline``), and the last event read is held back while more of it may
        still be written: ``pending`` then stops at its first line, so it is read again, whole,
        next time; it goes out once the file grew past it, or after ``idle_flush`` seconds
        without a new line, or when the read is full of it alone."""
        out, full = self._read_lines(max_lines, max_bytes)
        if not self.multiline or not out or self.cur is None:
            return out
        cur = self.cur
        j = MultilineJoiner(max_bytes=self.max_line_length)
        events = [e for fid_off, line in out for e in j.feed(line, fid_off)]
        open_id = j.pending_tag
        final = cur.rotated_at is not None and self.clock() - cur.rotated_at >= self.rotate_wait
        held_at = int(open_id.rsplit(":", 1)[1])
        now = self.clock()
        if self._held is None or self._held[0] != held_at:
            self._held = (held_at, now)
        idle = now - self._held[1] >= self.idle_flush
        if final or idle or (full and not events):
            self._held = None
            return events + j.flush()
        # hold the open event: the next read starts at its first line
        if held_at <= cur.st.offset:
            self.pending = None
        else:
            self.pending = (held_at, False)
        return events

    def _read_lines(self, max_lines: int, max_bytes: int) -> tuple[list[tuple[str, str]], bool]:
        """``(id, line)`` pairs, and whether the read stopped at ``max_lines``/``max_bytes``."""
        cur = self.cur
        if cur is None or max_lines <= 0:
            return [], False
        fid, off, skip = cur.st.fid, cur.st.offset, cur.st.skip
        final = cur.rotated_at is not None and self.clock() - cur.rotated_at >= self.rotate_wait
        out: list[tuple[str, str]] = []
        nbytes = 0
        full = False
        cap = self.max_line_bytes
        chunk = max(1 << 16, cap + 1)
        while len(out) < max_lines:
            data = os.pread(cur.fd, chunk, off)
            if not data:
                break
            eof = len(data) < chunk  # what the file holds now was read to its end
            pos = 0
            if skip:  # the rest of an over-long line already sent
                nl = data.find(b"\n")
                if nl < 0:
                    off += len(data)
                    if eof and final:  # the rotated file ends inside it: done
                        skip = False
                    continue
                pos, skip = nl + 1, False
            full = False
            while True:
                m = _NOT_NUL.search(data, pos)
                if m is None:  # only NULs up to what was read: skipped, unless they may be
                    if not eof or final:  # a preallocated end still to be written over
                        pos = len(data)
                    break
                start = m.start()
                nl = data.find(b"\n", start)
                if nl < 0:
                    rest = len(data) - start
                    if rest > cap or (eof and final and rest):  # over-long / a rotated file's
                        if out and nbytes + min(rest, cap) > max_bytes:  # last line
                            full = True
                            pos = start
                            break
                        self._add(out, fid, off + start, data[start:start + cap])
                        nbytes += min(rest, cap) + 40
                        pos, skip = len(data), rest > cap
                    else:
                        pos = start  # an incomplete line: read again from its start
                    break
                kept = min(nl - start, cap)
                if out and nbytes + kept > max_bytes:
                    full = True
                    pos = start
                    break
                self._add(out, fid, off + start, data[start:start + kept])
                nbytes += kept + 40
                pos = nl + 1
                if len(out) >= max_lines:
                    full = True
                    break
            off += pos
            if full:
                break
            if skip:
                continue
            if pos == 0 or eof:
                break
        pend = (off, skip)
        self.pending = pend if pend != (cur.st.offset, cur.st.skip) else None
        return out, full

    def _add(self, out: list, fid: str, offset: int, raw: bytes) -> None:
        # NULs: what a non-O_APPEND writer leaves in front after a copytruncate
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n").lstrip("\0")
        if len(line) > self.max_line_length:
            # one character more than the API keeps: it cuts the line and flags it truncated
            line = line[:self.max_line_length + 1]
            if not self._cut_logged:
                log.warning("%s: the line at byte %d is longer than %d characters: it is stored "
                            "cut and flagged truncated, the rest of it is skipped (further such "
                            "lines are counted in the summary)", self.key, offset,
                            self.max_line_length)
                self._cut_logged = True
        if line.strip():
            out.append((f"{fid}:{offset}", line))

    def commit(self) -> bool:
        """The lines last read were accepted: move the offset (the caller saves the state)."""
        if self.cur is None or self.pending is None:
            return False
        self.cur.st.offset, self.cur.st.skip = self.pending
        self.pending = None
        self._update_head(self.cur)
        self.state.set(self.key, self.cur.st)
        return True

    def close(self) -> None:
        self._close()


# -- the shipper ------------------------------------------------------------------------------

@dataclass
class ShipStats:
    lines: int = 0
    batches: int = 0
    truncated: int = 0  # lines sent cut to max_line_length (+1: the API flags them)
    retries: int = 0
    errors: list[str] = field(default_factory=list)


class Shipper:
    """Follow ``paths`` and ship their lines to ``url``; see the module docstring."""

    def __init__(self, paths: list[Path], url: str, *, state_path: Path,
                 headers: dict[str, str] | None = None, client: httpx.Client | None = None,
                 batch_size: int = 1000, batch_bytes: int = 4 << 20, poll_interval: float = 0.25,
                 rotate_wait: float = 2.0, start_at_end: bool = False, gzip: bool = False,
                 max_line_length: int = MAX_LINE_LENGTH, max_backoff: float = 10.0,
                 give_up_after: float | None = None, missing_ok: bool = True,
                 stop: threading.Event | None = None,
                 sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 multiline: bool = True, idle_flush: float = 2.0):
        """``give_up_after``: seconds a batch is retried while the API is down or busy before
        :class:`ShipError` (None: forever). ``missing_ok``: files that do not exist yet are
        waited for (else refused, like directories always are). ``multiline``: continuation
        lines join their event; the last event of a file goes out ``idle_flush`` seconds after
        its last line (at once with 0)."""
        if not paths:
            raise ValueError("give at least one file to follow")
        check_url(url)
        check_paths(paths, missing_ok=missing_ok)
        self.url = url
        self.state = StateFile(state_path)
        self.files = [FollowedFile(p, self.state, start_at_end=start_at_end,
                                   rotate_wait=rotate_wait, max_line_length=max_line_length,
                                   clock=clock, multiline=multiline, idle_flush=idle_flush)
                      for p in dict.fromkeys(paths)]
        self.max_line_length = max_line_length
        # lets the API record source "file" instead of "http" (where it supports the header)
        self.headers = {"X-SmartLogs-Source": "file", **(headers or {})}
        if gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.gzip = gzip
        self.own_client = client is None
        self.client = client or httpx.Client(timeout=30)
        self.batch_size, self.batch_bytes = batch_size, batch_bytes
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.give_up_after = give_up_after
        self.clock = clock
        self.stop_event = stop or threading.Event()
        self.sleep = sleep or self.stop_event.wait
        self.stats = ShipStats()
        self._rr = 0

    def poll(self) -> int:
        """One round: look at every file, send what is new, commit. Returns lines shipped
        (-1 when the send was interrupted by ``stop``)."""
        for f in self.files:
            try:
                f.refresh()
            except OSError as exc:
                log.warning("%s: %s", f.key, exc)
        batch: list[tuple[str, str, str]] = []  # (id, line, path)
        n = len(self.files)
        order = self.files[self._rr % n:] + self.files[:self._rr % n]
        self._rr += 1
        for f in order:
            left = self.batch_size - len(batch)
            try:
                batch += [(i, line, f.key) for i, line in f.read(left, self.batch_bytes)]
            except OSError as exc:
                log.warning("%s: %s", f.key, exc)
        if batch and not self._send(batch):
            for f in self.files:
                f.pending = None
            return -1
        committed = [f.commit() for f in self.files]  # every file, not up to the first True
        if any(committed):
            self.state.save()
        if batch:
            self.stats.lines += len(batch)
            self.stats.batches += 1
            self.stats.truncated += sum(len(line) > self.max_line_length for _, line, _ in batch)
        return len(batch)

    def _send(self, batch: list[tuple[str, str, str]]) -> bool:
        # each line names its file as its stream: the API learns each file's header apart
        body = b"\n".join(orjson.dumps({"id": i, "raw": line, "stream": name})
                          for i, line, name in batch)
        if self.gzip:
            body = gzip_mod.compress(body, compresslevel=5)

        def on_retry(problem: str, wait: float) -> None:
            log.warning("SmartLogs at %s not taking lines (%s); retrying in %.1fs", self.url,
                        problem, wait)

        sleep, should_stop = self.sleep, self.stop_event.is_set
        if self.give_up_after is not None:  # retry until then, never sleeping past it
            deadline = self.clock() + self.give_up_after

            def sleep(wait: float) -> None:
                self.sleep(max(0.0, min(wait, deadline - self.clock())))

            def should_stop() -> bool:
                return self.stop_event.is_set() or self.clock() >= deadline

        out = post_ingest(self.client, self.url, body, self.headers, max_retries=None,
                          max_delay=self.max_backoff, sleep=sleep,
                          should_stop=should_stop, on_retry=on_retry)
        self.stats.retries += out.retries
        if out.ok:
            return True
        if out.transient and self.stop_event.is_set():  # asked to stop while retrying
            return False
        if out.transient:
            self.stats.errors.append(out.error or "unreachable")
            raise ShipError(f"gave up after {self.give_up_after:g}s: SmartLogs at {self.url} is "
                            f"not taking lines ({out.error}); the positions of the lines it took "
                            "are saved: run again to resume")
        if out.status == 413 and len(batch) > 1:
            self.batch_size = max(1, len(batch) // 2)
            self.batch_bytes = max(1024, self.batch_bytes // 2)
            log.warning("batch too large for the API (%s); sending %d lines per request",
                        out.error, self.batch_size)
            return False
        self.stats.errors.append(out.error or "refused")
        raise ShipError(f"SmartLogs at {self.url} refused the lines: {out.error}")

    def run(self, *, once: bool = False) -> ShipStats:
        """Ship until ``stop`` is set (``once``: until everything there now is shipped)."""
        while not self.stop_event.is_set():
            n = self.poll()
            if n < 0 and not self.stop_event.is_set():
                continue  # 413: resend smaller
            if once and n <= 0:
                break
            if n < self.batch_size:
                self.sleep(self.poll_interval)
        return self.stats

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.state.close()
        if self.own_client:
            self.client.close()


# -- the command --------------------------------------------------------------------------------

class StartAt(str, Enum):
    beginning = "beginning"
    end = "end"


def ship_command(
    paths: Annotated[list[Path], typer.Argument(
        help="Files to follow like `tail -F` (they may not exist yet, except with --once; "
             "rotation and truncation are handled). Directories are refused.")],
    url: Annotated[str, typer.Option("--url", envvar="SMARTLOGS_URL",
                                     help="Base URL of a running SmartLogs API.")] = "http://127.0.0.1:8000",
    state_file: Annotated[Optional[Path], typer.Option(
        envvar="SMARTLOGS_SHIP_STATE",
        help="Where positions are kept (default ~/.local/state/smartlogs/ship-state.json).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100000, help="Lines per request at most.")] = 1000,
    batch_bytes: Annotated[int, typer.Option(min=1024, help="Bytes of lines per request at most.")] = 4 << 20,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between looks at idle files.")] = 0.25,
    rotate_wait: Annotated[float, typer.Option(min=0.0, help="Seconds a rotated file may still get its last line.")] = 2.0,
    start_at: Annotated[StartAt, typer.Option(help="Where to start in a file not seen before (only files present at start).")] = StartAt.beginning,
    max_backoff: Annotated[float, typer.Option(min=0.1, help="Longest wait between retries while the API is down, seconds.")] = 10.0,
    max_line_length: Annotated[int, typer.Option(
        min=1, envvar="SMARTLOGS_MAX_LINE_LENGTH",
        help="The API's line limit, characters: a longer line is one event, cut and flagged "
             "truncated; the rest of it is skipped.")] = MAX_LINE_LENGTH,
    gzip: Annotated[bool, typer.Option(help="gzip each request body.")] = False,
    once: Annotated[bool, typer.Option(
        help="Ship what the files hold now, then exit (the files must exist).")] = False,
    give_up_after: Annotated[float, typer.Option(
        min=0.0, help="With --once: seconds to retry while the API is down or busy, then exit "
                      "1; positions are kept, so a rerun resumes. Without --once: retry "
                      "forever.")] = 60.0,
    multiline: Annotated[bool, typer.Option(
        help="Join continuation lines (a stack trace, an indented dump) to the line they belong "
             "to: one event each.")] = True,
    multiline_idle: Annotated[float, typer.Option(
        min=0.0, help="Seconds without a new line after which a file's last event is sent "
                      "(it may still get continuation lines until then).")] = 2.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Follow log files and ship their lines to SmartLogs (POST /ingest), resuming where it stopped.

    Positions are saved after every accepted batch, so a restart neither skips nor repeats
    lines; each line's id is FILE-ID:OFFSET, so a resent batch is stored once. Retries with
    backoff while the API is down or busy (429/503, honouring Retry-After): forever, or with
    --once for --give-up-after seconds, then exits 1. Set SMARTLOGS_API_KEY when the API
    requires keys. Stop with Ctrl-C or SIGTERM.
    """
    from smartlogs.logs import configure_logging

    configure_logging("shipper", log_level,
                      os.environ.get("SMARTLOGS_LOGS_JSON", "").lower() in ("1", "true"))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request
    key = os.environ.get("SMARTLOGS_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        shipper = Shipper(paths, url, state_path=state_file or default_state_path(),
                          headers=headers, batch_size=batch_size, batch_bytes=batch_bytes,
                          poll_interval=poll_interval, rotate_wait=rotate_wait,
                          start_at_end=start_at == StartAt.end, gzip=gzip,
                          max_line_length=max_line_length, max_backoff=max_backoff,
                          give_up_after=give_up_after if once else None, missing_ok=not once,
                          stop=stop, multiline=multiline,
                          idle_flush=0.0 if once else multiline_idle)
    except ShipError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    log.info("shipping %s to %s (state %s)", ", ".join(f.key for f in shipper.files), url,
             shipper.state.path)
    started = time.monotonic()
    code = 0
    try:
        stats = shipper.run(once=once)
    except ShipError as exc:
        log.error("%s", exc)
        stats, code = shipper.stats, 1
    finally:
        shipper.close()
    log.info("shipped %d lines in %d batches (%d retries) in %.1fs%s", stats.lines,
             stats.batches, stats.retries, time.monotonic() - started,
             f"; {stats.truncated} cut to {max_line_length} characters" if stats.truncated else "")
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":  # python -m smartlogs.cli.shipper (until `smartlogs ship` is registered)
    typer.run(ship_command)
