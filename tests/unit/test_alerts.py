"""Alert rules (streams.alerts): validation one error at a time, and each kind's firing/resolving."""

from __future__ import annotations

import pytest
import yaml

from streams.alerts import Alert, AlertEngine, RuleError, load_rules

T0 = 1_700_000_000.0


def ev(t, *, host="web1", level="INFO", template="T1", message="request served", anomaly=False,
       reason=None, ts=None):
    return {"id": f"e{t}", "ts": t if ts is None else ts, "received": t, "timestamp": str(t),
            "host": host, "component": "app", "source": "http", "level": level,
            "template_id": template, "message": message, "anomaly": anomaly, "reason": reason,
            "score": 0.9 if anomaly else 0.1}


def rules(text, **kw):
    return load_rules(yaml.safe_load(text), "alerts.yaml")


@pytest.mark.parametrize("text,message", [
    ("rules: [{kind: match}]", "rule #1: needs a 'name'"),
    ("rules: [{name: a, kind: nope}]", "rule #1 (a): 'kind' must be one of new_template"),
    ("rules: [{name: a, kind: anomaly_burst}, {name: a, kind: match, query: x}]",
     "rule #2 (a): the name is used by another rule"),
    ("rules: [{name: a, kind: anomaly_burst, threshold: 0}]", "threshold must be a whole number >= 1"),
    ("rules: [{name: a, kind: anomaly_burst, window: soon}]", "window: 'soon' is not a duration"),
    ("rules: [{name: a, kind: anomaly_burst, group_by: planet}]", "group_by must be one of"),
    ("rules: [{name: a, kind: error_flood, level: LOUD}]", "level must be one of"),
    ("rules: [{name: a, kind: template_spike, factor: 1}]", "factor must be a number above 1"),
    ("rules: [{name: a, kind: match, query: '!!!'}]", "match needs a 'query' with at least one word"),
    ("rules: [{name: a, kind: silence, threshold: 3}]", "silence does not take ['threshold']"),
    ("warmup_lines: -1\nrules: []", "warmup_lines must be a whole number"),
    ("rule: []", "unknown top-level key(s) ['rule']"),
])
def test_each_mistake_is_refused_naming_the_file_the_rule_and_what_is_wrong(text, message):
    with pytest.raises(RuleError) as exc:
        rules(text)
    assert str(exc.value).startswith("alerts.yaml") and message in str(exc.value)


def test_the_example_file_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "alerts.example.yaml"
    loaded, warmup = load_rules(yaml.safe_load(path.read_text()), str(path))
    assert {r.kind for r in loaded} == {"new_template", "anomaly_burst", "template_spike",
                                       "error_flood", "silence", "match"}


def normal(engine, start, n, hosts=("web1", "web2")):
    out = []
    for i in range(n):
        out += engine.observe([ev(start + i, host=hosts[i % len(hosts)])])
        out += engine.tick(start + i)
    return out


def test_one_firing_and_one_resolved_for_each_kind_and_none_for_the_normal_stretch():
    loaded, _ = rules("""
rules:
  - {name: new, kind: new_template, window: 60s}
  - {name: burst, kind: anomaly_burst, threshold: 5, window: 60s, group_by: host}
  - {name: errors, kind: error_flood, level: ERROR, threshold: 10, window: 60s}
  - {name: quiet, kind: silence, windows: 3, window: 60s, group_by: host}
  - {name: oom, kind: match, query: "out of memory", threshold: 1, window: 60s}
""")
    engine = AlertEngine(loaded, warmup_lines=100)
    assert normal(engine, T0, 600) == []  # ten minutes of normal lines: nothing
    got = []
    t = T0 + 600
    got += engine.observe([ev(t, template="T99", message="a brand new thing")])
    got += engine.observe([ev(t + 1 + i, anomaly=True, reason="rare pattern T5") for i in range(8)])
    got += engine.observe([ev(t + 10 + i, level="ERROR", host="web2") for i in range(15)])
    got += engine.observe([ev(t + 30, message="Out of memory: kill process 42", level="ERROR")])
    got += normal(engine, t + 31, 600, hosts=("web2",))  # web1 falls silent
    got += normal(engine, t + 700, 120, hosts=("web1", "web2"))  # web1 is back
    by = {}
    for a in got:
        by.setdefault(a.rule, []).append(a.state)
    assert by == {"new": ["firing", "resolved"], "burst": ["firing", "resolved"],
                  "errors": ["firing", "resolved"], "oom": ["firing", "resolved"],
                  "quiet": ["firing", "resolved"]}
    burst = next(a for a in got if a.rule == "burst")
    assert burst.group == "web1" and burst.count >= 5 and "rare pattern T5" in burst.reasons[0]
    assert burst.trigger["host"] == "web1" and len(burst.samples) == 5
    quiet = next(a for a in got if a.rule == "quiet")
    assert quiet.group == "web1" and "nothing from host web1" in quiet.reasons[0]


