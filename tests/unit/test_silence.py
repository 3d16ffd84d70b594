"""Silences noticed on the stream's clock (streams/silence.py) as incidents of the pipeline."""

import pickle
import random

from streams.incidents import SILENCE
from streams.pipeline import Pipeline
from streams.silence import SilenceWatch

T0 = 1_700_000_000.0


def _fleet(minutes: float, hosts=("web1", "web2", "web3"), start: float = 0.0, quiet=(),
           seed: int = 0, rate: float = 0.25):
    """Structured items of a named stream: each host about ``rate`` lines/s (Poisson), the
    hosts in ``quiet`` ((host, from_s, to_s)) sending nothing in their window."""
    rng = random.Random(seed)
    items, t, n = [], T0 + start, 0
    end = T0 + start + minutes * 60.0
    while True:
        t += rng.expovariate(rate * len(hosts))
        if t >= end:
            return items
        h = rng.choice(hosts)
        if any(q == h and T0 + a <= t < T0 + b for q, a, b in quiet):
            continue
        n += 1
        items.append({"id": f"{start}:{n}", "message": f"request {n} served in {rng.randint(1, 90)} ms",
                      "ts": t, "host": h, "level": "INFO", "received": t, "stream": "web"})


def _run(items, p=None):
    p = p or Pipeline()
    snaps = {}
    for k in range(0, len(items), 500):
        p.process(items[k:k + 500])
        for s in p.take_incidents():
            snaps[s["id"]] = s
    return p, [s for s in snaps.values() if s["kind"] == SILENCE]


def test_a_regular_host_gone_quiet_while_its_peers_send_is_one_silence_incident_resolved_when_it_speaks():
    # web2 sends nothing for 10 minutes, from minute 60 on; the others keep sending
    items = _fleet(90, quiet=[("web2", 3600.0, 4200.0)])
    p, silences = _run(items)
    (inc,) = silences  # the old code opened none: the first line back scores as ordinary
    assert inc["source"] == "web2" and inc["host"] == "web2" and inc["status"] == "resolved"
    last_before = max(it["ts"] for it in items if it["host"] == "web2" and it["ts"] < T0 + 3600)
    first_back = min(it["ts"] for it in items if it["host"] == "web2" and it["ts"] >= T0 + 4200)
    assert inc["first_ts"] == last_before  # silent since its last line
    assert last_before < inc["detected_ts"] < first_back  # noticed while it was quiet
    assert inc["resolved_ts"] == first_back  # ended by the line back
    assert inc["reason"].startswith("silence: web2 has sent nothing for")
    assert inc["count"] == 0 and inc["examples"][0]["ts"] == first_back
    assert p.status()["silent_sources"] == 0


def test_a_silence_stays_open_until_the_source_speaks_and_is_not_resolved_by_quiet_periods():
    items = _fleet(80, quiet=[("web2", 3600.0, 10_000.0)])
    p, silences = _run(items)
    (inc,) = silences
    assert inc["status"] == "open"
    # the stream moves on for longer than the incidents' quiet period, the runtime ticks
    p.process(_fleet(30, hosts=("web1", "web3"), start=80 * 60.0, seed=1))
    p.incidents.tick(T0 + 1e6)
    assert all(s["status"] == "open" for s in p.take_incidents() if s["kind"] == SILENCE)
    assert len(p.silences.silent()) == 1
    back = {"id": "back", "message": "request 1 served in 3 ms", "ts": T0 + 111 * 60.0,
            "host": "web2", "level": "INFO", "received": T0 + 111 * 60.0, "stream": "web"}
    p.process([back])
    (done,) = [s for s in p.take_incidents() if s["kind"] == SILENCE]
    assert done["id"] == inc["id"] and done["status"] == "resolved"
    assert done["last_event_id"] == "back" and done["rev"] > inc["rev"]


def test_no_silence_when_the_whole_kind_goes_quiet_or_a_source_has_no_peers():
    # every host quiet for an hour (a night): the kind's clock does not move
    gap = _fleet(60) + _fleet(60, start=2 * 3600.0, seed=1)
    assert _run(gap)[1] == []
    # one host alone: nobody sends while it is quiet
    alone = _fleet(60, hosts=("solo",)) + _fleet(60, hosts=("solo",), start=2 * 3600.0, seed=1)
    assert _run(alone)[1] == []


def test_a_source_with_long_gaps_of_its_own_is_not_silent_after_a_gap_like_them():
    # web3 sends in one minute of every fifteen, its peers all the time: a 20-minute gap of
    # web3 is usual for it, a 10-minute gap of a peer is not
    rng = random.Random(2)
    items = _fleet(240, hosts=("web1", "web2"), quiet=[("web2", 12_000.0, 12_600.0)])
    for k in range(16):
        t = T0 + k * 900.0 + rng.uniform(0, 300)
        items.append({"id": f"w3:{k}", "message": "cron run done", "ts": t, "host": "web3",
                      "level": "INFO", "received": t, "stream": "web"})
    items.sort(key=lambda it: it["ts"])
    _p, silences = _run(items)
    assert [s["source"] for s in silences] == ["web2"]


def test_a_rare_silence_of_a_busy_source_is_reported_again_but_a_habit_is_learned():
    w = SilenceWatch()
    opened = []

    def minute(m, hosts):
        for h in hosts:
            opened.extend(x[1] for x in w.see("k", h, m * 60.0 + 1.0, f"{h}{m}") if x[0] == "open")

    m = 0
    # two 10-minute silences of "a", 3 hours apart: both reported
    for outage in range(2):
        for _ in range(180):
            minute(m, ("a", "b"))
            m += 1
        for _ in range(10):
            minute(m, ("b",))
            m += 1
    assert opened == ["a", "a"]
    # then "a" goes quiet for 10 minutes in every 20: reported at first, then its habit
    reported = []
    for _ in range(40):
        opened.clear()
        for _ in range(10):
            minute(m, ("a", "b"))
            m += 1
        for _ in range(10):
            minute(m, ("b",))
            m += 1
        reported.append(len(opened))
    assert reported[0] == 1 and sum(reported[-10:]) == 0


def test_silences_are_part_of_the_pickled_state_and_a_rerun_gives_the_same_incidents():
    items = _fleet(90, quiet=[("web2", 3600.0, 4200.0)])
    half = len(items) // 2
    p = Pipeline()
    p.process(items[:half])
    p.take_incidents()
    restored = pickle.loads(pickle.dumps(p))
    a = [s for s in p.process(items[half:]) and p.take_incidents() if s["kind"] == SILENCE]
    b = [s for s in restored.process(items[half:]) and restored.take_incidents()
         if s["kind"] == SILENCE]
    assert a and a == b


def test_a_checkpoint_from_before_silences_gets_an_empty_watch():
    p = Pipeline()
    del p.silences
    p.upgrade(p.config)
    assert p.silences.silent() == [] and p.process(_fleet(1))


def test_the_module_example_runs():
    import doctest

    import streams.silence

    assert doctest.testmod(streams.silence).failed == 0
