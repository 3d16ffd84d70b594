"""Group commit of the embedded spool: concurrent requests share one transaction (one fsync)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ingest_api.decode import IngestError
from ingest_api.transports import GroupCommit


def test_requests_arriving_during_a_commit_share_the_next_one():
    groups: list[list[int]] = []
    first_started, release = threading.Event(), threading.Event()

    def commit(payloads):
        groups.append(list(payloads))
        if len(groups) == 1:
            first_started.set()
            release.wait(5)  # the first commit is slow: everyone else queues behind it
        return [None] * len(payloads)

    async def main():
        gc = GroupCommit(commit)
        first = asyncio.create_task(gc.submit(0))
        await asyncio.to_thread(first_started.wait, 5)
        rest = [asyncio.create_task(gc.submit(i)) for i in range(1, 32)]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in [first, *rest])  # nobody hears 'taken' before its commit
        release.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert groups == [[0], list(range(1, 32))]


def test_each_request_gets_its_own_outcome_and_a_failed_commit_reaches_everyone():
    def commit(payloads):
        if "boom" in payloads:
            raise OSError("disk full")
        return [IngestError(503, "backlog_full", "behind") if p == "big" else None for p in payloads]

    async def main():
        gc = GroupCommit(commit)
        results = await asyncio.gather(gc.submit("a"), gc.submit("big"), gc.submit("b"),
                                       return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], IngestError) and results[1].status == 503
        with pytest.raises(OSError, match="disk full"):
            await gc.submit("boom")
        assert await gc.submit("after") is None  # the committer goes on after a failure

    asyncio.run(main())


def test_an_async_commit_is_awaited_and_groups_are_bounded_by_size():
    groups: list[list] = []
    gate = asyncio.Event()

    async def commit(payloads):
        groups.append(payloads)
        if len(groups) == 1:
            await gate.wait()
        return [None] * len(payloads)

    async def main():
        gc = GroupCommit(commit, max_items=5, size=lambda p: len(p[0]))
        first = asyncio.create_task(gc.submit((["a"], "b0")))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(gc.submit((["x"] * n, f"b{n}"))) for n in (2, 2, 2, 9)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert [[b for _, b in g] for g in groups] == [["b0"], ["b2", "b2"], ["b2"], ["b9"]]


def test_the_spool_wakes_the_runner_once_per_commit_after_it_not_once_per_request():
    """32 requests in two commits: two wake-ups (each a pipe write per shard process), each
    after its commit, so a shard that wakes finds the batches in the spool."""
    from types import SimpleNamespace

    from ingest_api.transports import SpoolTransport

    spool: list[list[dict]] = []
    wakes: list[int] = []  # how many batches the spool held at each wake-up
    first_started, release = threading.Event(), threading.Event()

    def append_many(batches):
        if not spool:
            first_started.set()
            release.wait(5)  # a slow first commit: the other 31 requests queue behind it
        spool.extend(batches)

    t = SpoolTransport.__new__(SpoolTransport)
    t.settings = SimpleNamespace(max_backlog_events=1000)
    t.store = SimpleNamespace(spool_backlog=lambda: len(spool), spool_append_many=append_many)
    t.runner = SimpleNamespace(wake=lambda: wakes.append(len(spool)))
    t._spool = GroupCommit(t._commit)

    async def main():
        first = asyncio.create_task(t.accept([{"raw": "line 0"}], "b0"))
        await asyncio.to_thread(first_started.wait, 5)
        rest = [asyncio.create_task(t.accept([{"raw": f"line {i}"}], f"b{i}")) for i in range(1, 32)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert len(spool) == 32
    assert wakes == [1, 32]


def test_with_in_flight_commits_a_request_need_not_wait_for_the_commit_before_it():
    """A broker's confirm is mostly waiting: with ``in_flight=2`` a request that arrives while
    one group waits for its confirm is sent at once, in a group of its own; a third waits
    for a free slot. With one in flight (the spool), the second waits."""
    started: list[list[str]] = []
    gates: list[asyncio.Event] = []

    async def commit(payloads):
        gate = asyncio.Event()
        started.append(payloads)
        gates.append(gate)
        await gate.wait()
        return [None] * len(payloads)

    async def main(in_flight: int) -> list[list[str]]:
        started.clear()
        gates.clear()
        gc = GroupCommit(commit, in_flight=in_flight)
        tasks = [asyncio.create_task(gc.submit("a"))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(gc.submit("b")))
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(gc.submit("c")))
        await asyncio.sleep(0.01)
        seen = [list(g) for g in started]
        while not all(t.done() for t in tasks):
            for g in gates:
                g.set()
            await asyncio.sleep(0.01)
        assert [list(g) for g in started][-1][-1] == "c"  # everyone was committed in the end
        assert not gc._flushers  # and no flusher is left running
        return seen

    assert asyncio.run(main(2)) == [["a"], ["b"]]
    assert asyncio.run(main(1)) == [["a"]]


def _closed_loop(gather: float, clients: int = 8, rounds: int = 6) -> list[int]:
    """``clients`` that each submit, wait for the answer and submit again 2 ms later (its
    round trip; wrk, loggers), the first starting alone, against a commit that takes 30 ms
    (an fsync on a busy disk): the size of each commit."""
    import time

    sizes: list[int] = []

    def commit(payloads):
        sizes.append(len(payloads))
        time.sleep(0.03)
        return [None] * len(payloads)

    async def main():
        gc = GroupCommit(commit, gather=gather, max_gather=1.0)

        async def client(c):
            await asyncio.sleep(0.004 * c)  # the first client is alone at first
            for r in range(rounds):
                await gc.submit((c, r))
                await asyncio.sleep(0.002)

        await asyncio.gather(*(client(c) for c in range(clients)))

    asyncio.run(main())
    assert sum(sizes) == clients * rounds  # everyone committed once per round, nobody twice
    return sizes


def test_without_gather_closed_loop_clients_split_into_halves_that_take_turns():
    sizes = _closed_loop(gather=0)
    assert max(sizes) < 8, sizes  # each commit holds only part of the clients
    assert len(sizes) >= 12  # 48 requests: every client gets one answer per two commits


def test_with_gather_each_commit_waits_for_the_clients_it_answered_and_takes_them_all():
    sizes = _closed_loop(gather=0.5)
    # the first commit holds the first client alone (nobody is held before a first commit);
    # the next waits for it to come back and takes everyone
    assert sizes[0] == 1 and all(s == 8 for s in sizes[1:-1]), sizes
    assert len(sizes) <= 7  # 48 requests in 7 commits, not 12 or more


def test_gather_never_holds_a_lone_client_nor_waits_past_its_bound():
    import time

    async def main():
        gc = GroupCommit(lambda p: [None] * len(p), gather=0.5, max_gather=1.0)
        t0 = time.perf_counter()
        for i in range(20):  # one client at a time: each request is committed at once, alone
            await gc.submit(i)
        lone = time.perf_counter() - t0
        while gc._flushers:  # after the last answer the committer waits at most its bound
            await asyncio.sleep(0.01)
        return lone

    assert asyncio.run(main()) < 5  # generous: no request waited for a gather bound


def _spool_transport(backlog: list[int], limit: int, measured: list[int]):
    """A SpoolTransport over a stub store whose backlog is ``backlog[0]`` plus what it was
    given (the shards store by lowering ``backlog[0]``)."""
    from types import SimpleNamespace

    from ingest_api.transports import SpoolTransport

    spool: list[list[dict]] = []

    def spool_backlog():
        measured.append(1)
        return backlog[0] + sum(map(len, spool))

    t = SpoolTransport.__new__(SpoolTransport)
    t.settings = SimpleNamespace(max_backlog_events=limit)
    t.store = SimpleNamespace(spool_backlog=spool_backlog, spool_append_many=spool.extend)
    t.runner = SimpleNamespace(wake=lambda: None)
    t._spool = GroupCommit(t._commit)
    return t, spool


def test_the_spool_measures_its_backlog_once_for_many_commits_not_at_every_commit():
    """The backlog check before each commit ran two queries (one on the events file the
    shards write): now at most every 0.1 s, in between the last figure plus what was
    appended since (before: one measurement per commit, 20 here)."""
    measured: list[int] = []
    t, spool = _spool_transport([0], 1000, measured)

    async def main():
        for i in range(20):  # one at a time: 20 commits
            await t.accept([{"raw": f"line {i}"}], f"b{i}")

    asyncio.run(main())
    assert len(spool) == 20
    assert len(measured) <= 2, len(measured)


def test_the_backlog_bound_still_holds_and_refuses_only_after_a_fresh_measure():
    """Between measurements the figure only grows (storing is not seen), so it is an upper
    bound: nothing over the limit is taken. A commit it would refuse measures first: lines
    stored meanwhile make room; a backlog that is really full still answers 503."""
    measured: list[int] = []
    backlog = [0]
    t, spool = _spool_transport(backlog, 10, measured)

    async def main():
        await t.accept([{"raw": "x"}] * 8, "b0")  # 8 of 10
        backlog[0] = -8  # the shards stored those 8 meanwhile (the estimate still says 8)
        await t.accept([{"raw": "y"}] * 8, "b1")  # fits once measured: taken
        with pytest.raises(IngestError) as refused:  # 8 waiting: 8 more do not fit
            await t.accept([{"raw": "z"}] * 8, "b2")
        assert refused.value.status == 503
        await t.accept([{"raw": "w"}] * 2, "b3")  # 10 of 10: taken

    asyncio.run(main())
    assert len(spool) == 3