def test_a_template_spike_is_judged_against_its_own_baseline():
    loaded, _ = rules("rules: [{name: spike, kind: template_spike, factor: 4, baseline: 5, "
                      "min_count: 10, window: 60s}]")
    engine = AlertEngine(loaded, warmup_lines=0)
    out = []
    for w in range(6):  # five quiet windows: 3 lines a minute
        out += engine.observe([ev(T0 + w * 60 + i) for i in range(3)])
    assert out == []
    out += engine.observe([ev(T0 + 6 * 60 + i * 0.5) for i in range(40)])
    assert [a.state for a in out] == ["firing"] and out[0].baseline == 3.0
    out += engine.tick(T0 + 8 * 60)
    assert [a.state for a in out] == ["firing", "resolved"]


def test_a_replay_of_old_logs_is_judged_in_event_time_and_marked_historical():
    loaded, _ = rules("rules: [{name: errors, kind: error_flood, threshold: 3, window: 60s}]")
    engine = AlertEngine(loaded, warmup_lines=0)
    now = T0 + 30 * 86400
    old = [dict(ev(now + i * 0.001, level="ERROR"), ts=T0 + i * 600) for i in range(10)]
    assert engine.observe(old) == []  # ten minutes apart in their own time: no flood
    burst = [dict(ev(now + 1 + i * 0.001, level="ERROR"), ts=T0 + 7200 + i) for i in range(5)]
    alerts = engine.observe(burst)
    assert [a.state for a in alerts] == ["firing"] and alerts[0].historical


def test_a_storm_is_capped_per_rule_and_window():
    loaded, _ = rules("rules: [{name: burst, kind: anomaly_burst, threshold: 1, window: 60s, "
                      "group_by: host, max_per_window: 3}]")
    engine = AlertEngine(loaded, warmup_lines=0)
    out = engine.observe([ev(T0 + i * 0.1, host=f"h{i}", anomaly=True) for i in range(50)])
    assert [a.state for a in out] == ["firing"] * 3 + ["suppressed"]


def test_the_word_rule_is_the_search_one():
    from smartlogs.store.base import search_words
    from streams.alerts import _WORD

    text = "Out-of-memory: kill_process 42 ünïcode 日本語のログ"
    assert _WORD.findall(text) == search_words(text)


def test_a_template_marked_expected_raises_no_new_template_or_spike_alert():
    """Feedback from the template catalog (issue 20): a pattern a user marked expected is
    known, so its first line and its surges raise nothing; other rules still see its lines."""
    loaded, _ = rules("rules: [{name: new, kind: new_template}, {name: spike, kind: "
                      "template_spike, factor: 4, baseline: 5, min_count: 10, window: 60s}, "
                      "{name: errs, kind: error_flood, level: ERROR, threshold: 3, window: 60s}]")
    marks = {"T9": "expected"}

    def run(with_marks: bool):
        engine = AlertEngine(loaded, warmup_lines=0)
        if with_marks:
            engine.marks_of = lambda: marks
        out = []
        for w in range(6):
            out += engine.observe([ev(T0 + w * 60 + i, template="T9") for i in range(3)])
        out += engine.observe([ev(T0 + 6 * 60 + i * 0.5, template="T9", level="ERROR")
                               for i in range(40)])
        return sorted({a.rule for a in out if a.state == "firing"})

    assert run(False) == ["errs", "new", "spike"]
    assert run(True) == ["errs"]
    import pickle

    engine = AlertEngine(loaded)
    engine.marks_of = lambda: marks
    assert pickle.loads(pickle.dumps(engine)).marks_of is None  # the runtime sets it again


