"""The template catalog's pure parts: the miner's change records, the pipeline's catalog
records, feedback marks in scoring (streams.catalog, streams.templates, streams.scoring)."""

import pickle

import pytest

from streams.catalog import (ALWAYS_ALERT, EXPECTED, carry_marks, change_from_miner,
                             normalise_mark, pick_examples)
from streams.pipeline import Pipeline, PipelineConfig
from streams.scoring import AnomalyScorer
from streams.templates import TemplateMiner

AUTH = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=10.0.0.{} user={}"


def test_the_miner_notes_a_generalisation_and_keeps_the_id():
    m = TemplateMiner()
    m.changes = []
    # (an id-like value: a plain word that differs alone starts a sibling template instead)
    a = m.mine("Connection closed by user-a1b2 port 22")
    assert m.changes == []  # a new template: "created" is derived, not noted
    b = m.mine("Connection closed by user-c3d4x port 22")
    assert b.template_id == a.template_id  # generalised, same id
    assert m.changes == [("generalised", a.template_id, "Connection closed by user-<*> port <NUM>",
                          "Connection closed by user-a1b2 port <NUM>", None)]
    m.changes.clear()
    m.mine("Connection closed by user-e5f6yy port 22")  # covered already: no change
    assert m.changes == []


def test_the_miner_notes_nothing_unless_someone_listens():
    m = TemplateMiner()
    m.mine("Connection closed by alice port 22")
    m.mine("Connection closed by bob port 22")
    assert m.changes is None


def test_the_miner_notes_a_merge_into_the_surviving_id():
    m = TemplateMiner()
    m.changes = []
    ids = [m.mine(AUTH.format(i, u)).template_id
           for i, u in enumerate(["root", "ftp", "git", "mysql"])]
    m.changes.clear()
    m.mine(AUTH.format(9, "uucp"))
    merged = [c for c in m.changes if c[0] == "merged"]
    name = min(ids)  # the merged template is named by the smallest member id
    assert sorted(c[1] for c in merged) == sorted(set(ids) - {name})
    assert {c[4] for c in merged} == {name}
    gen = [c for c in m.changes if c[0] == "generalised"]
    assert gen and gen[0][1] == name and gen[-1][2].endswith("user=<*>")


def test_ids_survive_a_checkpoint_and_a_generalisation():
    p = Pipeline(PipelineConfig())
    first = p.process([{"id": "a", "raw": "Connection closed by user-a1b2 port 22",
                        "received": 1.0}])
    p2 = pickle.loads(pickle.dumps(p))
    again = p2.process([{"id": "b", "raw": "Connection closed by user-c3d4x port 23",
                         "received": 2.0}])
    assert again[0]["template_id"] == first[0]["template_id"]
    assert again[0]["template"] == "Connection closed by user-<*> port <NUM>"
    new = p2.process([{"id": "c", "raw": "Something else entirely happened", "received": 3.0}])
    assert new[0]["template_id"] != first[0]["template_id"]


def test_the_pipeline_makes_deterministic_catalog_records():
    def run():
        p = Pipeline(PipelineConfig())
        p.process([{"id": "a", "raw": "Connection closed by user-a1b2 port 22", "received": 100.0},
                   {"id": "b", "raw": "Connection closed by user-c3d4x port 22",
                    "received": 101.0}])
        return p.take_catalog(), p

    records, p = run()
    assert [r.kind for r in records] == ["generalised"]
    r = records[0]
    assert r.id == f"b/generalised/{r.template_id}" and r.at == 101.0
    assert r.example == "Connection closed by user-c3d4x port 22"
    assert r.previous == "Connection closed by user-a1b2 port <NUM>"
    assert p.take_catalog() == []  # taken
    assert run()[0] == records  # the same input makes the same records (a replay)


