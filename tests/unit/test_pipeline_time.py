"""Where an event lands in time: its own timestamp, unless it is unusable or far in the future."""

from streams.pipeline import MAX_FUTURE_SECONDS, Pipeline, PipelineConfig

NOW = 1_790_000_000.0  # 2026-09-21


def _one(**item):
    return Pipeline(PipelineConfig()).process([{"id": "e", "received": NOW, **item}])[0]


def test_a_far_future_timestamp_is_kept_flagged_and_placed_at_arrival():
    e = _one(message="clock from the future", ts=253402300799.0)  # 9999-12-31T23:59:59Z
    assert e["ts"] == NOW and e["fields"]["future_timestamp"].startswith("9999-12-31T23:59:59")
    assert e["message"] == "clock from the future"


def test_a_timestamp_weeks_ahead_is_kept_as_is():
    """The year rule for syslog lines without a year can place a line up to ~35 days ahead."""
    ts = NOW + 35 * 86400
    e = _one(message="december line", ts=ts)
    assert e["ts"] == ts and "future_timestamp" not in e["fields"]
    assert MAX_FUTURE_SECONDS > 35 * 86400


def test_past_timestamps_are_untouched():
    e = _one(message="old line", ts=946684800.0)  # 2000-01-01
    assert e["ts"] == 946684800.0 and not e["fields"]


def test_the_timestamp_text_is_datetimes_own_to_the_millisecond_for_any_time():
    """``_iso`` writes a second once and the milliseconds itself: the same text as
    ``datetime.fromtimestamp(ts, utc).isoformat(timespec="milliseconds")`` (microseconds
    rounded half to even, carried into the next second), and the same errors."""
    import math
    import random

    from streams.pipeline import _MAX_TS, _MIN_TS, _iso, _iso_datetime

    def text(f, ts):
        try:
            return f(ts)
        except Exception as exc:  # noqa: BLE001 - the same error is part of the contract
            return type(exc).__name__

    rnd = random.Random(7)
    edges = (0.0, 0.0005, 0.9995, 0.0000005, 0.9999995, 0.9999994999, 0.5, 0.1234565, 0.999999)
    values = [rnd.uniform(_MIN_TS, _MAX_TS) for _ in range(20_000)]
    values += [math.floor(rnd.uniform(-1e10, 4e9)) + rnd.choice(edges) for _ in range(20_000)]
    values += [0.0, -0.0, -0.0000005, -0.0000004, 0.9999995, -0.9999995, _MIN_TS,
               _MAX_TS - 1e-6, _MAX_TS, 1_700_000_000, -1, float("nan"), float("inf")]
    for ts in values:
        assert text(_iso.__wrapped__, ts) == text(_iso_datetime, ts), ts
