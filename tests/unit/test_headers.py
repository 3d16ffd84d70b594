"""Header inference (streams.headers) and its use by the pipeline, on every line of the
loghub samples with the built-in formats switched off, and on generated layouts (Hypothesis).

The samples are read from ``loghub`` (tests/conftest.py: $SMARTLOGS_LOGHUB_DIR or
../shared/data/loghub); missing data fails, it is never skipped.
"""

from __future__ import annotations

import csv
import pickle
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartlogs.cli.evaluation import _candidates, eval_parsing, find_samples
from streams.headers import Layout, SourceHeaders, infer_layout
from streams.parsing import _LEVELS
from streams.pipeline import Pipeline, PipelineConfig

UTC = timezone.utc
INFERENCE_ONLY = PipelineConfig(builtin_formats=False)

# sample -> (CSV columns holding the time, level column or None, component column)
NEW_SAMPLES = {
    "Android": (("Date", "Time"), "Level", "Component"),
    "Hadoop": (("Date", "Time"), "Level", "Component"),
    "HPC": (("Time",), None, "Component"),
    "OpenStack": (("Date", "Time"), "Level", "Component"),
    "Windows": (("Date", "Time"), "Level", "Component"),
}


def _rows(path):
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", sorted(NEW_SAMPLES))
def test_every_line_of_a_new_sample_yields_time_level_and_component(loghub, name):
    """Inference alone (no built-in format): timestamp, level and component agree with the
    structured CSV on >= 99% of the lines, every line checked; the message on all of them."""
    log, structured = find_samples(loghub)[name]
    time_cols, level_col, comp_col = NEW_SAMPLES[name]
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = _rows(structured)
    assert len(lines) == len(rows)
    p = Pipeline(INFERENCE_ONLY)
    ok = {"parsed": 0, "time": 0, "level": 0, "component": 0, "message": 0}
    for i, (line, row) in enumerate(zip(lines, rows)):
        r = p._parse(line, {"id": i, "raw": line, "received": 1.8e9, "stream": name})
        ok["parsed"] += r.ok
        cands = _candidates(r)
        times = {v for k, v in cands.items() if k.startswith("time")}
        ok["time"] += all(row[c].strip() in times for c in time_cols)
        ok["level"] += level_col is None or (r.level or "") == row[level_col].strip()
        ok["component"] += (r.component or "") == row[comp_col].strip()
        ok["message"] += r.message == row["Content"].strip()
    n = len(lines)
    for key, hits in ok.items():
        assert hits / n >= 0.99, (name, key, hits, n)


@pytest.mark.parametrize("name", ["Android", "Apache", "BGL", "HDFS", "HPC", "Hadoop", "Linux",
                                  "OpenSSH", "OpenStack", "Windows", "Zookeeper"])
def test_grouping_accuracy_with_inference_alone(loghub, name):
    """Raw lines, built-in formats off: templates as good as with them (>= 0.95)."""
    log, structured = find_samples(loghub)[name]
    r = eval_parsing(log, structured, config=INFERENCE_ONLY)
    assert r["parsed_share"] >= 0.99
    assert r["grouping_accuracy"] >= 0.95, r["grouping_accuracy"]


def test_a_new_sample_stored_at_its_own_time(loghub):
    log, _ = find_samples(loghub)["Hadoop"]
    line = log.read_text().splitlines()[0]  # 2015-10-18 18:01:47,978 INFO [main] ...
    e = Pipeline(INFERENCE_ONLY).process([{"id": 1, "raw": line, "received": 1.8e9}])[0]
    assert e["timestamp"] == "2015-10-18T18:01:47.978Z"
    assert e["parse_ok"] and e["format"] == "inferred" and e["level"] == "INFO"


def test_a_line_that_fits_no_layout_is_stored_raw():
    p = Pipeline(INFERENCE_ONLY)
    lines = [f"2024-01-02 03:04:{s:02d} INFO Worker: job {s} done" for s in range(10)]
    events = p.process([{"id": i, "raw": x, "received": 1.8e9} for i, x in enumerate(lines)])
    assert all(e["parse_ok"] for e in events)
    odd = p.process([{"id": 99, "raw": "free text without any header", "received": 1.8e9}])[0]
    assert odd["parse_ok"] is False and odd["raw"] == "free text without any header"
    assert odd["message"] == "free text without any header" and odd["ts"] == 1.8e9


