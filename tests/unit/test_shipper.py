"""The file shipper against an in-memory API (httpx.MockTransport): following, rotation,
truncation, persisted positions, ids, retries. No server, no sleeps."""

from __future__ import annotations

import gzip
import os
import shutil

import httpx
import orjson
import pytest

from smartlogs.cli.replay import post_ingest, retry_after_seconds
from smartlogs.cli.shipper import ShipError, Shipper, StateFile


class FakeAPI:
    """Stores items by id like the store does (an id is kept once); can fail on demand."""

    def __init__(self):
        self.events: dict[str, str] = {}
        self.order: list[str] = []
        self.requests = 0
        self.fail: list = []  # queued failures: an exception or a Response
        self.headers: list[dict] = []
        self.items: list[dict] = []  # the items stored, as sent

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.headers.append(dict(request.headers))
        if self.fail:
            f = self.fail.pop(0)
            if isinstance(f, Exception):
                raise f
            return f
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        items = [orjson.loads(line) for line in body.splitlines() if line.strip()]
        for it in items:
            if it["id"] not in self.events:
                self.events[it["id"]] = it["raw"]
                self.order.append(it["raw"])
                self.items.append(it)
        return httpx.Response(202, json={"accepted": len(items)})

    @property
    def lines(self) -> list[str]:
        return self.order


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api():
    return FakeAPI()


@pytest.fixture
def make(tmp_path, api):
    made = []
    sleeps: list[float] = []

    def _make(*paths, **kw):
        kw.setdefault("rotate_wait", 1.0)
        kw.setdefault("sleep", sleeps.append)
        kw.setdefault("multiline", False)  # these tests are about lines; multi-line events below
        sh = Shipper(list(paths), kw.pop("url", "http://api"), state_path=tmp_path / "state.json",
                     client=httpx.Client(transport=httpx.MockTransport(api)), **kw)
        made.append(sh)
        return sh

    _make.sleeps = sleeps
    yield _make
    for sh in made:
        sh.close()


def write(path, text, mode="a"):
    with open(path, mode) as f:
        f.write(text)


def drain(sh, rounds=10):
    for _ in range(rounds):
        sh.poll()


def test_ships_complete_lines_with_offset_ids(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "first\nsecond\n\nthird without lf")
    sh = make(log)
    assert sh.poll() == 2
    assert api.lines == ["first", "second"]
    fid = sh.files[0].cur.st.fid
    assert list(api.events) == [f"{fid}:0", f"{fid}:6"]
    write(log, " yet\n")
    assert sh.poll() == 1
    assert api.lines[-1] == "third without lf yet" and f"{fid}:14" in api.events
    assert sh.poll() == 0
    state = orjson.loads((tmp_path / "state.json").read_bytes())["files"][str(log)]
    assert state["offset"] == log.stat().st_size and state["ino"] == log.stat().st_ino


def test_waits_for_a_file_that_does_not_exist_yet(tmp_path, api, make):
    log = tmp_path / "later.log"
    sh = make(log)
    assert sh.poll() == 0
    write(log, "hello\n")
    drain(sh, 2)
    assert api.lines == ["hello"]


def test_restart_resumes_without_gaps_or_repeats(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "".join(f"line {i}\n" for i in range(10)))
    sh = make(log, batch_size=4)
    sh.poll()
    sh.close()
    write(log, "".join(f"line {i}\n" for i in range(10, 15)))
    sh2 = make(log, batch_size=4)
    drain(sh2)
    assert api.lines == [f"line {i}" for i in range(15)]
    assert api.requests == 4


def test_killed_after_send_before_save_resends_same_ids(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "a\nb\n")
    sh = make(log)
    sh.poll()
    saved = (tmp_path / "state.json").read_bytes()
    write(log, "c\nd\n")
    sh.poll()  # accepted, then "killed" before the state reached the disk:
    sh.close()
    (tmp_path / "state.json").write_bytes(saved)
    before = dict(api.events)
    sh2 = make(log)
    drain(sh2, 2)
    assert api.requests == 3  # c, d sent twice...
    assert api.lines == ["a", "b", "c", "d"]  # ...stored once: same ids
    assert set(before) <= set(api.events) and len(api.events) == 4


def test_rotation_by_rename_reads_old_file_to_the_end_then_the_new_one(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "1\n2\n")
    sh = make(log)
    sh.poll()
    write(log, "3\n4\n")  # written just before the rotation: must not be lost
    os.rename(log, tmp_path / "app.log.1")
    write(log, "5\n6\n", "w")
    drain(sh, 3)
    assert api.lines == ["1", "2", "3", "4", "5", "6"]
    new_state = orjson.loads((tmp_path / "state.json").read_bytes())["files"][str(log)]
    assert new_state["ino"] == log.stat().st_ino and new_state["offset"] == 4


