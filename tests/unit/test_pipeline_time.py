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