def test_an_alert_says_whether_the_model_was_warming_up_and_how_much_it_had_learned():
    """Issue 20: no silent cold start: an alert raised on a line scored while the model was
    warming up says so, with the lines learned; the Slack text says it in words."""
    from streams.runtime.alerting import json_payload, slack_payload

    loaded, _ = rules("rules: [{name: errs, kind: error_flood, level: ERROR, threshold: 2, "
                      "window: 60s}]")
    engine = AlertEngine(loaded, warmup_lines=0)
    engine.lines_learned_of = lambda: 42
    cold = [dict(ev(T0 + i, level="ERROR"), warming_up=True) for i in range(2)]
    (a,) = engine.observe(cold)
    assert a.warming_up is True and a.lines_learned == 42
    assert json_payload(a)["warming_up"] is True and json_payload(a)["lines_learned"] == 42
    assert "still warming up (42 lines learned)" in slack_payload(a)["blocks"][0]["text"]["text"]
    warm = AlertEngine(loaded, warmup_lines=0)
    (b,) = warm.observe([dict(ev(T0 + i, level="ERROR"), warming_up=False) for i in range(2)])
    assert b.warming_up is False and b.lines_learned == 2  # without the runtime: lines seen
    assert "warming up" not in slack_payload(b)["blocks"][0]["text"]["text"]


def test_the_slack_message_carries_the_alert_id_a_repeat_shares():
    """Slack drops no repeat by the X-SmartLogs-Alert-Id header (delivery is at least once):
    the message shows the same id and state, so a repeat can be told from a new alert."""
    from streams.runtime.alerting import slack_payload

    loaded, _ = rules("rules: [{name: errs, kind: error_flood, level: ERROR, threshold: 2, "
                      "window: 60s}]")
    (a,) = AlertEngine(loaded, warmup_lines=0).observe(
        [ev(T0 + i, level="ERROR") for i in range(2)])
    body = slack_payload(a)
    assert body["blocks"][-1] == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"alert `{a.id}|firing`"}]}
    (again,) = AlertEngine(loaded, warmup_lines=0).observe(  # raised again from the same lines
        [ev(T0 + i, level="ERROR") for i in range(2)])
    assert slack_payload(again)["blocks"][-1] == body["blocks"][-1]


def test_an_anomaly_burst_grouped_by_incident_is_one_alert_per_incident():
    """Issue 20: an alert for an incident, never per line: 40 flagged lines of one incident
    are one firing (count 40), a second incident another; resolved once its window closes."""
    loaded, _ = rules("rules: [{name: inc, kind: anomaly_burst, threshold: 1, window: 5m, "
                      "group_by: incident}]")
    engine = AlertEngine(loaded, warmup_lines=0)
    out = []
    for i in range(40):
        out += engine.observe([dict(ev(T0 + i, anomaly=True, reason="burst"), incident_id="I1")])
    out += engine.observe([dict(ev(T0 + 50, anomaly=True, reason="flood"), incident_id="I2")])
    out += engine.observe([ev(T0 + 51)])  # an ordinary line: no incident, no alert
    firing = [a for a in out if a.state == "firing"]
    assert [(a.group, a.count) for a in firing] == [("I1", 40), ("I2", 1)]  # one each
    out = engine.tick(T0 + 700)
    assert sorted((a.group, a.state) for a in out) == [("I1", "resolved"), ("I2", "resolved")]


def test_a_condition_that_lasts_window_after_window_is_one_alert_resolved_once():
    """Issue 20: one alert per rule and group while the condition lasts, then one resolved:
    ten minutes of errors over 1-minute windows are one firing, not one per window; it
    resolves at the end of the first window without the condition."""
    loaded, _ = rules("rules: [{name: errs, kind: error_flood, level: ERROR, threshold: 5, "
                      "window: 60s, group_by: host}]")
    engine = AlertEngine(loaded, warmup_lines=0)
    start = T0 - T0 % 60
    out = []
    for i in range(600):
        out += engine.observe([ev(start + i, level="ERROR")])
        out += engine.tick(start + i)
    out += normal(engine, start + 600, 120)  # then two minutes of ordinary lines
    assert [a.state for a in out] == ["firing", "resolved"]
    assert out[0].count == 60 and out[1].window_end == start + 660
    assert len({a.id for a in out}) == 1


# -- state across restarts ---------------------------------------------------------------------
ERRS = ("rules: [{name: errs, kind: error_flood, level: ERROR, threshold: 10, window: 60s, "
        "group_by: host}, {name: quiet, kind: silence, windows: 2, window: 60s, group_by: host}, "
        "{name: new, kind: new_template}]")


def _restarted(engine, text=ERRS, records=(), now=0.0):
    """A new engine (new rules from ``text``) that took up ``engine``'s snapshot through JSON
    (taken at a clean stop)."""
    import json

    fresh = AlertEngine(rules(text)[0], warmup_lines=0)
    closed = fresh.restore(json.loads(json.dumps(engine.snapshot())), records, now=now)
    return fresh, closed