def test_a_checkpoint_from_before_the_catalog_loads(tmp_path):
    from streams.runtime.checkpoints import load_checkpoint, save_checkpoint

    p = Pipeline(PipelineConfig())
    p.miner.changes = None
    del p.catalog
    del p.scorer.__dict__["marks"]
    save_checkpoint(p, tmp_path / "ck")
    q = load_checkpoint(tmp_path / "ck", PipelineConfig())
    q.process([{"id": "a", "raw": "Connection closed by user-a1b2 port 22", "received": 1.0},
               {"id": "b", "raw": "Connection closed by user-c3d4x port 22", "received": 2.0}])
    assert [c.kind for c in q.take_catalog()] == ["generalised"] and q.scorer.marks == {}


def test_change_from_miner_cuts_long_lines():
    c = change_from_miner(("generalised", "T1", "a <*>", "a b", None), event_id="e", ts=1.0,
                          line="x" * 10_000)
    assert len(c.example) == 2000 and c.previous == "a b" and c.into is None


@pytest.mark.parametrize("word,mark", [("expected", EXPECTED), ("always_alert", ALWAYS_ALERT),
                                       ("Always-Alert", ALWAYS_ALERT), ("none", None), ("", None)])
def test_mark_words(word, mark):
    assert normalise_mark(word) == mark


def test_an_unknown_mark_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="expected, always_alert, none"):
        normalise_mark("ignore")


def test_a_mark_follows_a_merge_unless_the_survivor_has_one():
    assert carry_marks({"T7": EXPECTED, "T8": ALWAYS_ALERT, "T3": ALWAYS_ALERT},
                       {"T7": "T3", "T8": "T4"}) == {
        "T7": EXPECTED, "T8": ALWAYS_ALERT, "T3": ALWAYS_ALERT, "T4": ALWAYS_ALERT}


def test_examples_are_bounded_and_keep_first_and_last():
    assert pick_examples("first", [f"c{i}" for i in range(10)], "last", limit=5) == [
        "first", "c7", "c8", "c9", "last"]
    assert pick_examples(None, [], None) == []
    assert pick_examples("same", ["same"], "same") == ["same"]


# -- feedback in scoring ------------------------------------------------------------------------
def _x(s, tid="T1", seen=10, new=False, level="INFO", ts=0.0):
    return s.features(template_id=tid, seen_before=seen, is_new=new, level=level, tokens=8,
                      parsed=True, host="h", window_start=ts - ts % 60, ts=ts)


def _warm():
    s = AnomalyScorer(window_size=50, min_score=0.0, quantile=0.9)
    for i in range(400):
        s.score(*_x(s, seen=i, ts=float(i)))
    return s


def test_expected_stops_novelty_and_rarity_but_learning_goes_on():
    plain, marked = _warm(), _warm()
    marked.marks["T99"] = EXPECTED
    a = plain.score(*_x(plain, tid="T99", seen=0, new=True, ts=401.0))
    b = marked.score(*_x(marked, tid="T99", seen=0, new=True, ts=401.0))
    assert a.is_anomaly and "first time" in a.reason
    assert not b.is_anomaly and b.score < a.score
    assert b.features["novelty"] == b.features["rarity"] == b.features["new_template"] == 0.0
    assert marked.singletons == plain.singletons  # the pattern was learned all the same


def test_always_alert_flags_a_common_line_and_says_why():
    s = _warm()
    assert not s.score(*_x(s, seen=400, ts=400.0)).is_anomaly
    s.marks["T1"] = ALWAYS_ALERT
    r = s.score(*_x(s, seen=401, ts=401.0))
    assert r.is_anomaly and r.reason == "pattern T1 is marked always-alert"
    del s.marks["T1"]
    assert not s.score(*_x(s, seen=402, ts=402.0)).is_anomaly


def test_always_alert_flags_during_warm_up_too():
    s = AnomalyScorer(window_size=50)
    s.marks["T1"] = ALWAYS_ALERT
    r = s.score(*_x(s))
    assert r.warming_up and r.is_anomaly and "always-alert" in r.reason


