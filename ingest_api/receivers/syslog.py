"""Syslog receiver: RFC 5424 and RFC 3164 over TCP and UDP, in the API process.

TCP accepts both RFC 6587 framings, detected once per connection from its first message and
never switched mid-stream: octet counting (``LEN SP MSG``; rsyslog's count includes a trailing
LF, which is stripped) only when the connection starts with ``<count> <PRI>``, else newline
termination (``MSG LF``, CR LF tolerated) for the whole connection, so a plain line such as
``5 apples sold`` is never taken for a count. UDP takes one message per datagram (RFC 5426).

Every message becomes an item ``{"raw": line}``: the pipeline's ``LineParser`` detects the
format, so RFC 5424 structured data lands in ``fields`` (``sd.<id>.<name>``) and facility and
severity in ``fields``/``level``, exactly as for a line posted to ``/ingest``. Its receiver
(the item's ``source``, the event's ``receiver``) is ``syslog_tcp`` or ``syslog_udp``; its
``stream`` is the sender's IP address, the event's source when the header names no host
(``streams.partitions``); metrics count received/accepted under that label and refused
or dropped events under ``smartlogs_requests_rejected_total{reason=...}``.

Delivery:

* **TCP applies backpressure, never unbounded buffering.** A connection reads a chunk, hands the
  messages it completes to ``transport.accept`` (spool commit or broker confirm) and reads again
  only once they were taken. While the transport refuses (503: backlog full, broker down) the
  connection retries the same messages and reads nothing, so the kernel buffers fill and the
  sender blocks (rsyslog then queues on its side). Memory per connection is bounded by the
  stream buffer (2 × ``read_size``) plus one message of at most ``max_frame`` bytes.
* **UDP is lossy by nature**: there is no way to slow a UDP sender down. Datagrams go into a
  bounded queue (``udp_queue`` messages) that is flushed in batches; while the transport refuses,
  the queue fills and further datagrams are dropped and counted
  (``reason="syslog_udp_overflow"``). The kernel also drops datagrams when the socket buffer
  overflows, invisibly. Use TCP when every line matters.
* Plain syslog has no application-level acknowledgement: on shutdown, messages already read are
  accepted (up to ``drain_timeout`` seconds), but what is still in kernel buffers is lost to
  the sender's knowledge. Syslog has no authentication either: bind it to loopback (the
  default) or a trusted network only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from ingest_api.decode import IngestError
from smartlogs import metrics

__all__ = ["SOURCE_TCP", "SOURCE_UDP", "SyslogFramer", "decode_message", "make_items",
           "SyslogReceiver", "start_syslog"]

log = logging.getLogger(__name__)

SOURCE_TCP = "syslog_tcp"
SOURCE_UDP = "syslog_udp"

_MAX_COUNT_DIGITS = 10  # an octet count longer than this is not a count
_DIGITS = frozenset(b"0123456789")
_SKIP = b"\n\r\0 \t"  # between frames: stray terminators and padding


# -- pure helpers -------------------------------------------------------------------------

class SyslogFramer:
    """Incremental RFC 6587 de-framing of a TCP byte stream: ``feed(bytes) -> [message bytes]``.

    The framing is detected once, from the first message, and kept for the whole stream (RFC
    6587 §3.4: a sender uses one framing per connection): octet counting when the stream starts
    with ``[1-9][0-9]* SP <PRI>``, else every message runs to the next LF. Messages longer than
    ``max_frame`` bytes are cut to ``max_frame`` (the rest of that message is skipped); empty
    messages are dropped. Pure: no I/O.

    >>> f = SyslogFramer()
    >>> f.feed(b"5 apples sold\\n1000 users logged in\\n")
    [b'5 apples sold', b'1000 users logged in']
    >>> SyslogFramer().feed(b"7 <13>one7 <13>two")
    [b'<13>one', b'<13>two']
    """

    __slots__ = ("max_frame", "_buf", "_skip", "_discard_to_lf", "octet_counting")

    def __init__(self, max_frame: int = 256 * 1024):
        if max_frame < 16:
            raise ValueError("max_frame must be at least 16 bytes")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skip = 0  # bytes still to drop of an oversized octet-counted frame
        self._discard_to_lf = False  # dropping the rest of an oversized LF-framed message
        self.octet_counting: bool | None = None  # None until the first message shows it

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            if self._discard_to_lf:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = n
                    break
                self._discard_to_lf = False
                pos = nl + 1
                continue
            if buf[pos] in _SKIP:
                pos += 1
                continue
            if self.octet_counting is None:
                self.octet_counting = _starts_octet_counted(buf, pos, n)
                if self.octet_counting is None:
                    break  # too few bytes to tell: wait for more
            if self.octet_counting and buf[pos] in _DIGITS and buf[pos] != 0x30:
                count, start = self._octet_count(buf, pos, n)
                if count == -1:  # digits so far: wait for more bytes
                    break
                if count is not None:
                    if count <= self.max_frame:
                        if n - start < count:
                            break  # incomplete frame
                        _emit(out, bytes(buf[start:start + count]))
                        pos = start + count
                    else:  # oversized: keep the first max_frame bytes, drop the rest
                        if n - start < self.max_frame:
                            break
                        _emit(out, bytes(buf[start:start + self.max_frame]))
                        pos = start + self.max_frame
                        self._skip = count - self.max_frame
                    continue
            # LF framing; in an octet-counted stream, a frame without a count is kept to its LF
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > self.max_frame:
                    _emit(out, bytes(buf[pos:pos + self.max_frame]))
                    self._discard_to_lf = True
                    pos = n
                break
            if nl - pos > self.max_frame:
                _emit(out, bytes(buf[pos:pos + self.max_frame]))
            else:
                _emit(out, bytes(buf[pos:nl]))
            pos = nl + 1
        del buf[:pos]
        return out

    def close(self) -> list[bytes]:
        """End of stream: an unterminated last message still counts (``logger`` without LF)."""
        out: list[bytes] = []
        if self._buf and not self._skip and not self._discard_to_lf:
            rest = bytes(self._buf).lstrip(_SKIP)
            if self.octet_counting:
                # an incomplete octet-counted frame: keep what came, without its count
                head, sep, tail = rest.partition(b" ")
                if sep and head.isdigit() and len(head) <= _MAX_COUNT_DIGITS and head[:1] != b"0":
                    rest = tail
            _emit(out, rest[: self.max_frame])
        self._buf.clear()
        self._skip, self._discard_to_lf = 0, False
        return out

    @staticmethod
    def _octet_count(buf: bytearray, pos: int, n: int) -> tuple[int | None, int]:
        """(count, start of the message) for ``DIGITS SP``; (-1, _) when more bytes are needed;
        (None, _) when this is not an octet count (then the message is LF-terminated)."""
        end = pos
        limit = min(n, pos + _MAX_COUNT_DIGITS + 1)
        while end < limit and buf[end] in _DIGITS:
            end += 1
        if end == n:
            return (-1, pos) if end - pos <= _MAX_COUNT_DIGITS else (None, pos)
        if buf[end] == 0x20 and end - pos <= _MAX_COUNT_DIGITS:
            return int(buf[pos:end]), end + 1
        return None, pos


def _starts_octet_counted(buf: bytearray, pos: int, n: int) -> bool | None:
    """Whether the stream's first message, at ``pos``, is ``[1-9][0-9]* SP <PRI>`` (RFC 6587
    octet counting of a syslog message); None while the bytes so far cannot tell."""
    i = pos
    if buf[i] not in _DIGITS or buf[i] == 0x30:
        return False
    while i < n and buf[i] in _DIGITS:
        i += 1
        if i - pos > _MAX_COUNT_DIGITS:
            return False
    # then: SP '<' 1-3 digits '>'
    for want in (b" ", b"<"):
        if i == n:
            return None
        if buf[i] != want[0]:
            return False
        i += 1
    digits = 0
    while i < n and buf[i] in _DIGITS and digits < 3:
        i += 1
        digits += 1
    if i == n:
        return None
    return digits > 0 and buf[i] == ord(">")


def _emit(out: list[bytes], frame: bytes) -> None:
    frame = frame.rstrip(b"\r\n\0")  # rsyslog counts the trailing LF into the octet count
    if frame.strip():
        out.append(frame)


def decode_message(frame: bytes) -> str:
    """Message bytes → text: UTF-8 with invalid bytes replaced (never dropped)."""
    return frame.decode("utf-8", errors="replace")


def make_items(frames: list[bytes], source: str, batch_id: str, now: float,
               peers: str | list[str | None] | None = None) -> list[dict]:
    """The items the transport takes, as ``POST /ingest`` makes them for a text line. ``peers``:
    the sender's address (one for a TCP connection, one per UDP datagram), each item's
    ``stream``: the source of a line whose header names no host (``streams.partitions``)."""
    items = [{"raw": decode_message(f), "id": f"{source}-{batch_id}-{i}", "received": now,
              "source": source, "cid": batch_id} for i, f in enumerate(frames)]
    if peers:
        for item, peer in zip(items, [peers] * len(items) if isinstance(peers, str) else peers):
            if peer:
                item["stream"] = peer
    return items


def _address(peername) -> str | None:
    """A socket's peer → its IP address (the port changes with every connection)."""
    if isinstance(peername, (tuple, list)) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