def test_a_restart_keeps_window_counts_open_alerts_silences_and_the_templates_seen():
    start = T0 - T0 % 60
    engine = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    out = engine.observe([ev(start + i, level="ERROR", host="web1") for i in range(6)])
    out += engine.observe([ev(start + 1, host="web2")])
    assert [a.rule for a in out] == ["new"]  # T1's first line
    engine, closed = _restarted(engine)
    assert closed == []
    # the window's count carries over: 6 + 4 errors reach the threshold of 10
    out = engine.observe([ev(start + 10 + i, level="ERROR", host="web1") for i in range(4)])
    assert [(a.rule, a.state, a.count) for a in out] == [("errs", "firing", 10)]
    engine, _ = _restarted(engine)
    # the open alert carries over: errors lasting into the next windows raise nothing more
    out = [a for i in range(120) for a in engine.observe([ev(start + 60 + i, level="ERROR",
                                                             host="web1")])]
    assert [a for a in out if a.rule == "errs"] == []
    assert [a.rule for a in out] == []  # T1 is known: no second new_template alert
    engine, _ = _restarted(engine)
    out = engine.tick(start + 300)  # quiet since: errs resolves, web2's silence is noticed
    assert sorted((a.rule, a.group, a.state) for a in out) == [
        ("errs", "web1", "resolved"), ("new", "T1", "resolved"), ("quiet", "web1", "firing"),
        ("quiet", "web2", "firing")]


def test_alert_records_written_after_the_snapshot_are_applied():
    """A crash between two snapshots: the history has what the last snapshot lacks."""
    start = T0 - T0 % 60
    engine = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    old = engine.snapshot()
    fired = engine.observe([ev(start + i, level="ERROR", host="web1") for i in range(10)])
    records = [dict(vars(a), notified=True) for a in fired]
    fresh = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    assert fresh.restore(old, records, now=start + 15) == []
    out = fresh.observe([ev(start + 20 + i, level="ERROR", host="web1") for i in range(3)])
    assert [a.rule for a in out] == []  # web1's flood is open already: no second firing
    # the window of the crash lacks the lines before it: it cannot resolve; the next one can
    first = fresh.tick(start + 61)
    assert [a.rule for a in first] == ["new"]  # (T1's new_template alert: one window)
    out = first + fresh.tick(start + 121)
    assert [(a.rule, a.state, a.id) for a in out if a.rule == "errs"] == [
        ("errs", "resolved", fired[1].id)]
    # and a resolution recorded after the snapshot closes it
    again = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    again.restore(old, records + [dict(vars(a)) for a in out])
    assert again.tick(start + 400) == []


def test_an_alert_left_open_by_a_changed_or_removed_rule_is_resolved_at_restart():
    start = T0 - T0 % 60
    engine = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    engine.observe([ev(start + i, level="ERROR", host="web1") for i in range(10)])
    changed = ERRS.replace("level: ERROR", "level: WARNING")
    engine2, closed = _restarted(engine, changed, now=start + 30)
    assert [(a.rule, a.state, a.at) for a in closed] == [("errs", "resolved", start + 30)]
    assert "changed or removed" in closed[0].reasons[-1]
    # a threshold changes nothing in the window counts: the open alert carries over
    _, closed = _restarted(engine, ERRS.replace("threshold: 10", "threshold: 12"))
    assert closed == []


# -- several workers: each rule evaluated once --------------------------------------------------
def test_the_doctests():
    import doctest

    import streams.alerts

    assert doctest.testmod(streams.alerts).failed == 0


def test_each_rule_is_evaluated_by_exactly_one_worker_whatever_the_assignment():
    """Issue 20: with several workers a rule over all sources is evaluated once. Host- and
    incident-grouped rules go with the partitions (every worker over its own events); the
    others only by the holder of partition 0, over every worker's facts; one worker with
    every partition evaluates everything over its events."""
    from streams.alerts import assign_rules, placement

    loaded, _ = rules("""
rules:
  - {name: burst, kind: anomaly_burst, threshold: 5, group_by: host}
  - {name: inc, kind: anomaly_burst, threshold: 1, group_by: incident}
  - {name: quiet, kind: silence, windows: 3}
  - {name: flood, kind: error_flood, threshold: 50}
  - {name: oom, kind: match, query: out of memory}
  - {name: new, kind: new_template}
  - {name: spike, kind: template_spike}
  - {name: comp, kind: error_flood, threshold: 5, group_by: component}
""")
    assert {r.name: placement(r) for r in loaded} == {
        "burst": "partition", "inc": "partition", "quiet": "partition", "flood": "global",
        "oom": "global", "new": "global", "spike": "global", "comp": "global"}
    for n, workers in ((1, [{0}]), (6, [{0, 1, 2, 3, 4, 5}]), (6, [{0, 3}, {1, 4}, {2, 5}]),
                       (6, [{1, 2}, {0}, {3, 4, 5}]), (4, [{3}, {2}, {1}, {0}])):
        plans = [assign_rules(loaded, held, n) for held in workers]
        alone = len(workers) == 1
        for r in loaded:
            over_events = sum(r in local for local, _ in plans)
            from_store = sum(r in shared for _, shared in plans)
            if alone or placement(r) == "global":
                # once in all: over the events of the one worker, or from the store
                assert over_events + from_store == 1, (r.name, workers)
            else:
                assert (over_events, from_store) == (len(workers), 0), (r.name, workers)
        # the holder of partition 0 judges the global rules, unless it sees everything
        holder = next(p for p, held in zip(plans, workers) if 0 in held)
        assert (holder[1] == ()) == alone