def test_rotated_file_gets_its_unterminated_last_line_after_rotate_wait(tmp_path, api, make):
    log = tmp_path / "app.log"
    clock = Clock()
    write(log, "a\nlast without lf")
    sh = make(log, clock=clock)
    sh.poll()
    os.rename(log, tmp_path / "app.log.1")
    sh.poll()
    assert api.lines == ["a"]
    clock.t += 1.5
    drain(sh, 2)
    assert api.lines == ["a", "last without lf"]
    write(log, "new\n", "w")
    drain(sh, 2)
    assert api.lines == ["a", "last without lf", "new"]


def test_rotation_while_stopped_finishes_the_old_file_first(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "1\n2\n")
    sh = make(log)
    sh.poll()
    sh.close()
    write(log, "3\n")
    os.rename(log, tmp_path / "app.log.1")
    write(log, "4\n", "w")
    sh2 = make(log)
    drain(sh2, 4)
    assert api.lines == ["1", "2", "3", "4"]


def test_copytruncate_is_detected_and_read_from_the_start(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "old one\nold two\n")
    sh = make(log)
    sh.poll()
    fid = sh.files[0].cur.st.fid
    shutil.copy(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    write(log, "new\n")  # shorter than the position
    drain(sh, 2)
    assert api.lines == ["old one", "old two", "new"]
    assert sh.files[0].cur.st.fid != fid  # new content, new ids: never mistaken for old lines


def test_truncation_hidden_by_regrowth_is_detected_by_the_first_bytes(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "aa\n")
    sh = make(log)
    sh.poll()
    os.truncate(log, 0)
    write(log, "bbbbbbbb\ncc\n")  # already longer than the old position
    drain(sh, 2)
    assert api.lines == ["aa", "bbbbbbbb", "cc"]


def test_inode_reuse_with_other_content_is_a_new_file(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "first content\n")
    sh = make(log)
    sh.poll()
    sh.close()
    state = orjson.loads((tmp_path / "state.json").read_bytes())
    write(log, "other content, same inode\nmore\n", "w")  # same inode, different head
    (tmp_path / "state.json").write_bytes(orjson.dumps(state))
    sh2 = make(log)
    drain(sh2, 2)
    assert api.lines == ["first content", "other content, same inode", "more"]


def test_start_at_end_skips_existing_lines_only_for_files_present_at_start(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "old\nold partial")
    sh = make(log, start_at_end=True)
    sh.poll()
    write(log, " done\nnew\n")
    drain(sh, 2)
    assert api.lines == ["old partial done", "new"]


def test_several_files_in_one_batch(tmp_path, api, make):
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    write(a, "a1\na2\n")
    write(b, "b1\n")
    sh = make(a, b)
    assert sh.poll() == 3
    assert sorted(api.lines) == ["a1", "a2", "b1"]


def test_connection_errors_and_503_are_retried_with_retry_after(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "x\ny\n")
    api.fail = [httpx.ConnectError("refused"), httpx.ConnectError("refused"),
                httpx.Response(503, headers={"Retry-After": "3"}, json={"error": "backlog_full"}),
                httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "rate_limited"})]
    sh = make(log)
    assert sh.poll() == 2
    assert api.lines == ["x", "y"]
    assert make.sleeps[:4] == [0.2, 0.4, 3.0, 1.6]  # backoff, and Retry-After when it is longer
    assert sh.stats.retries == 4


def test_api_key_is_sent_as_bearer(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "x\n")
    sh = make(log, headers={"Authorization": "Bearer k123"}, gzip=True)
    sh.poll()
    assert api.headers[0]["authorization"] == "Bearer k123"
    assert api.headers[0]["x-smartlogs-source"] == "file"
    assert api.headers[0]["content-encoding"] == "gzip" and api.lines == ["x"]


def test_refusal_stops_without_advancing(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "x\n")
    api.fail = [httpx.Response(401, json={"error": "unauthorized", "detail": "missing API key"})]
    sh = make(log)
    with pytest.raises(ShipError, match="missing API key"):
        sh.poll()
    assert sh.files[0].cur.st.offset == 0
    sh.poll()
    assert api.lines == ["x"]


def test_413_halves_the_batch(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "".join(f"{i}\n" for i in range(8)))
    api.fail = [httpx.Response(413, json={"error": "body_too_large", "detail": "too big"})]
    sh = make(log)
    drain(sh, 4)
    assert api.lines == [str(i) for i in range(8)] and sh.batch_size == 4


def test_stop_while_the_api_is_down_keeps_the_position(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "x\n")
    sh = make(log)
    api.fail = [httpx.ConnectError("down")] * 3

    calls = []
    sh.sleep = lambda s: (calls.append(s), sh.stop_event.set() if len(calls) == 2 else None)
    assert sh.poll() == -1
    assert sh.files[0].cur.st.offset == 0


