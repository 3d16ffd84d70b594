"""One write per response: the status line and headers go out with the body.

uvicorn's HTTP protocols write an answer's status line and headers when the app starts its
response, and the body with the next message: two ``send`` system calls, two TCP segments
and two wake-ups of the client for every answer. For a small answer (the 202 of a one-line
``POST /ingest``) that second system call and the loopback delivery it triggers were the
largest single cost of the API process (bench/RESULTS.md, small requests).

:class:`OneWriteTransport` wraps the connection's transport: it holds a write until the
next one and sends both with one ``writelines`` (one ``writev`` on uvloop); a write that no
other follows in the same turn of the event loop goes out at the end of that turn
(``call_soon``), so a streamed answer (the live tail) is never held back, and at most one
write (the last one) is ever held. ``close``/``write_eof`` send what is held first.
"""

from __future__ import annotations

import asyncio

__all__ = ["OneWriteTransport"]


class OneWriteTransport:
    """A transport whose consecutive writes in one turn of the event loop go out together."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if data:
                self._held = data
                self._loop.call_soon(self.flush)
            return
        self._held = None
        self._transport.writelines((held, data))

    def writelines(self, chunks) -> None:
        held, self._held = self._held, None
        self._transport.writelines((held, *chunks) if held is not None else chunks)

    def flush(self) -> None:
        """Send the write held, if any (at the end of the loop turn that made it)."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    # what uvicorn asks of every request's transport, without __getattr__'s detour
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name):
        return getattr(self._transport, name)
