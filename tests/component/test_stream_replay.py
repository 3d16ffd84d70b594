"""Issue 22 item 11: the live tail replays a bounded number of stored events before going live
(``after=0`` on a large store used to send all of it)."""

from __future__ import annotations

import orjson

from tests.conftest import wait_stored


def _read(client, params: dict, headers: dict | None = None) -> tuple[dict, list[dict]]:
    """(the ready message, every event the stream sent) for a stream that ends after 2 s."""
    ready, events, data, name = None, [], None, None
    with client.stream("GET", "/api/stream", params={"max_seconds": 2, "interval": 0.2, **params},
                       headers=headers or {}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
                if name == "ready":
                    ready = data
                elif name == "events":
                    events += data["events"]
    return ready, events


def test_a_stream_from_the_start_replays_only_the_newest_events(app_client):
    n = 2500
    body = "".join(f"replay line {i}\n" for i in range(n)).encode()
    assert app_client.post("/ingest", content=body,
                           headers={"Content-Type": "text/plain"}).status_code == 202
    assert wait_stored(app_client, n, timeout=60)["total"] == n

    ready, events = _read(app_client, {"after": 0})
    assert len(events) == 1000, len(events)  # the default bound, not the whole store
    assert ready["skipped"] == n - 1000 and ready["replay"] == 1000
    assert [e["raw"] for e in events] == [f"replay line {i}" for i in range(n - 1000, n)]

    # a resume from far behind (Last-Event-ID) is bounded the same way; `replay` sets the bound
    ready, events = _read(app_client, {"replay": 10}, {"Last-Event-ID": "1"})
    assert len(events) == 10 and ready["skipped"] == n - 1 - 10
    _, events = _read(app_client, {"after": 0, "replay": 0})
    assert events == []
    assert app_client.get("/api/stream", params={"replay": 10_001}).status_code == 422

    # within the bound nothing is skipped: a resume a few events behind gets every one
    cursor = app_client.get("/api/events", params={"limit": 1}).json()["last_seq"]
    app_client.post("/ingest", content=b"after one\nafter two\n", headers={"Content-Type": "text/plain"})
    wait_stored(app_client, n + 2)
    ready, events = _read(app_client, {"after": cursor})
    assert "skipped" not in ready and [e["raw"] for e in events] == ["after one", "after two"]
