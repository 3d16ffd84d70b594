"""Read timeouts: a client may not hold a connection open by sending a request slowly.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no timeout for
reading a request: a connection that sends half its headers, or half its body, and then
nothing, is held for ever (300 such connections were never closed). Two bounds, both
``SMARTLOGS_READ_TIMEOUT`` seconds:

* headers: :func:`http_protocol` is uvicorn's own HTTP protocol (httptools or h11, whichever
  uvicorn picks) with a timer from the connection's start, and from the end of each response,
  until the next request's headers are complete; when it fires the connection is closed
  (there is no request yet to answer). uvicorn offers no hook for this, hence the subclass;
  it uses only what both of uvicorn's protocols have (``cycle``, ``transport``);
* body: :class:`ReadTimeoutMiddleware` waits at most that long for each piece of a request's
  body and then answers ``408`` (JSON, like every refusal); the connection is closed after it
  since the body was not read to its end.

A client that goes away mid-body is not an error of the server: ``read_body`` logs it at INFO
(``ingest_api.receivers.read_body``), with no traceback.
"""

from __future__ import annotations

import asyncio
import logging
from types import CoroutineType

from ingest_api.decode import IngestError
from ingest_api.onewrite import OneWriteTransport

__all__ = ["ReadTimeoutMiddleware", "http_protocol"]

log = logging.getLogger(__name__)


def http_protocol(timeout: float):
    """uvicorn's default HTTP protocol class, closing connections whose request headers take
    longer than ``timeout`` seconds to arrive (pass it as ``uvicorn.run(http=...)``), and
    sending each answer's headers and body with one write (:class:`OneWriteTransport`)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):
        header_timeout = timeout
        _header_timer: asyncio.TimerHandle | None = None
        _waiting_cycle = None

        def _arm(self) -> None:
            self._disarm()
            self._waiting_cycle = self.cycle  # headers are complete once a new cycle starts
            self._header_timer = asyncio.get_running_loop().call_later(
                self.header_timeout, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.cycle is self._waiting_cycle and not self.transport.is_closing():
                log.info("closing a connection whose request headers did not arrive within "
                         "%gs (SMARTLOGS_READ_TIMEOUT)", self.header_timeout)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            # the status line and headers go out with the body (ingest_api/onewrite.py)
            self.transport = OneWriteTransport(transport, asyncio.get_running_loop())
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._waiting_cycle:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.cycle is not None \
                    and self.cycle.response_complete:
                self._arm()  # the next request's headers: same bound

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class ReadTimeoutMiddleware:
    """Answer 408 when a piece of a request's body takes longer than ``timeout`` seconds."""

    def __init__(self, app, *, timeout: float):
        self.app, self.timeout = app, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body_done = False

        async def timed_receive():
            nonlocal body_done
            if body_done:  # later calls wait for a disconnect (a live tail): no bound
                return await receive()
            message = None
            # a message that is already here (a small body arrives with its headers) is taken
            # without a timer: only a receive that has to wait is bounded (a timer set and
            # cancelled per request was ~7% of the API's CPU for one-line POSTs)
            pending = receive()
            if type(pending) is CoroutineType:  # (any other awaitable is bounded as it is)
                try:
                    pending = _Rest(pending, pending.send(None))
                except StopIteration as done:
                    message = done.value
            if message is None:
                try:  # (asyncio.timeout: no task per message, unlike wait_for)
                    async with asyncio.timeout(self.timeout):
                        message = await pending
                except TimeoutError:
                    log.info("%s %s: the request body stalled for %gs (SMARTLOGS_READ_TIMEOUT); "
                             "answering 408", scope["method"], scope["path"], self.timeout)
                    raise IngestError(408, "request_timeout",
                                      f"the request body did not arrive: nothing for "
                                      f"{self.timeout:g}s (SMARTLOGS_READ_TIMEOUT)",
                                      limit=self.timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        return await self.app(scope, timed_receive, send)


class _Rest:
    """The rest of a coroutine that has run to its first suspension (it yielded
    ``waiting_on``), as an awaitable: what ``await coroutine`` would have done from there,
    values and exceptions (a cancellation, the timeout's) passed through both ways."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro, waiting_on):
        self.coro, self.waiting_on = coro, waiting_on

    def __await__(self):
        coro, out = self.coro, self.waiting_on
        while True:
            try:
                sent = yield out
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task: pass it on
                try:
                    out = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    out = coro.send(sent)
                except StopIteration as done:
                    return done.value