# -- the receiver -------------------------------------------------------------------------

@dataclass
class _Conn:
    task: asyncio.Task
    delivering: bool = False


@dataclass
class _Stats:
    connections: int = 0
    received: dict = field(default_factory=lambda: {SOURCE_TCP: 0, SOURCE_UDP: 0})
    accepted: dict = field(default_factory=lambda: {SOURCE_TCP: 0, SOURCE_UDP: 0})
    refusals: int = 0  # transport refusals (each retried)
    dropped: int = 0  # events lost: UDP overflow, or given up at shutdown/non-retryable


class SyslogReceiver:
    """Syslog on ``host:port`` over TCP and (optionally) UDP, into ``transport.accept``.

    ``port=0`` picks a free port (the same number for TCP and UDP; see ``port``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5514, *, tcp: bool = True,
                 udp: bool = True, max_frame: int = 256 * 1024, read_size: int = 64 * 1024,
                 batch_max: int = 2000, udp_queue: int = 10_000, drain_timeout: float = 5.0,
                 max_retry_wait: float = 1.0):
        if not (tcp or udp):
            raise ValueError("enable TCP, UDP or both")
        self.host, self.port = host, port
        self.tcp, self.udp = tcp, udp
        self.max_frame, self.read_size, self.batch_max = max_frame, read_size, batch_max
        self.udp_queue_max, self.drain_timeout = udp_queue, drain_timeout
        self.max_retry_wait = max_retry_wait
        self.transport = None
        self.stats = _Stats()
        self._server: asyncio.base_events.Server | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._udp_q: deque[bytes] = deque()
        self._udp_wake = asyncio.Event()
        self._udp_task: asyncio.Task | None = None
        self._conns: dict[asyncio.Task, _Conn] = {}
        self._stopping = False
        self._deadline = float("inf")

    @classmethod
    def from_settings(cls, settings) -> SyslogReceiver | None:
        """The receiver the settings ask for (``syslog_port`` 0: none)."""
        port = getattr(settings, "syslog_port", 5514)
        if not port:
            return None
        return cls(getattr(settings, "syslog_host", "127.0.0.1"), port,
                   udp=getattr(settings, "syslog_udp", True),
                   max_frame=max(1024, 4 * settings.max_line_length))

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, transport) -> None:
        """Bind and serve; raises ``OSError`` when the port cannot be bound."""
        self.transport = transport
        self._stopping, self._deadline = False, float("inf")
        self._udp_wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        for attempt in range(20):  # port 0: find one number free for both TCP and UDP
            try:
                if self.tcp:
                    self._server = await asyncio.start_server(
                        self._handle, self.host, self.port, limit=self.read_size,
                        reuse_address=True)
                    port = self._server.sockets[0].getsockname()[1]
                else:
                    port = self.port
                if self.udp:
                    self._udp_transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), local_addr=(self.host, port))
                    port = self._udp_transport.get_extra_info("sockname")[1]
                self.port = port
                break
            except OSError:
                if self._server is not None:
                    self._server.close()
                    await self._server.wait_closed()
                    self._server = None
                if self.port != 0 or attempt == 19:
                    raise
        if self.udp:
            self._udp_task = asyncio.create_task(self._udp_flusher(), name="syslog-udp")
        log.info("syslog receiver on %s:%d (%s)", self.host, self.port,
                 "+".join(p for p, on in (("tcp", self.tcp), ("udp", self.udp)) if on))

    async def stop(self) -> None:
        """Stop listening; accept what was already read (at most ``drain_timeout`` s)."""
        self._stopping = True
        self._deadline = time.monotonic() + self.drain_timeout
        if self._server is not None:
            self._server.close()
        if self._udp_transport is not None:
            self._udp_transport.close()
        for conn in list(self._conns.values()):
            if not conn.delivering:  # idle in read(): nothing read is pending
                conn.task.cancel()
        waiting = [c.task for c in self._conns.values()]
        if self._udp_task is not None:
            self._udp_wake.set()
            waiting.append(self._udp_task)
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.drain_timeout + 1)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._udp_transport = self._udp_task = None
        log.info("syslog receiver stopped (accepted tcp=%d udp=%d, dropped %d)",
                 self.stats.accepted[SOURCE_TCP], self.stats.accepted[SOURCE_UDP],
                 self.stats.dropped)

    # -- TCP ----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = self._conns[task] = _Conn(task)
        self.stats.connections += 1
        framer = SyslogFramer(self.max_frame)
        peer = _address(writer.get_extra_info("peername"))
        try:
            while not self._stopping:
                data = await reader.read(self.read_size)
                frames = framer.feed(data) if data else framer.close()
                conn.delivering = True
                for i in range(0, len(frames), self.batch_max):
                    await self._deliver(frames[i:i + self.batch_max], SOURCE_TCP, peer)
                conn.delivering = False
                if not data:
                    break
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("syslog connection closed: %s", exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.pop(task, None)
            writer.close()

    # -- UDP ----------------------------------------------------------------------------
    def _datagram(self, data: bytes, addr=None) -> None:
        if self._stopping:
            return
        if len(self._udp_q) >= self.udp_queue_max:
            self.stats.dropped += 1
            metrics.rejected("syslog_udp_overflow", request="syslog")
            return
        frame = data.rstrip(b"\r\n\0")
        if frame.strip():
            self._udp_q.append((frame, _address(addr)))
            self._udp_wake.set()

    async def _udp_flusher(self) -> None:
        q = self._udp_q
        while True:
            if not q:
                if self._stopping:
                    return
                self._udp_wake.clear()
                await self._udp_wake.wait()
                continue
            n = min(len(q), self.batch_max)
            got = [q.popleft() for _ in range(n)]
            await self._deliver([f for f, _ in got], SOURCE_UDP, [p for _, p in got])

    # -- both ---------------------------------------------------------------------------
    async def _deliver(self, frames: list[bytes], source: str,
                       peers: str | list[str | None] | None = None) -> bool:
        """Hand ``frames`` (sent by ``peers``, see ``make_items``) to the transport, retrying
        refusals until taken (or shutdown)."""
        if not frames:
            return True
        n = len(frames)
        metrics.EVENTS_RECEIVED.labels(source).inc(n)
        self.stats.received[source] += n
        batch_id = secrets.token_hex(6)
        items = make_items(frames, source, batch_id, time.time(), peers)
        return await self._accept_items(items, batch_id, source)

    async def _accept_items(self, items: list[dict], batch_id: str, source: str) -> bool:
        n = len(items)
        wait, refused = 0.02, False
        while True:
            try:
                with metrics.ACCEPT_SECONDS.time():
                    await self.transport.accept(items, batch_id)
            except IngestError as exc:
                if exc.status == 413 and n > 1:
                    # more than the transport takes in one batch (a backlog limit set below the
                    # receiver's batch): hand it over in parts that fit, never drop it
                    size = max(1, min(int(exc.body.get("limit") or 0) or n // 2, n // 2))
                    ok = True
                    for k in range(0, n, size):
                        ok = await self._accept_items(items[k:k + size], batch_id, source) and ok
                    return ok
                if exc.status not in (429, 503):
                    self._lost(n, exc.body.get("error", "rejected"), f"refused: {exc}")
                    return False
                retry_after = float(exc.body.get("retry_after") or 0) or self.max_retry_wait
                reason = exc.body.get("error", "unavailable")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a transport fault: retry, never drop silently
                log.warning("syslog: transport error, retrying: %s", exc)
                retry_after, reason = self.max_retry_wait, "transport_error"
            else:
                metrics.accepted(source, n)
                self.stats.accepted[source] += n
                log.debug("accepted %d %s events", n, source, extra={"correlation_id": batch_id})
                return True
            if not refused:  # count the batch once, not every poll while the backlog is full
                refused = True
                self.stats.refusals += 1
                metrics.rejected(reason, request="syslog")
                log.info("syslog: transport refused %d %s events (%s); holding them and "
                         "pausing reads until it takes them", n, source, reason)
            if self._stopping and time.monotonic() >= self._deadline:
                self._lost(n, "syslog_shutdown", "still refused at shutdown")
                return False
            await asyncio.sleep(min(wait, retry_after, self.max_retry_wait))
            wait = min(wait * 2, self.max_retry_wait)

    def _lost(self, n: int, reason: str, why: str) -> None:
        self.stats.dropped += n
        metrics.rejected(reason, n, request="syslog")
        log.error("syslog: %d events lost: %s", n, why)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver):
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr) -> None:
        self.receiver._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # pragma: no cover - ICMP noise
        log.debug("syslog udp: %s", exc)


async def start_syslog(settings, transport) -> SyslogReceiver | None:
    """Start the receiver the settings ask for, for the API's lifespan.

    Returns None when ``syslog_port`` is 0, or when the port cannot be bound: that is logged
    as an error and the API still serves HTTP ingest (like a broker that is down at start)."""
    receiver = SyslogReceiver.from_settings(settings)
    if receiver is None:
        return None
    try:
        await receiver.start(transport)
    except OSError as exc:
        log.error("syslog receiver NOT started: cannot bind %s:%s (%s); set SMARTLOGS_SYSLOG_PORT "
                  "to a free port, or 0 to turn syslog off", receiver.host, receiver.port, exc)
        return None
    if not _is_loopback(receiver.host):
        log.warning("syslog on %s:%d has no authentication (the protocol has none): anyone who "
                    "reaches that port can send events; allow only your log sources to it",
                    receiver.host, receiver.port)
    return receiver


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