GLOBAL_RULES = """warmup_lines: 5
rules:
  - {name: new, kind: new_template}
  - {name: burst, kind: anomaly_burst, threshold: 4, window: 60s}
  - {name: comp, kind: anomaly_burst, threshold: 1, window: 60s, group_by: component,
     max_per_window: 2}
  - {name: per-host, kind: error_flood, threshold: 2, window: 60s, group_by: host}
"""


def _two_workers_and_a_judge(text=GLOBAL_RULES):
    """Workers holding partitions {0} and {1} of 2 (their own engines); the first judges the
    global rules over both workers' facts (in the engine its own events go through)."""
    from streams.alerts import assign_rules

    loaded, warmup = rules(text)
    plans = [assign_rules(loaded, held, 2) for held in ({0}, {1})]
    workers = [AlertEngine(loaded, warmup_lines=warmup) for _ in plans]
    return loaded, plans, workers, workers[0]


def test_global_rules_are_judged_once_over_every_workers_facts():
    """Issue 20, several workers: an ungrouped burst neither worker sees alone (2 + 2 flagged
    lines, threshold 4) fires once, at the judge; a template new to both workers fires once;
    the warm-up counts both workers' lines; host rules stay with each worker; the facts are
    the lines the global rules count and each template's first line, not every line."""
    from streams.alerts import facts_of, placement

    loaded, plans, workers, judge = _two_workers_and_a_judge()
    glob = tuple(r for r in loaded if placement(r) == "global")
    raised, sent = [], 0
    passed = [set(), set()]

    def store(k, events):  # worker k stored a batch: its rules, then its facts to the judge
        nonlocal sent
        local, _ = plans[k]
        away = tuple(r for r in glob if r not in local)
        raised.extend(("w", a.rule, a.group) for a in workers[k].observe(events, local, f"p{k}",
                                                                          lines=0))
        facts = facts_of(away, events, passed[k])
        sent += len(facts)
        _, shared = plans[0]  # the judge: the holder of partition 0
        raised.extend(("j", a.rule, a.group) for a in judge.observe(facts, shared, "global",
                                                                     lines=len(events)))

    t = T0
    store(0, [ev(t + i, host="web1") for i in range(3)])  # warm-up: 3 + 3 lines, one template
    store(1, [ev(t + 3 + i, host="web2") for i in range(3)])
    assert raised == [] and judge.lines == 6 and sent == 2  # one first line per worker
    for k, host in ((0, "web1"), (1, "web2")):
        store(k, [ev(t + 10 + k, host=host, anomaly=True, template="T2"),
                  ev(t + 12 + k, host=host, anomaly=True, level="ERROR"),
                  ev(t + 14 + k, host=host, level="ERROR")])
    assert sorted(raised) == [("j", "burst", "*"), ("j", "comp", "app"), ("j", "new", "T2"),
                              ("w", "per-host", "web1"), ("w", "per-host", "web2")], raised
    assert judge.lines == 12 and workers[1].lines == 0  # counted at the judge, once


def test_the_cap_of_a_global_rule_holds_over_every_workers_firings():
    """Each worker alone would raise two alerts of ``comp`` (cap 2 per window): judged over
    both workers' facts, two fire in all and one notice says the rest were held back."""
    from streams.alerts import facts_of, placement

    loaded, plans, _workers, judge = _two_workers_and_a_judge()
    glob = tuple(r for r in loaded if placement(r) == "global")
    out = []
    for k in (0, 1):
        events = [{**ev(T0 + k * 10 + i, host=f"web{k}", anomaly=True, template="T1"),
                   "component": f"c{k}{i}"} for i in range(2)]
        facts = facts_of(glob, events, set())
        out += judge.observe(facts, plans[0][1], "global", lines=len(events))
    comp = [(a.state, a.group) for a in out if a.rule == "comp"]
    assert comp == [("firing", "c00"), ("firing", "c01"), ("suppressed", "*")], comp