def test_an_overlong_line_is_one_event_cut_to_the_limit_and_its_rest_skipped(tmp_path, api, make):
    log = tmp_path / "app.log"
    # 200,000 bytes: more than one read (64 KiB) and more than 4 bytes per allowed character
    write(log, "a\n" + "x" * 200_000 + "\nb\n" + "é" * 15 + "\n")
    sh = make(log, max_line_length=10)
    drain(sh, 3)
    fid = sh.files[0].cur.st.fid
    # one event per line; a line cut by the shipper keeps one character more than the limit,
    # so the API cuts it to the limit and flags it truncated (as for a long line sent whole)
    assert api.lines == ["a", "x" * 11, "b", "é" * 11]
    assert list(api.events) == [f"{fid}:0", f"{fid}:2", f"{fid}:200003", f"{fid}:200005"]
    assert sh.stats.lines == 4 and sh.stats.truncated == 2
    state = orjson.loads((tmp_path / "state.json").read_bytes())["files"][str(log)]
    assert state["offset"] == log.stat().st_size and "skip" not in state


def test_a_line_within_the_byte_cap_is_not_cut_by_bytes(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "€" * 10 + "\n")  # 30 bytes, 10 characters: not over a limit of 10 characters
    sh = make(log, max_line_length=10)
    drain(sh, 2)
    assert api.lines == ["€" * 10] and sh.stats.truncated == 0


def test_an_overlong_line_still_being_written_is_skipped_across_reads_and_a_restart(
        tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "first\n" + "x" * 100)  # over the cap (4 * 10 + 4 bytes), no LF yet
    sh = make(log, max_line_length=10)
    drain(sh, 2)
    assert api.lines == ["first", "x" * 11]
    write(log, "y" * 70_000)  # still the same line
    drain(sh, 2)
    state = orjson.loads((tmp_path / "state.json").read_bytes())["files"][str(log)]
    assert state["offset"] == log.stat().st_size and state["skip"] is True
    sh.close()
    write(log, "z" * 100 + "\nnext\n")  # the line ends while the shipper is stopped
    sh2 = make(log, max_line_length=10)
    drain(sh2, 3)
    assert api.lines == ["first", "x" * 11, "next"]  # no piece of the long line as a line
    state = orjson.loads((tmp_path / "state.json").read_bytes())["files"][str(log)]
    assert state["offset"] == log.stat().st_size and "skip" not in state


def test_nuls_left_by_copytruncate_before_a_line_are_skipped(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "a\n")
    sh = make(log, max_line_length=10)
    sh.poll()
    os.truncate(log, 0)  # copytruncate; the writer (no O_APPEND) goes on at its old offset
    with open(log, "r+b") as f:
        f.seek(100_000)
        f.write(b"hole ok\n")
    drain(sh, 4)
    assert api.lines == ["a", "hole ok"]


def test_start_at_end_inside_a_very_long_line_skips_its_rest(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "old\n" + "x" * 100_000)
    sh = make(log, start_at_end=True)
    sh.poll()
    write(log, "x\nnew\n")
    drain(sh, 2)
    assert api.lines == ["new"]


def test_one_state_file_one_shipper(tmp_path, make):
    log = tmp_path / "app.log"
    make(log)
    with pytest.raises(ShipError, match="another shipper"):
        StateFile(tmp_path / "state.json")


def test_retry_after_forms():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_post_ingest_retries_forever_until_stopped():
    n = {"calls": 0}

    def down(request):
        n["calls"] += 1
        raise httpx.ConnectError("refused")

    client = httpx.Client(transport=httpx.MockTransport(down))
    out = post_ingest(client, "http://x", b"{}", max_retries=None, sleep=lambda s: None,
                      should_stop=lambda: n["calls"] >= 20)
    assert not out.ok and out.transient and n["calls"] == 20 and out.retries == 19


@pytest.mark.parametrize("url", ["notaurl", "localhost:8000", "http://", "ftp://host/", "http://[::1"])
def test_a_url_that_can_never_answer_is_refused_at_once(tmp_path, api, url):
    with pytest.raises(ShipError, match="is not an http"):
        Shipper([tmp_path / "app.log"], url, state_path=tmp_path / "state.json")
    assert not (tmp_path / "state.json").exists()


def test_once_gives_up_when_the_api_stays_down_and_a_rerun_resumes(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "x\ny\n")
    clock = Clock()
    waits: list[float] = []

    def sleep(s):
        waits.append(s)
        clock.t += s

    api.fail = [httpx.ConnectError("refused")] * 1000
    sh = make(log, clock=clock, sleep=sleep, give_up_after=5.0, max_backoff=2.0)
    with pytest.raises(ShipError, match=r"gave up after 5s.*run again"):
        sh.run(once=True)
    assert clock.t == pytest.approx(5.0) and max(waits) <= 2.0  # never waits past the limit
    assert sh.files[0].cur.st.offset == 0 and api.lines == []
    sh.close()
    api.fail = []
    sh2 = make(log)
    sh2.run(once=True)
    assert api.lines == ["x", "y"]


