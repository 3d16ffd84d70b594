"""An answer's status line, headers and body leave the API in one write (one system call, one
TCP segment), and nothing is held back beyond the event loop's turn (streamed answers, close)."""

from __future__ import annotations

import asyncio

from ingest_api.onewrite import OneWriteTransport
from ingest_api.timeouts import http_protocol


class Recorder(asyncio.Transport):
    """A transport that records each system-call-sized write (``writelines`` is one)."""

    def __init__(self):
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def writelines(self, chunks):
        self.writes.append(b"".join(chunks))

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _serve(app, request: bytes) -> list[bytes]:
    """The writes the API's HTTP protocol makes for one request to ``app``."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def go():
        config = Config(app, log_config=None, access_log=False, lifespan="off")
        config.load()
        proto = http_protocol(5.0)(config, ServerState(), {})
        rec = Recorder()
        proto.connection_made(rec)
        proto.data_received(request)
        for _ in range(50):  # let the request's task run to its end
            await asyncio.sleep(0)
        proto.connection_lost(None)
        return rec.writes

    return asyncio.run(go())


async def _json_app(scope, receive, send):
    await receive()
    body = b'{"accepted":1,"ids":["a-0"]}'
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_an_answer_is_one_write():
    request = (b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 5\r\n\r\nhello")
    writes = _serve(_json_app, request)
    assert len(writes) == 1, writes
    assert writes[0].startswith(b"HTTP/1.1 202 ") and writes[0].endswith(b'{"accepted":1,"ids":["a-0"]}')


def test_two_pipelined_requests_get_two_whole_answers():
    one = b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
    writes = _serve(_json_app, one + one)
    assert len(writes) == 2 and all(w.startswith(b"HTTP/1.1 202 ") for w in writes)


def test_a_streamed_answer_is_not_held_back():
    """A write that no other follows in the same loop turn goes out at the end of that turn."""
    sent = asyncio.Event()

    async def stream_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        sent.set()
        await asyncio.sleep(3600)  # a live tail: the next event may be long in coming

    async def go():
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        config = Config(stream_app, log_config=None, access_log=False, lifespan="off")
        config.load()
        proto = http_protocol(5.0)(config, ServerState(), {})
        rec = Recorder()
        proto.connection_made(rec)
        proto.data_received(b"GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await sent.wait()
        for _ in range(3):
            await asyncio.sleep(0)
        got = b"".join(rec.writes)
        proto.connection_lost(None)
        return got

    got = asyncio.run(go())
    assert got.startswith(b"HTTP/1.1 200 ") and b"data: 1\n\n" in got


def test_close_and_write_eof_send_what_is_held_first():
    async def go():
        loop = asyncio.get_running_loop()
        rec = Recorder()
        t = OneWriteTransport(rec, loop)
        t.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        assert rec.writes == []  # held until the next write or the loop's turn
        t.close()
        assert rec.writes == [b"HTTP/1.1 400 Bad Request\r\n\r\n"] and rec.closed
        await asyncio.sleep(0)
        assert len(rec.writes) == 1  # the turn's flush finds nothing more to send

        rec2 = Recorder()
        t2 = OneWriteTransport(rec2, loop)
        t2.write(b"a")
        rec2.write_eof = lambda: rec2.writes.append(b"<eof>")
        t2.write_eof()
        assert rec2.writes == [b"a", b"<eof>"]
        t2.write(b"b")
        rec2.abort = lambda: rec2.writes.append(b"<abort>")
        t2.abort()  # an abort drops what is held, as the transport drops its buffer
        await asyncio.sleep(0)
        assert rec2.writes == [b"a", b"<eof>", b"<abort>"]

    asyncio.run(go())