def test_marks_survive_a_checkpoint_and_old_scorers_load_without():
    s = AnomalyScorer()
    s.marks["T1"] = EXPECTED
    assert pickle.loads(pickle.dumps(s)).marks == {"T1": EXPECTED}
    state = s.__getstate__()
    del state["marks"]
    old = AnomalyScorer.__new__(AnomalyScorer)
    old.__setstate__(state)
    assert old.marks == {}


def test_records_nobody_takes_are_bounded(monkeypatch):
    import streams.pipeline as pl

    monkeypatch.setattr(pl, "MAX_PENDING_CHANGES", 10)
    p = Pipeline(PipelineConfig())
    for i in range(30):  # each pair: a new template (its own first word), then its generalisation
        unit = "unit" + chr(97 + i % 26) + chr(97 + i // 26)
        p.process([{"id": f"a{i}", "raw": f"{unit} finished step alpha", "received": 1.0},
                   {"id": f"b{i}", "raw": f"{unit} finished step beta", "received": 2.0}])
    kept = p.take_catalog()
    assert 5 <= len(kept) <= 10 and kept[-1].id == "b29/generalised/" + kept[-1].template_id


# -- one catalog for many miners (issue 18): the canonical-id rule --------------------------------
def test_the_canonical_id_of_a_text_is_the_smallest_id_recorded_with_it():
    from streams.catalog import canonical_id, converge, text_links

    pairs = [("Tb", "user <*> logged in"), ("Ta", "disk <*> full"), ("Tc", "user <*> logged in"),
             ("Ta", "disk <*> full"), ("T0", "(unprocessable)"), ("T0", "disk <*> full")]
    links = text_links(pairs)
    assert converge(links, {}) == {"Tc": "Tb"}  # T0 (unprocessable) is never linked
    assert canonical_id(["Tc", "Tb", "Td"]) == "Tb"


def test_the_rule_gives_the_same_aliases_whatever_order_the_facts_come_in():
    import itertools

    from streams.catalog import converge

    facts = [("T5", "T3"), ("T9", "T5"), ("T2", "T8"), ("T8", "T9"), ("T7", "T6")]
    results = set()
    for order in itertools.permutations(facts):
        aliases: dict[str, str] = {}
        for link in order:  # learned one at a time, as stores do, batch after batch
            aliases.update(converge([link], aliases))
        results.add(tuple(sorted(aliases.items())))
    assert results == {(("T3", "T2"), ("T5", "T2"), ("T7", "T6"), ("T8", "T2"), ("T9", "T2"))}


def test_a_merge_in_each_direction_by_two_miners_makes_no_cycle():
    from streams.catalog import converge

    aliases = converge([("Tg", "Tr")], {})  # one miner merged g into r, the other r into g
    aliases.update(converge([("Tr", "Tg")], aliases))
    assert aliases == {"Tr": "Tg"}


def test_a_template_the_catalog_renames_keeps_what_the_scorer_learned_of_it():
    p = Pipeline(PipelineConfig(hst_window=50))
    items = [{"id": f"i{k}", "raw": f"job {k} finished on node1 in {k % 7} ms", "host": "h",
              "received": 1.7e9 + k} for k in range(60)]
    old = p.process(items)[-1]["template_id"]
    p.scorer.marks[old] = EXPECTED
    learned = list(p.scorer.templates._state[old])
    assert p.adopt_aliases({old: "T000000000001"}) == {old: "T000000000001"}
    assert old not in p.scorer.templates._state
    assert p.scorer.templates._state["T000000000001"] == learned
    assert not any(k[1] == old for k in p.scorer.pairs._state)
    assert p.scorer.marks["T000000000001"] == EXPECTED
    nxt = p.process([{"id": "n", "raw": "job 99 finished on node1 in 3 ms", "host": "h",
                      "received": 1.7e9 + 99}])[0]
    assert nxt["template_id"] == "T000000000001"
    assert p.adopt_aliases({old: "T000000000001"}) == {}  # taken already