def test_layouts_persist_through_a_checkpoint():
    state = SourceHeaders()
    lines = [f"2024-01-02 03:04:{s:02d} WARN [t-{s}] a.b.C: value {s}" for s in range(40)]
    first = [state.parse(x) for x in lines]
    again = pickle.loads(pickle.dumps(state))
    assert [x.text for x in again.layouts] == [x.text for x in state.layouts]
    line = "2024-01-02 03:05:00 ERROR [t-9] a.b.C: value 9"
    assert again.parse(line) == state.parse(line)
    assert first[-1].component == "a.b.C" and first[-1].fields["context"] == "t-39"


def test_a_layout_is_relearned_when_the_source_changes():
    state = SourceHeaders()
    for s in range(40):
        assert state.parse(f"2024-01-02 03:04:{s:02d} INFO Svc: old {s}") is not None
    misses = 0
    for s in range(40):
        r = state.parse(f"{1700000000 + s} node-{s} warn event {s} happened")
        misses += r is None
        if r is not None:
            assert r.timestamp == datetime.fromtimestamp(1700000000 + s, UTC)
            assert r.message == f"event {s} happened"
    assert misses <= 8
    assert state.parse("2024-01-02 03:06:00 INFO Svc: old again").message == "old again"


def test_year_rule_for_a_time_without_year():
    state = SourceHeaders()
    now = datetime(2026, 1, 10, tzinfo=UTC).timestamp()
    r = state.parse("12-31 23:59:59.500  10  11 I Tag: late", now=now)  # December read in January
    assert r.timestamp == datetime(2025, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    r = state.parse("01-09 08:00:00.000  10  11 I Tag: early", now=now)
    assert r.timestamp.year == 2026
    assert state.parse("01-09 08:00:00.000  10  11 I Tag: x", year=2019).timestamp.year == 2019


# -- property tests: generated layouts --------------------------------------------------------
_WORD = st.text("abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8).filter(
    lambda w: w not in _LEVELS and w.lower() not in _LEVELS and w.title() not in _LEVELS)
_MESSAGE = st.lists(_WORD, min_size=1, max_size=8).map(" ".join)
# no 29 February: the yearless families are read in the year given (2030), which has none
_TIMES = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31)).filter(
    lambda t: (t.month, t.day) != (2, 29))


def _render_ts(family: str, t: datetime) -> tuple[str, datetime]:
    """A timestamp of ``family`` and the time it stands for (to its resolution)."""
    ms = t.microsecond // 1000
    if family == "iso":
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}Z", t.replace(microsecond=ms * 1000)
    if family == "log4j":
        return t.strftime("%Y-%m-%d %H:%M:%S,") + f"{ms:03d}", t.replace(microsecond=ms * 1000)
    if family == "syslog":
        return t.strftime("%b ") + f"{t.day:2d}" + t.strftime(" %H:%M:%S"), t.replace(microsecond=0)
    if family == "md":
        return t.strftime("%m-%d %H:%M:%S.") + f"{ms:03d}", t.replace(microsecond=ms * 1000)
    if family == "compact":
        return t.strftime("%Y%m%d-%H:%M:%S:") + f"{ms:03d}", t.replace(microsecond=ms * 1000)
    if family == "epoch":
        s = int(t.replace(tzinfo=UTC).timestamp())
        return str(s), datetime.fromtimestamp(s, UTC).replace(tzinfo=None)
    if family == "epoch_ms":
        v = int(t.replace(tzinfo=UTC).timestamp() * 1000)
        return str(v), datetime.fromtimestamp(v / 1000, UTC).replace(tzinfo=None)
    raise AssertionError(family)


_FAMILIES = ["iso", "log4j", "syslog", "md", "compact", "epoch", "epoch_ms"]
_LEVEL_CHOICES = ["INFO", "WARN", "ERROR", "DEBUG", "info", "Warning", "E", "I"]


@st.composite
def _layouts(draw):
    """A header built from the token classes: [host] ts [pid] [level] [bracket] [comp:]."""
    return {
        "family": draw(st.sampled_from(_FAMILIES)),
        "bracket_ts": draw(st.booleans()),
        "host": draw(st.booleans()),
        "pid": draw(st.booleans()),
        "level": draw(st.booleans()),
        "thread": draw(st.booleans()),
        "comp": draw(st.booleans()),
    }