def test_forever_by_default_while_the_api_is_down(tmp_path, api, make):
    log = tmp_path / "app.log"
    write(log, "x\n")
    clock = Clock()
    api.fail = [httpx.ConnectError("refused")] * 200
    sh = make(log, clock=clock, sleep=lambda s: setattr(clock, "t", clock.t + s), max_backoff=2.0)
    assert sh.poll() == 1 and clock.t > 300 and api.lines == ["x"]


def test_a_directory_is_refused_and_never_recorded(tmp_path, api):
    d = tmp_path / "logs"
    d.mkdir()
    with pytest.raises(ShipError, match="is a directory"):
        Shipper([d], "http://api", state_path=tmp_path / "state.json")
    assert not (tmp_path / "state.json").exists()


def test_a_missing_file_is_refused_only_when_it_must_exist(tmp_path, api, make):
    with pytest.raises(ShipError, match="does not exist"):
        Shipper([tmp_path / "nope.log"], "http://api", state_path=tmp_path / "s.json",
                missing_ok=False)
    assert not (tmp_path / "s.json").exists()
    make(tmp_path / "later.log")  # followed: waited for


def test_a_directory_appearing_at_a_followed_path_is_not_followed(tmp_path, api, make):
    log = tmp_path / "app.log"
    sh = make(log)
    sh.poll()
    log.mkdir()
    drain(sh, 2)
    assert not (tmp_path / "state.json").exists() or str(log) not in orjson.loads(
        (tmp_path / "state.json").read_bytes())["files"]
    log.rmdir()
    write(log, "x\n")
    drain(sh, 2)
    assert api.lines == ["x"]
    files = orjson.loads((tmp_path / "state.json").read_bytes())["files"]
    assert files[str(log)]["ino"] == log.stat().st_ino


# -- multi-line events -----------------------------------------------------------------------
class FixedClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_stack_trace_is_shipped_as_one_event_once_the_next_line_starts(tmp_path, api, make):
    clock = FixedClock()
    log = tmp_path / "app.log"
    write(log, "2024-05-01 10:00:00 ERROR billing failed\njava.lang.IllegalStateException: x\n"
               "\tat a.b(C.java:1)\n")
    sh = make(log, multiline=True, idle_flush=2.0, clock=clock)
    assert sh.poll() == 0  # the trace may still grow: held, nothing committed
    write(log, "\tat d.e(F.java:2)\n2024-05-01 10:00:01 INFO retried\n")
    assert sh.poll() == 1  # the next header closed it; the new line is held in turn
    (event,) = api.items
    assert event["raw"].splitlines() == ["2024-05-01 10:00:00 ERROR billing failed",
                                         "java.lang.IllegalStateException: x",
                                         "\tat a.b(C.java:1)", "\tat d.e(F.java:2)"]
    assert event["id"].endswith(":0") and event["stream"] == str(log)
    clock.t += 2.5  # idle: the last event goes out
    assert sh.poll() == 1
    assert api.items[-1]["raw"] == "2024-05-01 10:00:01 INFO retried"


def test_a_held_event_is_read_again_whole_after_a_restart(tmp_path, api, make):
    clock = FixedClock()
    log = tmp_path / "app.log"
    write(log, "2024-05-01 10:00:00 INFO one\n2024-05-01 10:00:01 ERROR two\n  detail\n")
    first = make(log, multiline=True, clock=clock)
    assert first.poll() == 1  # "one"; "two" is held
    first.close()
    write(log, "  more detail\n")
    again = make(log, multiline=True, idle_flush=0.0, clock=clock)
    assert again.poll() == 1
    assert api.items[-1]["raw"] == "2024-05-01 10:00:01 ERROR two\n  detail\n  more detail"
    assert [i["id"] for i in api.items] == [api.items[0]["id"], api.items[-1]["id"]]  # no repeat


def test_a_stack_trace_is_shipped_as_one_event_named_by_its_file(tmp_path, api, make):
    from tests.unit.test_multiline import JAVA

    log = tmp_path / "app.log"
    write(log, JAVA)
    sh = make(log, multiline=True, idle_flush=0.0)
    drain(sh)
    assert len(api.lines) == 3
    assert api.lines[1].count("\n") == 10 and api.lines[1].endswith("58 common frames omitted")
    fid = sh.files[0].cur.st.fid
    second = JAVA.index("\n") + 1
    assert list(api.events)[1] == f"{fid}:{second}"  # the id of its first line
    state = orjson.loads((tmp_path / "state.json").read_bytes())["files"][str(log)]
    assert state["offset"] == log.stat().st_size  # every line of it accepted
