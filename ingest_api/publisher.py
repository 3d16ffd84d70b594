"""Publish accepted HTTP batches to RabbitMQ: one persistent, confirmed AMQP message per batch.

::

    pub = AmqpPublisher(settings.amqp_url, settings.amqp_queue, timeout=settings.publish_timeout,
                        dlq=settings.amqp_dlq)
    await pub.start()                       # bounded; raises QueueUnavailable if the broker is down
    await pub.publish(items, batch_id=token)  # returns once the broker CONFIRMED the message
    await pub.close()

One long-lived robust connection and ONE channel in publisher-confirm mode, shared by every
request (aiormq serialises the frames of concurrent publishes under a channel lock and matches
each confirm to its delivery tag). The message body is ``orjson.dumps(items)`` (a JSON array of
item dicts, each with its ``id``); properties: ``content_type=application/json``,
``delivery_mode=PERSISTENT``, ``message_id=batch_id``, header ``x-smartlogs-count``.

Every failure is a :class:`QueueUnavailable` carrying a short ``reason`` and a ``retry_after`` in
seconds, so the API answers ``503`` with ``Retry-After``: not connected (yet, or reconnecting),
broker nack, message returned as unroutable (the queue is gone), no confirm within ``timeout``,
or a connection/channel error. A timed-out publish may still have reached the queue; the client's
retry then makes a duplicate, which the items' ids absorb downstream.

If :meth:`start` cannot reach the broker within ``timeout`` it raises, but keeps trying in the
background with capped exponential backoff; :attr:`connected` turns true once it succeeds (the
API can therefore start while RabbitMQ is down and answer 503 until it is back). After the first
successful connection, ``connect_robust`` reconnects and restores the channel and the queue
declarations by itself, with the same capped exponential backoff
(:class:`BackoffRobustConnection`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.abc import ConnectionParameter
from aio_pika.robust_connection import RobustConnection
from aiormq.connection import parse_timeout

from smartlogs.security import describe_error, redact_url

__all__ = ["AmqpPublisher", "QueueUnavailable", "BackoffRobustConnection", "connect_with_backoff"]

log = logging.getLogger(__name__)

RECONNECT_BASE = 0.5   # seconds: first reconnect delay
RECONNECT_CAP = 10.0   # seconds: longest reconnect delay


class QueueUnavailable(Exception):
    """The batch could not be handed to RabbitMQ (the API answers 503 + Retry-After)."""

    def __init__(self, reason: str, *, retry_after: int = 2):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class BackoffRobustConnection(RobustConnection):
    """``RobustConnection`` whose reconnect delay grows exponentially, capped.

    aio-pika sleeps ``reconnect_interval`` between attempts; here that value is the time since
    the connection was lost, clamped to [``reconnect_interval``, ``reconnect_max_interval``]:
    attempts then come at about base, 2·base, 4·base, ... after the loss, then every ``cap``
    seconds. Reset once a connection is re-established. URL/keyword parameters:
    ``reconnect_interval`` (base, default 0.5 s) and ``reconnect_max_interval`` (cap, 10 s).
    """

    PARAMETERS = RobustConnection.PARAMETERS + (
        ConnectionParameter(name="reconnect_max_interval", parser=parse_timeout,
                            default=str(RECONNECT_CAP)),
    )

    def __init__(self, url: Any, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        self._lost_at: float | None = None
        self._backoff_base = RECONNECT_BASE
        super().__init__(url, loop=loop, **kwargs)
        self._backoff_cap = max(float(self.kwargs.pop("reconnect_max_interval") or RECONNECT_CAP),
                                self._backoff_base)

    @property  # type: ignore[override]
    def reconnect_interval(self) -> float:
        if self._lost_at is None:
            return self._backoff_base
        elapsed = time.monotonic() - self._lost_at
        return min(self._backoff_cap, max(self._backoff_base, elapsed))

    @reconnect_interval.setter
    def reconnect_interval(self, value: Any) -> None:
        self._backoff_base = float(value) if value is not None else RECONNECT_BASE

    async def _on_connection_close(self, closing: asyncio.Future) -> None:
        if self._lost_at is None and not self._close_called and self.connection_attempt:
            self._lost_at = time.monotonic()
            log.warning("RabbitMQ connection %s lost; reconnecting with backoff", self)
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self._lost_at is not None:
            log.warning("RabbitMQ connection %s re-established after %.1f s", self,
                        time.monotonic() - self._lost_at)
        self._lost_at = None


async def connect_with_backoff(url: str, *, timeout: float, base: float = RECONNECT_BASE,
                               cap: float = RECONNECT_CAP,
                               ssl_context: ssl.SSLContext | None = None) -> AbstractRobustConnection:
    """One bounded ``connect_robust`` attempt (raises on failure) with backoff reconnects after.

    ``ssl_context`` (``amqps://`` URLs; see :func:`smartlogs.security.amqp_ssl_context`) is
    used for the first connection and every reconnection."""
    tls = {"ssl_context": ssl_context} if ssl_context is not None else {}
    return await asyncio.wait_for(
        aio_pika.connect_robust(url, timeout=timeout, connection_class=BackoffRobustConnection,
                                reconnect_interval=base, reconnect_max_interval=cap, **tls),
        timeout=timeout + 1.0,
    )


def queue_arguments(max_bytes: int) -> dict | None:
    """Arguments of the ingest queue: at most ``max_bytes`` of ready messages, after which the
    broker nacks new publishes (``reject-publish``) so the API answers 503 instead of the queue
    growing without bound while a downstream hop (bridge, Kafka) is down. 0: unbounded."""
    return {"x-max-length-bytes": int(max_bytes), "x-overflow": "reject-publish"} if max_bytes > 0 else None


async def declare_ingest_queue(connection: AbstractRobustConnection, channel: AbstractRobustChannel,
                               name: str, *, max_bytes: int, timeout: float | None = None,
                               **channel_kwargs: Any):
    """Declare the durable ingest queue with its length bound; returns ``(channel, queue)``.

    A queue that already exists with other arguments (made by an older version, or with another
    bound) cannot be re-declared: the broker closes the channel with PRECONDITION_FAILED. Then
    the existing queue is used as it is, on a fresh channel, with a warning that says how to
    apply the bound, rather than refusing to start."""
    try:
        queue = await channel.declare_queue(name, durable=True, arguments=queue_arguments(max_bytes),
                                            timeout=timeout)
        return channel, queue
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning("queue %r exists with other arguments than %s (%s); using it as it is. "
                    "To apply SMARTLOGS_AMQP_MAX_QUEUE_BYTES, delete the queue once it is drained.",
                    name, queue_arguments(max_bytes), describe_error(exc))
    channel = await asyncio.wait_for(connection.channel(**channel_kwargs), timeout=timeout)
    queue = await channel.declare_queue(name, passive=True, timeout=timeout)
    return channel, queue


class AmqpPublisher:
    """Confirmed publishes of HTTP batches to a durable queue over one shared channel."""

    def __init__(self, url: str, queue: str, *, timeout: float = 5.0, dlq: str | None = None,
                 reconnect_base: float = RECONNECT_BASE, reconnect_cap: float = RECONNECT_CAP,
                 ssl_context: ssl.SSLContext | None = None, max_queue_bytes: int = 0):
        self.url = url
        self.max_queue_bytes = max_queue_bytes
        self.ssl_context = ssl_context
        self.queue = queue
        self.dlq = dlq
        self.timeout = float(timeout)
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._retry_task: asyncio.Task | None = None
        self._closed = False
        self._last_error: str | None = None
        self.published = 0   # confirmed messages
        self.failed = 0      # publishes that raised QueueUnavailable

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, open the confirm channel, declare the queue(s). Bounded by ``timeout``.

        Raises :class:`QueueUnavailable` if that fails; a background task then keeps trying
        (capped exponential backoff) until it succeeds or :meth:`close` is called.
        """
        if self._closed:
            raise RuntimeError("publisher closed")
        if self.connected:
            return
        try:
            await self._connect_once()
        except Exception as exc:
            reason = describe_error(exc)
            self._last_error = reason
            log.warning("RabbitMQ %s unavailable (%s); retrying in the background",
                        _safe_url(self.url), reason)
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.create_task(self._retry_connect(),
                                                       name="amqp-publisher-connect")
            raise QueueUnavailable(f"RabbitMQ unavailable: {reason}") from None

    async def _connect_once(self) -> None:
        connection = await connect_with_backoff(self.url, timeout=self.timeout,
                                                base=self.reconnect_base, cap=self.reconnect_cap,
                                                ssl_context=self.ssl_context)
        try:
            channel = await asyncio.wait_for(
                connection.channel(publisher_confirms=True, on_return_raises=True),
                timeout=self.timeout)
            channel, _ = await declare_ingest_queue(
                connection, channel, self.queue, max_bytes=self.max_queue_bytes,
                timeout=self.timeout, publisher_confirms=True, on_return_raises=True)
            if self.dlq:
                await channel.declare_queue(self.dlq, durable=True, timeout=self.timeout)
        except BaseException:
            await _quiet_close(connection)
            raise
        if self._closed:  # close() ran while we were connecting
            await _quiet_close(connection)
            return
        self._connection, self._channel = connection, channel
        self._last_error = None
        log.info("publisher connected to %s, queue %r", _safe_url(self.url), self.queue)

    async def _retry_connect(self) -> None:
        delay = self.reconnect_base
        while not self._closed and self._connection is None:
            await asyncio.sleep(delay)
            try:
                await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._last_error = describe_error(exc)
                delay = min(self.reconnect_cap, delay * 2)
                log.warning("RabbitMQ still unavailable (%s); next attempt in %.1f s",
                            self._last_error, delay)

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed (redacted), None once connected."""
        return self._last_error

    @property
    def connected(self) -> bool:
        """True when a publish can be attempted right now (connection and channel open)."""
        conn, ch = self._connection, self._channel
        return (conn is not None and ch is not None and not conn.is_closed
                and conn.connected.is_set() and not ch.is_closed)

    async def queue_state(self) -> dict:
        """``{"messages": ready, "consumers": n}`` of the ingest queue (a passive declare on a
        short-lived channel, so that a failure never closes the publishing channel). Raises
        :class:`QueueUnavailable` when not connected or the broker does not answer."""
        conn = self._connection
        if conn is None or not self.connected:
            raise QueueUnavailable("RabbitMQ not connected")
        try:
            channel = await asyncio.wait_for(conn.channel(), timeout=self.timeout)
            try:
                queue = await channel.declare_queue(self.queue, passive=True, timeout=self.timeout)
                result = queue.declaration_result
                return {"messages": result.message_count, "consumers": result.consumer_count}
            finally:
                await asyncio.wait_for(channel.close(), timeout=self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is "no answer now"
            raise QueueUnavailable(f"queue state unknown: {describe_error(exc)}") from None

    async def close(self) -> None:
        self._closed = True
        if self._retry_task is not None:
            self._retry_task.cancel()
            await asyncio.gather(self._retry_task, return_exceptions=True)
            self._retry_task = None
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            await _quiet_close(conn)

    async def __aenter__(self) -> "AmqpPublisher":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, items: list[dict], *, batch_id: str) -> None:
        """Publish one batch as one message; return only after the broker confirmed it."""
        if not self.connected:
            self.failed += 1
            why = ("reconnecting" if self._connection is not None
                   else self._last_error or "not started")
            raise QueueUnavailable(f"RabbitMQ not connected ({why})")
        message = aio_pika.Message(
            orjson.dumps(items),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=batch_id,
            headers={"x-smartlogs-count": len(items)},
        )
        try:
            await asyncio.wait_for(
                self._channel.default_exchange.publish(message, routing_key=self.queue,
                                                       mandatory=True),
                timeout=self.timeout)
        except asyncio.TimeoutError:
            self.failed += 1
            raise QueueUnavailable(f"no publisher confirm within {self.timeout:g} s") from None
        except aio_pika.exceptions.PublishError:  # Basic.Return: nothing routes to the queue
            self.failed += 1
            raise QueueUnavailable(
                f"message returned: queue {self.queue!r} does not exist") from None
        except aio_pika.exceptions.DeliveryError as exc:  # Basic.Nack/Reject
            self.failed += 1
            raise QueueUnavailable(f"broker refused the message: {describe_error(exc)}") from None
        except Exception as exc:  # channel/connection closed mid-publish, socket errors, ...
            self.failed += 1
            raise QueueUnavailable(f"RabbitMQ error: {describe_error(exc)}") from None
        self.published += 1


def _safe_url(url: str) -> str:
    return redact_url(url)


async def _quiet_close(connection: AbstractRobustConnection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=5.0)
    except Exception:  # closing a broken connection may fail; nothing to do about it
        pass
