"""CPU time of the API's own work for one small POST /ingest, without server, client or disk.

Drives the ASGI app in-process (the whole middleware stack: read timeout, API keys, the
direct route, decoding, metrics) with a transport that takes everything at once, so the
figure is what the app costs per request, which a loaded machine disturbs far less than a
rate measured with wrk (bench_small_requests.py). Also counts the Python function calls of
one request (tests/component/test_ingest_direct.py bounds that count).

    python bench/bench_ingest_path.py --requests 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _TakeAll:
    mode = "embedded"

    async def accept(self, items, batch_id):
        pass


async def _run(requests: int, repeat: int) -> tuple[list[float], int]:
    from ingest_api.app import create_app
    from ingest_api.receivers import LineBudget
    from smartlogs.settings import Settings

    app = create_app(Settings(data_dir=Path(tempfile.mkdtemp(prefix="smartlogs-bench-")),
                              syslog_port=0))
    app.state.transport = _TakeAll()
    app.state.ingest_slots = LineBudget(1_000_000)
    body = b"bench small request line\n"
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"text/plain"),
               (b"content-length", str(len(body)).encode())]

    async def one() -> int:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = []

        async def receive():
            return messages.pop(0)

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                   "method": "POST", "scheme": "http", "path": "/ingest", "raw_path": b"/ingest",
                   "root_path": "", "query_string": b"", "headers": headers,
                   "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8000)}, receive, send)
        return status[0]

    for _ in range(200):  # warm up: the middleware stack, imports, caches
        assert await one() == 202
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    await one()
    sys.setprofile(None)
    per_request = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(requests):
            await one()
        per_request.append((time.process_time() - t0) / requests * 1e6)
    return per_request, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    per_request, calls = asyncio.run(_run(args.requests, args.repeat))
    print(f"POST /ingest, one text line, in-process: {min(per_request):.1f} µs CPU per request "
          f"(best of {args.repeat}: {', '.join(f'{x:.1f}' for x in per_request)}); "
          f"{calls} Python calls per request; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