def test_windows_the_platform_was_down_for_do_not_resolve_an_open_alert():
    """Embedded mode takes no lines while it is down: the windows of the downtime (and the
    one the restart fell in) are not evidence that a flood stopped. The flood goes on after
    five minutes down: still one alert; it resolves once a window after the restart is clean."""
    start = T0 - T0 % 60
    engine = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    out = [a for i in range(12) for a in engine.observe([ev(start + i, level="ERROR")])]
    back = start + 330  # five minutes down
    engine, _ = _restarted(engine, now=back)
    for i in range(200):  # the flood goes on, and stops at back + 200
        out += engine.observe([ev(back + i, level="ERROR")])
        out += engine.tick(back + i)
    out += normal(engine, back + 200, 200)
    assert [(a.rule, a.state) for a in out if a.rule == "errs"] == [("errs", "firing"),
                                                                   ("errs", "resolved")]
    resolved = next(a for a in out if a.rule == "errs" and a.state == "resolved")
    assert resolved.window_end == back - back % 60 + 300  # the first clean window's end


def test_the_time_the_platform_was_down_is_not_a_sources_silence():
    import json

    start = T0 - T0 % 60
    engine = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    engine.observe([ev(start + 1, host="web2")])
    fresh = AlertEngine(rules(ERRS)[0], warmup_lines=0)
    fresh.restore(json.loads(json.dumps(engine.snapshot())), now=start + 600, paused=595)
    assert [a.rule for a in fresh.tick(start + 601)] == ["new"]  # (T1's, resolved) — and
    # no silence: web2 was quiet for 600 s, but 595 of them the platform was down
    assert [(a.rule, a.group) for a in fresh.tick(start + 601 + 120)] == [("quiet", "web2")]


def test_a_spikes_baseline_survives_a_restart():
    loaded = "rules: [{name: spike, kind: template_spike, factor: 4, baseline: 5, min_count: 10, window: 60s}]"
    engine = AlertEngine(rules(loaded)[0], warmup_lines=0)
    for w in range(6):  # five quiet windows: 3 lines a minute
        engine.observe([ev(T0 + w * 60 + i) for i in range(3)])
    engine, _ = _restarted(engine, loaded)
    out = engine.observe([ev(T0 + 6 * 60 + i * 0.5) for i in range(40)])
    assert [a.state for a in out] == ["firing"] and out[0].baseline == 3.0


# -- the engine's state per owner (several Kafka workers: streams.runtime.alerting) -----------------
def test_the_state_is_keyed_by_partition_and_the_global_part_goes_with_partition_0():
    from streams.alerts import GLOBAL_SCOPE, partition_scope, scopes_held

    assert partition_scope(0) == "p0" and partition_scope(11) == "p11"
    assert scopes_held({0, 3}, 4) == {"p0", "p3", GLOBAL_SCOPE}
    assert scopes_held({1, 2, 3}, 4) == {"p1", "p2", "p3"}  # no global part without 0
    assert scopes_held(set(), 4) == set()
    assert scopes_held({0, 1, 2, 3}, 4) == {"p0", "p1", "p2", "p3", GLOBAL_SCOPE}
    assert scopes_held({5}, 4) == set()  # not a partition of the topic


OWNED = ("warmup_lines: 0\nrules: [{name: errs, kind: error_flood, level: ERROR, threshold: 3, "
         "window: 60s, group_by: host}, {name: all, kind: error_flood, level: ERROR, "
         "threshold: 3, window: 60s}, {name: new, kind: new_template}]")


def test_each_owner_snapshots_its_own_groups_and_the_global_part_the_global_rules():
    import json

    start = T0 - T0 % 60
    engine = AlertEngine(rules(OWNED)[0], warmup_lines=0)
    out = engine.observe([ev(start + i, level="ERROR", host="web1") for i in range(3)], owner="p0")
    out += engine.observe([ev(start + i, level="ERROR", host="web2", template="T2")
                           for i in range(3)], owner="p1")
    assert {(a.rule, a.group): engine.owner_of(a) for a in out} == {
        ("new", "T1"): "global", ("errs", "web1"): "p0", ("all", "*"): "global",
        ("new", "T2"): "global", ("errs", "web2"): "p1"}
    p0, p1, glob = (json.loads(json.dumps(engine.snapshot(o))) for o in ("p0", "p1", "global"))
    assert [(g[0], g[2]) for g in p0["groups"]] == [("errs", "web1")]
    assert [(g[0], g[2]) for g in p1["groups"]] == [("errs", "web2")]
    assert sorted((g[0], g[2]) for g in glob["groups"]) == [("all", "*"), ("new", "T1"),
                                                             ("new", "T2")]
    assert p0["seen_templates"] == [] and glob["seen_templates"] == ["T1", "T2"]
    assert {r for r, _, _ in p1["fired"]} == {"errs"} and {r for r, _, _ in glob["fired"]} == {
        "all", "new"}
    # everything, as one process saves it
    assert len(engine.snapshot()["groups"]) == 5