def _line(spec, rnd: random.Random, t: datetime, message: str) -> tuple[str, datetime]:
    ts, when = _render_ts(spec["family"], t)
    if spec["bracket_ts"]:
        ts = f"[{ts}]"
    parts = []
    if spec["host"]:
        parts.append(f"node{rnd.randint(1, 99)}")
    parts.append(ts)
    if spec["pid"]:
        parts.append(str(rnd.randint(1, 99999)))
    if spec["level"]:
        parts.append(rnd.choice(_LEVEL_CHOICES))
    if spec["thread"]:
        parts.append(f"[worker-{rnd.randint(0, 9)}]")
    if spec["comp"] or not (spec["level"] or spec["thread"] or spec["pid"]):
        parts.append(rnd.choice(["Api", "db.Pool", "x.y.Z$Inner"]) + ":")
    return " ".join(parts) + " " + message, when


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_layouts(), times=st.lists(_TIMES, min_size=12, max_size=12),
       messages=st.lists(_MESSAGE, min_size=12, max_size=12), seed=st.integers(0, 2**16))
def test_a_generated_layout_is_inferred_and_messages_recovered(spec, times, messages, seed):
    rnd = random.Random(seed)
    made = [_line(spec, rnd, t, m) for t, m in zip(times, messages)]
    state = SourceHeaders()
    for (line, when), message in zip(made, messages):
        r = state.parse(line, year=2030)
        assert r is not None, (spec, line, [x.text for x in state.layouts])
        assert r.message == message, (spec, line)
        want = when if spec["family"] not in ("syslog", "md") else when.replace(year=2030)
        assert r.timestamp == want.replace(tzinfo=UTC), (spec, line)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_layouts(), b=_layouts(), seed=st.integers(0, 2**16),
       messages=st.lists(_MESSAGE, min_size=40, max_size=40))
def test_shuffled_interleavings_of_two_sources_keep_each_layout(a, b, seed, messages):
    rnd = random.Random(seed)
    t0 = datetime(2024, 5, 6, 7, 8, 9)
    lines = {"a": [], "b": []}
    for i, m in enumerate(messages):
        name, spec = ("a", a) if i % 2 else ("b", b)
        lines[name].append((_line(spec, rnd, t0 + timedelta(seconds=i), m)[0], m))
    alone = {name: infer_layout([x for x, _ in v[:32]]) for name, v in lines.items()}
    order = [n for n in ("a", "b") for _ in lines[n]]
    rnd.shuffle(order)
    pos = {"a": 0, "b": 0}
    p = Pipeline(INFERENCE_ONLY)
    for i, name in enumerate(order):
        line, message = lines[name][pos[name]]
        pos[name] += 1
        e = p.process([{"id": i, "raw": line, "received": 1.8e9, "stream": name}])[0]
        assert e["parse_ok"] and e["message"] == message
    for name in ("a", "b"):
        assert p.sources[name].layouts[0].slots == alone[name].slots


def test_layout_text_and_pickling():
    lay = Layout(("ts:iso", "level", "comp"))
    assert lay.text == "ts:iso level comp message"
    assert pickle.loads(pickle.dumps(lay)).parse("2024-01-01 00:00:00 INFO A: b").message == "b"


def test_learned_layouts_survive_a_restart_through_the_checkpoint(tmp_path):
    from streams.runtime.checkpoints import load_checkpoint, save_checkpoint

    p = Pipeline(INFERENCE_ONLY)
    lines = [f"2024-01-02 03:04:{s:02d} WARN [t-{s}] a.b.C: value {s}" for s in range(40)]
    p.process([{"id": i, "raw": x, "received": 1.8e9, "stream": "app.log"}
               for i, x in enumerate(lines)])
    save_checkpoint(p, tmp_path / "pipeline.ckpt")
    again = load_checkpoint(tmp_path / "pipeline.ckpt", INFERENCE_ONLY)
    assert again.describe_sources() == p.describe_sources()
    e = again.process([{"id": 99, "raw": "2024-01-02 03:05:00 ERROR [t-1] a.b.C: value 1",
                        "received": 1.8e9, "stream": "app.log"}])[0]
    assert e["format"] == "inferred" and e["level"] == "ERROR" and e["component"] == "a.b.C"
    assert again.sources["app.log"].lines == 41  # no re-learning from scratch


def test_a_source_without_headers_does_not_pay_for_inference_on_every_line(monkeypatch):
    import streams.headers as headers

    calls = []
    real = headers.infer_layout
    monkeypatch.setattr(headers, "infer_layout", lambda lines, **kw: calls.append(1) or real(lines, **kw))
    state = SourceHeaders()
    for i in range(5000):
        assert state.parse(f"user {i} clicked the button number {i % 7}") is None
    # the first lines (1, 8, 32) and then tries at exponentially growing distances
    assert len(calls) <= 30, len(calls)  # without the back-off: 625
    # a header that appears later is still learned
    for s in range(2000):
        r = state.parse(f"2024-01-02 03:04:{s % 60:02d} INFO Svc: started {s}")
    assert r is not None and r.message == "started 1999"


