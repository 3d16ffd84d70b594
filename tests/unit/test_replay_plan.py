import pytest

from smartlogs.cli.replay import plan_batches


def lines(n):
    return iter([(i + 1, f"line {i}") for i in range(n)])


def test_full_speed_batches_in_order():
    plan = list(plan_batches(lines(25), batch_size=10))
    assert [len(b) for _, b in plan] == [10, 10, 5]
    assert all(due == 0.0 for due, _ in plan)
    assert [n for _, b in plan for n, _ in b] == list(range(1, 26))


def test_rate_paces_lines():
    plan = list(plan_batches(lines(100), batch_size=1000, rate=50))
    assert [len(b) for _, b in plan] == [5] * 20
    assert plan[-1][0] == 95 / 50


def test_speedup_follows_log_timestamps():
    log = [(1, "Jun 14 15:16:01 combo sshd[1]: a"), (2, "Jun 14 15:16:01 combo sshd[1]: b"),
           (3, "Jun 14 15:16:11 combo sshd[1]: c"), (4, "no timestamp here"),
           (5, "Jun 14 15:17:01 combo sshd[1]: d")]
    plan = list(plan_batches(iter(log), speedup=10, year=2024))
    assert [(due, [n for n, _ in b]) for due, b in plan] == [(0.0, [1, 2]), (1.0, [3, 4]), (6.0, [5])]


def test_send_stops_when_the_server_stays_down():
    import httpx

    from smartlogs.cli.replay import send_batches

    def refuse(request):
        raise httpx.ConnectError("connection refused")

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    res = send_batches("http://x", plan_batches(lines(30), batch_size=10), run_id="r",
                       client=client, sleep=lambda s: None, max_retries=2)
    assert res.aborted and res.retries == 2
    # nothing reached the server: not "rejected" (that is the server refusing input), but
    # 10 tried and undelivered, 20 never sent after the stop; every planned line counted once
    assert (res.sent, res.accepted, res.rejected) == (0, 0, 0)
    assert (res.undelivered, res.unsent, res.not_delivered, res.planned) == (10, 20, 30, 30)


def test_a_batch_given_up_on_while_busy_is_undelivered_and_the_rest_still_sent():
    """429 after the retries: that batch is undelivered (not refused), the replay goes on."""
    import httpx

    from smartlogs.cli.replay import send_batches

    calls = []

    def busy_first(request):
        calls.append(request)
        if len(calls) <= 3:
            return httpx.Response(429, json={"error": "too_many_requests"})
        return httpx.Response(202, json={"accepted": 10})

    client = httpx.Client(transport=httpx.MockTransport(busy_first))
    seen = []
    res = send_batches("http://x", plan_batches(lines(30), batch_size=10), run_id="r",
                       client=client, sleep=lambda s: None, max_retries=2,
                       on_batch=lambda n, outcome: seen.append((n, outcome)))
    assert not res.aborted and seen == [(10, "undelivered"), (10, "accepted"), (10, "accepted")]
    assert (res.sent, res.accepted, res.rejected, res.undelivered, res.unsent) == (20, 20, 0, 10, 0)


def test_count_events_counts_what_is_sent(tmp_path):
    """The progress bar's total: the lines read_lines yields (blank skipped, a stack trace one)."""
    from smartlogs.cli.replay import count_events, read_lines

    f = tmp_path / "a.log"
    f.write_text("first\n\nsecond failed\nTraceback (most recent call last):\n  File x\nthird\n")
    n = sum(1 for _ in read_lines(f))
    assert count_events(f) == n == 3
    assert count_events(f, multiline=False) == 5 and count_events(f, 2) == 6