def test_a_partition_taken_over_joins_a_running_engine_and_leaves_the_others_alone():
    """Worker B holds p1 (web2 flooding, its alert open) and takes p0 from A: web1's open
    alert carries over (no second firing), web2's window is untouched, and dropping p1 later
    forgets web2 only."""
    import json

    start = T0 - T0 % 60
    a = AlertEngine(rules(OWNED)[0], warmup_lines=0)
    fired_a = a.observe([ev(start + i, level="ERROR", host="web1") for i in range(3)], owner="p0")
    b = AlertEngine(rules(OWNED)[0], warmup_lines=0)
    b.observe([ev(start + i, level="ERROR", host="web2") for i in range(4)], owner="p1")
    p0 = json.loads(json.dumps(a.snapshot("p0")))
    assert b.restore(p0, [], now=start + 10, owner="p0") == []
    assert sorted((x.rule, x.group) for x in b.open_alerts() if x.rule == "errs") == [
        ("errs", "web1"), ("errs", "web2")]
    # web1 keeps flooding at B: its alert is the one A raised
    assert b.observe([ev(start + 20 + i, level="ERROR", host="web1") for i in range(5)],
                     owner="p0") == []
    assert [x.id for x in b.open_alerts() if x.group == "web1"] == [
        x.id for x in fired_a if x.rule == "errs"]
    assert b.drop("p1") == 1
    assert [x.group for x in b.open_alerts() if x.rule == "errs"] == ["web1"]
    # a record of p0 written after the save (A resolved it just before the move) is applied
    b2 = AlertEngine(rules(OWNED)[0], warmup_lines=0)
    resolved = dict(vars(next(x for x in fired_a if x.rule == "errs")), state="resolved")
    b2.restore(p0, [resolved], now=start + 10, owner="p0")
    assert [x.group for x in b2.open_alerts() if x.rule == "errs"] == []


def test_the_facts_of_two_workers_raise_what_one_process_seeing_every_line_raises():
    """Template spikes, a source's silence, an ungrouped burst, new templates and a host
    flood over several windows, the lines of 4 hosts split over 2 workers by partition: the
    alerts of the split (host rules at each worker, the global ones at the judge over the
    facts, where lines only spikes and silences count are counted, not copied) are those of
    one engine that saw every line, counts included; and far fewer facts than lines."""
    import random

    from streams.alerts import assign_rules, facts_of, placement

    text = """warmup_lines: 20
rules:
  - {name: new, kind: new_template, window: 60s}
  - {name: spike, kind: template_spike, factor: 3, baseline: 3, min_count: 20, window: 60s}
  - {name: quiet, kind: silence, windows: 2, window: 60s, group_by: source}
  - {name: burst, kind: anomaly_burst, threshold: 5, window: 60s}
  - {name: flood, kind: error_flood, threshold: 8, window: 60s, group_by: host}
"""
    loaded, warmup = rules(text)
    rng = random.Random(7)
    hosts = {"web1": 0, "web2": 1, "db1": 0, "db2": 1}  # host -> partition
    batches = []  # (partition, events), in time order
    start = T0 - T0 % 60
    for minute in range(8):
        for second in range(0, 60, 5):
            t = start + minute * 60 + second
            for host, p in hosts.items():
                if host == "db2" and minute >= 4:
                    continue  # db2's source goes quiet
                n = 36 if (minute == 5 and host.startswith("web")) else 6  # a spike of T1
                events = [{**ev(t + i * 0.01, host=host, template="T1",
                                level="ERROR" if minute == 6 and host == "web1" else "INFO",
                                anomaly=rng.random() < 0.05),
                           "id": f"{host}-{t}-{i}", "source": host} for i in range(n)]
                if minute == 3 and second == 10:
                    events.append({**ev(t + 0.5, host=host, template=f"N-{host}"),
                                   "id": f"{host}-{t}-new", "source": host})
                batches.append((p, events))
    one = AlertEngine(loaded, warmup_lines=warmup)
    expected = [a for _, events in batches for a in one.observe(events)]
    expected += one.tick(start + 9 * 60)

    plans = [assign_rules(loaded, held, 2) for held in ({0}, {1})]
    workers = [AlertEngine(loaded, warmup_lines=warmup) for _ in plans]
    glob = tuple(r for r in loaded if placement(r) == "global")
    passed, got, lines, facts = [set(), set()], [], 0, 0
    for p, events in batches:
        local = plans[p][0]
        got += workers[p].observe(events, local, f"p{p}", lines=0)
        sent = facts_of(tuple(r for r in glob if r not in local), events, passed[p])
        lines, facts = lines + len(events), facts + len(sent)
        got += workers[0].observe(sent, plans[0][1], "global", lines=len(events))  # the judge
    got += workers[0].tick(start + 9 * 60, plans[0][1]) + workers[0].tick(start + 9 * 60,
                                                                          plans[0][0])
    got += workers[1].tick(start + 9 * 60, plans[1][0])

    def key(a):
        return (a.rule, a.group, a.state, a.window_start, a.count)

    assert {a.rule for a in expected} >= {"new", "spike", "quiet", "burst", "flood"}, expected
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert facts < lines / 3, (facts, lines)  # (batches of 6 lines here; of hundreds live)