def test_glued_bracketed_header_fields_are_read_as_fields():
    """JVM services glue their bracketed header fields ("][", no blank): log4j's
    ``[%d][%-5p][%c]`` and unified JVM logging's ``[time][pid][level][tags]``. Read as one
    word before, so none of these lines had its own time or level."""
    log4j = [f"[2026-03-0{d}T10:1{i}:05,{100 + i}][{lvl:<5}][o.e.c.m.MetadataService] [node-1] "
             f"deleting index idx-{i}" for d in (1, 2) for i in range(6)
             for lvl in ("INFO", "WARN")]
    state = SourceHeaders()
    for line in log4j:
        r = state.parse(line, year=2030)
        assert r is not None and r.level in ("INFO", "WARN"), line
        assert r.timestamp.year == 2026 and r.timestamp.microsecond in range(100000, 106001)
        assert r.message.startswith("[node-1] deleting index idx-"), r.message
        assert r.fields.get("context") == "o.e.c.m.MetadataService"
    jvm = [f"[2026-03-01T10:00:0{i}.177+0100][4242][{lvl}][gc,heap] GC({i}) Pause Young {i}M->1M"
           for i in range(8) for lvl in ("info", "debug")]
    state = SourceHeaders()
    for line in jvm:
        r = state.parse(line, year=2030)
        assert r is not None and r.level in ("info", "debug") and r.pid == "4242", line
        assert r.timestamp.hour == 9  # +0100 applied
        assert r.message.startswith("GC("), r.message
        assert r.fields.get("context") == "gc,heap"


def test_a_header_of_plain_columns_is_learned_with_its_node_and_level():
    """No built-in format for a header of plain columns (alert label, epoch, date, node,
    time, node again, type, component, level): inference reads the time column, the node as
    the host, the component and the level word, and leaves the other columns in fields."""
    rnd = random.Random(3)
    p = Pipeline(PipelineConfig())  # built-in formats on: none of them takes these lines
    lines, want = [], []
    for i in range(60):
        node = f"ctl-{rnd.choice('abc')}{rnd.randint(1, 9)}"
        label = "-" if rnd.random() < 0.8 else "DISKERR"
        level, comp = rnd.choice(["INFO", "INFO", "WARNING", "FATAL"]), rnd.choice(["RAID", "FAN"])
        lines.append(f"{label} {1700000000 + i * 7} 2023.11.14 {node} 2023-11-14-22.{i:02d}.20.123456"
                     f" {node} EVT {comp} {level} disk {i} slow")
        want.append((node, comp, level, f"disk {i} slow", f"2023-11-14T22:{i:02d}:20.123Z"))
    events = p.process([{"id": i, "raw": x, "received": 1.8e9, "stream": "array.log"}
                        for i, x in enumerate(lines)])
    for e, (node, comp, level, message, ts) in zip(events, want):
        assert e["parse_ok"] and e["format"] == "inferred", e
        assert (e["host"], e["component"], e["message"], e["timestamp"]) == (node, comp, message, ts)
        assert e["level"] == _LEVELS.get(level.lower(), level), e
        assert "EVT" in e["fields"].values()


def test_every_line_of_the_column_sample_through_the_default_pipeline(loghub):
    """BGL's header has no built-in format: with the defaults (built-ins on) every line is
    learned, and time, node (host), component, level and message agree with the CSV."""
    log, structured = find_samples(loghub)["BGL"]
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = _rows(structured)
    p = Pipeline(PipelineConfig())
    ok = {"inferred": 0, "time": 0, "host": 0, "level": 0, "component": 0, "message": 0}
    for i, (line, row) in enumerate(zip(lines, rows)):
        r = p._parse(line, {"id": i, "raw": line, "received": 1.8e9, "stream": "BGL"})
        ok["inferred"] += r.ok and r.format == "inferred"
        want = datetime.strptime(row["Time"], "%Y-%m-%d-%H.%M.%S.%f").replace(tzinfo=UTC)
        ok["time"] += r.timestamp == want
        ok["host"] += r.host == row["Node"]
        ok["level"] += r.level == row["Level"]
        ok["component"] += r.component == row["Component"]
        ok["message"] += r.message == row["Content"].strip()
    assert ok == dict.fromkeys(ok, len(lines))