@pytest.mark.parametrize("status", [401, 403])
def test_send_stops_at_the_first_refused_key(status):
    import httpx

    from smartlogs.cli.replay import send_batches

    calls = []

    def deny(request):
        calls.append(request)
        return httpx.Response(status, json={"error": "unauthorized", "detail": "missing API key"})

    client = httpx.Client(transport=httpx.MockTransport(deny))
    res = send_batches("http://x", plan_batches(lines(30), batch_size=10), run_id="r",
                       client=client, sleep=lambda s: None)
    assert res.aborted and res.abort_reason == "auth" and len(calls) == 1
    assert res.sent == 10 and res.rejected == 10 and "missing API key" in res.errors[0]
    assert (res.undelivered, res.unsent) == (0, 20)


def test_send_retries_503_then_succeeds_with_same_ids():
    import httpx

    from smartlogs.cli.replay import send_batches

    bodies = []

    def flaky(request):
        bodies.append(request.content)
        if len(bodies) == 1:
            return httpx.Response(503, headers={"Retry-After": "1"}, json={"error": "backlog_full"})
        return httpx.Response(202, json={"accepted": 3})

    client = httpx.Client(transport=httpx.MockTransport(flaky))
    res = send_batches("http://x", plan_batches(lines(3), batch_size=10), run_id="r",
                       client=client, sleep=lambda s: None)
    assert (res.accepted, res.rejected, res.retries) == (3, 0, 1)
    assert bodies[0] == bodies[1] and b'"id":"r:1"' in bodies[0]


def test_retry_for_rides_out_an_outage_longer_than_the_retry_count_allows():
    """An API down for ~5 minutes: eight retries (~33 s) give up; ``retry_for=600`` keeps
    retrying with backoff (capped at 10 s a wait) until the API answers, and stores once."""
    import httpx

    from smartlogs.cli.replay import send_batches

    now = [0.0]
    calls = []

    def down_for_300s(request):
        calls.append(now[0])
        if now[0] < 300:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(202, json={"accepted": 10})

    def sleep(s):
        now[0] += s

    def run(**kw):
        now[0] = 0.0
        calls.clear()
        client = httpx.Client(transport=httpx.MockTransport(down_for_300s))
        return send_batches("http://x", plan_batches(lines(10), batch_size=10), run_id="r",
                            client=client, sleep=sleep, clock=lambda: now[0], **kw)

    res = run()
    assert res.aborted and res.undelivered == 10 and res.rejected == 0 and now[0] < 60
    res = run(retry_for=600)
    assert not res.aborted and (res.accepted, res.rejected) == (10, 0), res.errors
    assert 300 <= now[0] < 320 and res.retries == len(calls) - 1

    res = run(retry_for=120)  # shorter than the outage: gives up at 120 s, says so
    assert res.aborted and res.undelivered == 10 and res.rejected == 0 and now[0] == 120
    assert "over 120s" in res.errors[0]


def test_cli_retry_for_keeps_trying_then_gives_the_rerun_hint(tmp_path):
    """`replay --retry-for 1s` against an API that is down: no fail-fast probe, retries for the
    duration, then the rerun hint (with the same --retry-for); a bad duration is a usage error."""
    import socket

    from typer.testing import CliRunner

    from smartlogs.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "a.log"
    log.write_text("one line\nanother line\n")
    env = {"COLUMNS": "200", "NO_COLOR": "1", "SMARTLOGS_API_KEY": ""}
    r = CliRunner().invoke(app, ["replay", str(log), "--url", f"http://127.0.0.1:{port}",
                                 "--run-id", "rf1", "--retry-for", "1s"], env=env)
    assert r.exit_code == 1, r.output
    assert "over 1s" in r.output and "stopped early" in r.output, r.output
    assert "--run-id rf1 --retry-for 1s" in r.output.replace("\n", " "), r.output
    # nothing was refused by the server: the lines are "not delivered", and the bar counts the
    # file's lines (2), none of them answered
    assert "rejected 0  not delivered 2 (server unreachable)  of 2 lines" in r.output, r.output
    assert "0/2" in r.output and "2/2" not in r.output, r.output
    r = CliRunner().invoke(app, ["replay", str(log), "--retry-for", "soon"], env=env)
    assert r.exit_code == 2 and "give a duration" in r.output, r.output