def test_the_cap_of_a_host_rule_holds_over_every_workers_firings():
    """Two workers each raise 2 host alerts of a rule capped at 3 per window: admitted at the
    holder of partition 0, 3 go through and one notice; the 4th firing's resolution is held
    back too; a worker's own notice counts as a firing held back (one notice per window)."""
    from streams.alerts import assign_rules

    loaded, _ = rules("rules: [{name: errs, kind: error_flood, threshold: 1, window: 60s, "
                      "group_by: host, max_per_window: 3}]")
    plans = [assign_rules(loaded, held, 2) for held in ({0}, {1})]
    workers = [AlertEngine(loaded, warmup_lines=0) for _ in plans]
    raised = [a for k, w in enumerate(workers) for i in range(2)
              for a in w.observe([ev(T0 + i, host=f"h{k}{i}", level="ERROR")], plans[k][0])]
    assert [a.state for a in raised] == ["firing"] * 4  # each worker is under the cap alone
    judge = workers[0]
    out = [x for a in raised for x in judge.admit(a)]
    assert [(a.state, a.group) for a in out] == [("firing", "h00"), ("firing", "h01"),
                                                 ("firing", "h10"), ("suppressed", "*")]
    resolved = [x for w, p in zip(workers, plans) for x in w.tick(T0 + 180, p[0])]
    assert sorted(a.group for a in resolved) == ["h00", "h01", "h10", "h11"]
    assert sorted(x.group for a in resolved for x in judge.admit(a)) == ["h00", "h01", "h10"]
    late = Alert("errs|*|x|suppressed", "errs", "error_flood", "*", "suppressed", T0, T0 + 60, 0)
    assert judge.admit(late) == []  # the window's notice was given


def test_the_window_notice_of_the_cap_over_every_worker_is_not_given_again_after_a_restart():
    """The holder of partition 0 admitted 3 host alerts and gave the window's notice, then
    saved the global part; its successor takes it up: a 5th firing of that window is held
    back without a second notice, and if the successor judges the rule alone (it holds every
    partition now) it fires no 4th alert and gives no second notice either."""
    from streams.alerts import GLOBAL_SCOPE

    loaded, _ = rules("rules: [{name: errs, kind: error_flood, threshold: 1, window: 60s, "
                      "group_by: host, max_per_window: 3}]")
    worker, judge = AlertEngine(loaded, warmup_lines=0), AlertEngine(loaded, warmup_lines=0)
    raised = [a for i in range(4) for a in worker.observe([ev(T0 + i, host=f"h{i}",
                                                                 level="ERROR")])]
    out = [x for a in raised[:3] for x in judge.admit(a)]
    out += [x for a in raised[3:] for x in judge.admit(a)]
    assert [a.state for a in out] == ["firing"] * 3 + ["suppressed"]
    state = judge.snapshot(GLOBAL_SCOPE)
    successor = AlertEngine(loaded, warmup_lines=0)
    successor.restore(state, owner=GLOBAL_SCOPE)
    late = Alert(f"errs|h9|{T0:.0f}", "errs", "error_flood", "h9", "firing", T0, T0 + 60, 1)
    assert successor.admit(late) == []
    alone = AlertEngine(loaded, warmup_lines=0)
    alone.restore(state, owner=GLOBAL_SCOPE)
    assert alone.observe([ev(T0 + 5, host="h8", level="ERROR")]) == []
