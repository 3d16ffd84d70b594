from streams.templates import STATE_VERSION, TemplateMiner


def test_masked_variables_share_a_template():
    m = TemplateMiner()
    a = m.mine("Connection from 10.1.2.3 port 5555 closed after 12.5 seconds")
    b = m.mine("Connection from 192.168.0.77 port 80 closed after 3 seconds")
    assert a.template_id == b.template_id
    assert a.is_new and not b.is_new
    assert b.seen_before == 1
    assert "<IP>" in b.template and "<NUM>" in b.template
    assert b.params == ["192.168.0.77", "80", "3"]


def test_hex_paths_and_emails_are_masked():
    m = TemplateMiner()
    r = m.mine("user bob@example.com opened /var/log/app/x.log at 0xdeadbeef")
    assert r.template == "user <EMAIL> opened <PATH> at <HEX>"


def test_different_messages_get_different_templates_and_state_survives_pickle():
    import pickle

    m = TemplateMiner()
    a = m.mine("disk full on /dev/sda1")
    b = m.mine("user alice logged in")
    assert a.template_id != b.template_id
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.mine("user alice logged in").template_id == b.template_id
    assert m2.mine("disk full on /dev/sdb2").template_id == a.template_id
    assert m2.template_count == 2


def test_a_patterns_first_line_gets_the_same_id_in_every_miner_whatever_came_before():
    """Issue 18: ids come from the text a template is made from, not from a counter, so two
    miners (workers, shards) fed the same lines in different orders name each pattern's first
    line alike."""
    lines = ["disk full on /dev/sda1", "user alice logged in", "session closed for user 7",
             "Accepted password for root from 10.0.0.1 port 22 ssh2",
             "connection reset by peer 10.0.0.2", "worker 3 started in 12 ms"]
    one, two = TemplateMiner(), TemplateMiner()
    first = {x: one.mine(x).template_id for x in lines}
    two.mine("some other pattern seen only here 1")
    two.mine("and another one 2 here")
    second = {x: two.mine(x).template_id for x in reversed(lines)}
    assert first == second
    assert len(set(first.values())) == len(lines)
    assert all(t.startswith("T") and len(t) == 13 for t in first.values())
    assert "T0" not in first.values()  # T0 stays the unprocessable lines' id


def test_the_id_survives_generalisation():
    m = TemplateMiner()
    a = m.mine("job 17 finished on node1 in 3 ms")
    b = m.mine("job 18 finished on node1 in 9 ms")
    c = m.mine("job 19 finished on node2 in 2 ms")  # another variable position
    assert a.template_id == b.template_id == c.template_id
    assert c.template != a.template
    fresh = TemplateMiner()
    fresh.mine("an unrelated line comes first here")
    assert fresh.mine("job 17 finished on node1 in 3 ms").template_id == a.template_id


def test_an_id_taken_inside_one_miner_is_rehashed_deterministically():
    from streams.templates import template_id_for

    m = TemplateMiner()
    taken = m.mine("alpha beta gamma").template_id
    clash = template_id_for(["delta", "epsilon", "zeta"])
    m._rename(m._live(taken), clash)  # as if "alpha beta gamma" hashed like "delta ..."
    again = m.mine("delta epsilon zeta").template_id
    assert again == template_id_for(["delta", "epsilon", "zeta"], 1) != clash
    assert m.mine("alpha beta gamma").template_id == clash


def test_adopt_renames_a_template_to_the_catalogs_id_and_remembers_the_alias():
    m = TemplateMiner()
    a = m.mine("job 17 finished in 3 ms").template_id
    assert m.adopt({a: "T000000000001"}) == {a: "T000000000001"}
    assert m.mine("job 18 finished in 5 ms").template_id == "T000000000001"
    assert m.resolve(a) == "T000000000001"
    assert m.adopt({a: "T000000000001"}) == {}  # idempotent
    assert m.adopt({"Tffffffffffff": "T000000000001"}) == {}  # an id not used here: not kept
    assert "Tffffffffffff" not in m.aliases
    # two kept templates the catalog says are one: the alias's lines go to the canonical one
    b = m.mine("cache miss for key 12").template_id
    assert m.adopt({b: "T000000000001"}) == {b: "T000000000001"}
    assert m.mine("cache miss for key 99").template_id == "T000000000001"
    assert m.template_count == 1
    import pickle

    back = pickle.loads(pickle.dumps(m))
    assert back.mine("cache miss for key 7").template_id == "T000000000001"
    assert back.resolve(b) == "T000000000001"


def test_garbage_never_raises():
    m = TemplateMiner()
    for s in ["", " ", "\x00\x01", "😀" * 100, "a" * 100000]:
        assert m.mine(s).template_id.startswith("T")


def test_word_values_in_a_slot_merge_but_a_different_syntax_does_not():
    m = TemplateMiner(enumeration=1)  # no enumerations: a second user name is a value at once
    a = m.mine("session opened for user cyrus by (uid=0)")
    b = m.mine("session opened for user news by (uid=0)")
    c = m.mine("session opened for user root by LOGIN(uid=0)")
    assert a.template_id == b.template_id
    assert b.template == "session opened for user <*> by (uid=<NUM>)"
    assert c.template_id != a.template_id  # (uid=0) vs LOGIN(uid=0): another syntax


def test_an_empty_value_may_stand_for_a_filled_one():
    m = TemplateMiner()
    a = m.mine("connection from 1.2.3.4 (host.example.net) at 10:00")
    b = m.mine("connection from 5.6.7.8 () at 11:00")
    assert a.template_id == b.template_id


def test_established_leading_tokens_stay_constants():
    m = TemplateMiner()
    for i in range(5):
        first = m.mine(f"Failed password for invalid user u{i} from 10.0.0.{i} port {i} ssh2")
    other = m.mine("Failed none for invalid user bob from 10.0.0.9 port 22 ssh2")
    assert other.template_id != first.template_id
    young = TemplateMiner(enumeration=1)
    x = young.mine("Started job alpha on node-1")
    y = young.mine("Started task alpha on node-2")  # a young group may still generalise
    assert x.template_id == y.template_id


def test_numbers_and_hex_in_one_slot_are_one_variable():
    m = TemplateMiner()
    a = m.mine("63543 double-hummer alignment exceptions")
    b = m.mine("23431872 double-hummer alignment exceptions")  # masked as <HEX>
    assert a.template_id == b.template_id


def test_low_similarity_splits():
    m = TemplateMiner()
    a = m.mine("program interrupt: illegal instruction")
    b = m.mine("program interrupt: imprecise exception")  # half the tokens differ
    assert a.template_id != b.template_id


def test_checkpoint_of_the_drain3_miner_is_migrated():
    from drain3.drain import Drain

    old = Drain(sim_th=0.4, depth=4)
    cluster, _ = old.add_log_message("user <*> logged in")
    old.add_log_message("disk <PATH> is full")
    state = {"drain": old, "_tokens": {}, "_cache": {}, "cache_size": 100}
    m = TemplateMiner.__new__(TemplateMiner)
    m.__setstate__(state)
    assert m.template_count == 2
    assert m.mine("user alice logged in").template_id == f"T{cluster.cluster_id}"
    new = m.mine("something new entirely")
    assert new.is_new and new.template_id not in (f"T{cluster.cluster_id}", "T2")


def test_a_port_is_a_number_apart_from_its_address():
    m = TemplateMiner()
    a = m.mine("Received connection request /10.10.34.11:49949")
    b = m.mine("Received connection request /10.10.34.12:5")
    assert a.template_id == b.template_id
    assert b.template == "Received connection request /<IP>:<NUM>"
    assert b.params == ["10.10.34.12", "5"]  # the port is a number of its own


def test_a_generalised_slot_keeps_its_label_and_values_lose_it():
    m = TemplateMiner(enumeration=1)  # no enumerations: a second user name is a value at once
    head = "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser="
    m.mine(f"{head} rhost=10.0.0.1  user=root")
    b = m.mine(f"{head} rhost=host-7.example.net  user=guest")
    assert b.template.endswith("rhost=<*> user=<*>")
    c = m.mine(f"{head} rhost=10.0.0.9  user=test")  # matches the labelled slots
    assert c.template_id == b.template_id and c.template == b.template
    assert c.params == ["0", "0", "10.0.0.9", "test"]  # uid=0 gives the number 0


def test_generalise_keeps_constant_text_around_the_value():
    from streams.templates import _generalise

    assert _generalise("user=root", "user=guest") == "user=<*>"
    assert _generalise("(usable)", "(reserved)") == "(<*>)"
    assert _generalise("rhost=<IP>", "rhost=host-<NUM>.net") == "rhost=<*>"
    assert _generalise("<IP>:<NUM>", "<IP>:<HEX>") == "<IP>:<*>"
    assert _generalise("<NUM>", "<HEX>") == "<*>"  # no label: a plain placeholder
    assert _generalise("root", "alice") == "<*>"
    assert _generalise("user=<*>", "user=") == "user=<*>"  # an empty value fits the slot
    assert _generalise("ab=ab", "ab=") == "ab=<*>"  # label and ending never overlap


def test_values_of_differently_labelled_fields_do_not_merge():
    m = TemplateMiner()
    a = m.mine("data store interrupt caused by dcbf.........0")
    b = m.mine("data store interrupt caused by icbi.........0")  # 5 of 6 tokens agree
    assert a.template_id != b.template_id  # dcbf... / icbi...: the label is wording
    c = m.mine("program interrupt: illegal instruction......0")
    d = m.mine("program interrupt: illegal instruction......12")
    assert c.template_id == d.template_id and d.template.endswith("instruction......<NUM>")
    # a number glued to a word is an identifier (a value as a whole), not a labelled field
    e = m.mine("link down on node web3 now")
    f = m.mine("link down on node db1 now")
    assert e.template_id == f.template_id


def test_params_split_a_token_into_its_values():
    from streams.templates import _values

    out: list[str] = []
    _values("/10.0.0.1:22", ("/", ":", ""), out)
    _values("uid=0", ("uid=", ""), out)
    _values("garbage", ("/", ":", ""), out)  # does not fit: itself, and an empty value
    assert out == ["10.0.0.1", "22", "0", "garbage", ""]


def test_a_checkpoint_of_the_previous_state_version_is_migrated():
    import pickle

    m = TemplateMiner()
    a = m.mine("connection from 10.0.0.1:22 closed")
    state = m.__getstate__()
    state["version"] = 1  # as written before ports were masked apart
    state["_tokens"] = {"10.0.0.1:22": "<IP>"}
    state["_cache"] = {"connection from <IP> closed": m._cache["connection from <IP>:<NUM> closed"]}
    old = TemplateMiner.__new__(TemplateMiner)
    old.__setstate__(state)
    assert old.version == STATE_VERSION and old._tokens == {} and old._cache == {}
    assert old.template_count == 1
    again = old.mine("connection from 10.0.0.7:23 closed")
    assert again.template_id == a.template_id and not again.is_new
    assert pickle.loads(pickle.dumps(old)).mine("connection from 1.2.3.4:5 closed").template_id \
        == a.template_id


AUTH = "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=10.0.0.{} user={}"


def test_a_few_word_values_of_a_key_are_an_enumeration():
    m = TemplateMiner()  # enumeration=4
    root = [m.mine(AUTH.format(i, "root")) for i in range(20)]
    guest = m.mine(AUTH.format(1, "guest"))
    test = m.mine(AUTH.format(2, "test"))
    assert len({r.template_id for r in root}) == 1
    assert len({root[0].template_id, guest.template_id, test.template_id}) == 3
    assert guest.is_new and guest.template.endswith("user=guest")
    assert m.mine(AUTH.format(3, "guest")).template_id == guest.template_id
    assert m.mine(AUTH.format(4, "root")).template_id == root[0].template_id
    assert m.template_count == 3
    assert m.resolve(guest.template_id) == guest.template_id  # nothing merged yet


def test_an_enumeration_with_too_many_values_merges_into_one_variable():
    m = TemplateMiner()
    ids = [m.mine(AUTH.format(i, u)).template_id
           for i, u in enumerate(["root", "root", "ftp", "git", "mysql"])]
    assert len(set(ids)) == 4 and m.template_count == 4
    fifth = m.mine(AUTH.format(9, "uucp"))  # the fifth value: user= is a variable
    assert not fifth.is_new
    assert fifth.template_id == min(ids)  # one group takes the others over, named by the smallest
    assert fifth.template.endswith("rhost=<IP> user=<*>")
    assert fifth.params[-1] == "uucp"
    assert fifth.seen_before == 5  # the merged groups' lines count
    assert m.template_count == 1
    assert {m.resolve(t) for t in ids} == {min(ids)}  # ids emitted before the merge resolve
    # lines seen before (memoised on a merged group) and new names go to the merged group
    assert m.mine(AUTH.format(2, "ftp")).template_id == min(ids)
    assert m.mine(AUTH.format(5, "sshd")).template_id == min(ids)
    assert m.resolve("T999") == "T999" and m.resolve("unparsed") == "unparsed"


def test_enumerations_survive_a_checkpoint():
    import pickle

    m = TemplateMiner()
    ids = [m.mine(AUTH.format(i, u)).template_id for i, u in enumerate(["root", "ftp", "git"])]
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.mine(AUTH.format(7, "git")).template_id == ids[2]
    assert m2.mine(AUTH.format(7, "mysql")).is_new  # the fourth value, still apart
    merged = m2.mine(AUTH.format(7, "uucp"))
    name = merged.template_id
    assert name == min([*ids, m2.resolve(name)]) and m2.template_count == 1
    m3 = pickle.loads(pickle.dumps(m2))
    assert {m3.resolve(t) for t in ids} == {name}
    assert m3.mine(AUTH.format(8, "ftp")).template_id == name


def test_a_version_2_checkpoint_loads_without_enumerations():
    m = TemplateMiner()
    a = m.mine(AUTH.format(1, "root"))
    state = m.__getstate__()
    for key in ("aliases", "enumeration"):
        state.pop(key)
    state["version"] = 2
    for leaf in state["_leaves"].values():
        for g in leaf:
            g.family = None
    old = TemplateMiner.__new__(TemplateMiner)
    old.__setstate__(state)
    g = next(iter(old._leaves.values()))[0]
    g.__setstate__((g.cluster_id, g.tokens, g.size))  # how version 2 pickled a group
    assert old.mine(AUTH.format(2, "root")).template_id == a.template_id
    assert old.mine(AUTH.format(3, "guest")).is_new


def test_merges_name_the_surviving_id_and_its_text():
    m = TemplateMiner()
    assert m.merges() == {}
    ids = [m.mine(AUTH.format(i, u)).template_id
           for i, u in enumerate(["root", "ftp", "git", "mysql"])]
    assert m.merges() == {}  # four values: still an enumeration
    survivor = m.mine(AUTH.format(9, "uucp"))
    assert survivor.template_id == min(ids)
    assert m.merges() == {old: min(ids) for old in ids if old != min(ids)}


def test_underscore_and_tilde_join_an_identifier_not_a_label():
    """Package names of unlike shapes are values of one slot: ``_`` and ``~`` join the parts
    of one identifier, they do not end a label (issue 17)."""
    m = TemplateMiner()
    head = "Read out cached package applicability for package:"
    ids = {m.mine(f"{head} {pkg}~31bf3856ad364e35~amd64~~{v}, ApplicableState: 112, "
                  "CurrentState:112").template_id
           for pkg, v in (("Package_for_KB3121255", "6.1.1.0"), ("Package_for_KB2656356", "6.1.1.1"),
                          ("Package_for_KB3108664", "6.1.1.0"), ("Package_for_KB3108665", "6.1.1.0"),
                          ("Microsoft-Hyper-V-Integration-Services-Package", "6.3.9600.17681"),
                          ("Microsoft-Windows-PlatformUpdate-Win7-SRV08R2-Package-TopLevel",
                           "7.1.7601.16492"))}
    assert len(ids) == 1


def test_true_and_false_are_different_outcomes():
    m = TemplateMiner()
    a = m.mine("updateClipping isOverlap:false, getTopPadding=0.0, Translation=1.5")
    b = m.mine("updateClipping isOverlap:false, getTopPadding=2.0, Translation=3.5")
    c = m.mine("updateClipping isOverlap:true, getTopPadding=2.0, Translation=3.5")
    d = m.mine("key pressed down true canceled false")
    e = m.mine("key pressed down false canceled false")
    assert a.template_id == b.template_id != c.template_id
    assert d.template_id != e.template_id


def test_a_few_words_at_one_position_are_kinds_of_event():
    """A plain word that differs alone is an enumeration, like a ``key=word`` value: each of
    up to ``enumeration`` (4) words is a template of its own; the fifth merges them."""
    m = TemplateMiner()
    states = ["Started", "Paused", "Resumed", "Stopped"]
    ids = {s: m.mine(f"[instance: {i:08x}-aaaa] VM {s} (Lifecycle Event)").template_id
           for i, s in enumerate(states)}
    assert len(set(ids.values())) == 4
    again = m.mine("[instance: 0badcafe-bbbb] VM Paused (Lifecycle Event)")
    assert again.template_id == ids["Paused"] and not again.is_new
    assert again.template == "[instance: <HEX>-<*>] VM Paused (Lifecycle Event)"
    fifth = m.mine("[instance: 12345678-cccc] VM Crashed (Lifecycle Event)")
    # the merged template is named by the smallest of its members' ids (the catalog's rule)
    assert fifth.template_id == min(ids.values()) and m.template_count == 1
    assert fifth.template == "[instance: <HEX>-<*>] VM <*> (Lifecycle Event)"
    assert {m.resolve(t) for t in ids.values()} == {min(ids.values())}


def test_a_rare_word_beside_an_established_one_is_another_event():
    m = TemplateMiner()
    ids = {m.mine(f"Session: {i}_{i * 7} initialized by client UpdateAgent.").template_id
           for i in range(50)}
    other = m.mine("Session: 3_4 initialized by client SPP.")
    assert len(ids) == 1 and other.template_id not in ids


def test_words_shared_by_two_enumerations_are_values_of_a_variable():
    """The same words varying in two messages (the users who open sessions close them) are
    values (names), not kinds of event: both enumerations merge into ``<*>``."""
    m = TemplateMiner()
    got = []
    for user in ["cyrus", "news", "cyrus", "news", "test"]:
        got.append(m.mine(f"session opened for user {user} by (uid=0)").template_id)
        got.append(m.mine(f"session closed for user {user}").template_id)
    opened = {m.resolve(t) for t in got[0::2]}
    closed = {m.resolve(t) for t in got[1::2]}
    assert len(opened) == 1 and len(closed) == 1 and opened != closed
    assert m.template_count == 2
    t = m.mine("session closed for user root")
    assert t.template == "session closed for user <*>" and t.template_id in closed


def test_a_value_at_an_enumeration_position_makes_it_a_variable():
    m = TemplateMiner()
    a = m.mine("domain cluster_usr_backup is no longer served by node node-3")
    b = m.mine("domain root_domain is no longer served by node node-4")
    assert a.template_id != b.template_id  # two words: an enumeration so far
    c = m.mine("domain root28_domain is no longer served by node node-5")
    assert c.template_id == a.template_id and m.template_count == 1
    assert m.resolve(b.template_id) == a.template_id
    assert c.template == "domain <*> is no longer served by node node-<NUM>"


def test_paths_and_qualified_names_are_not_enumerations():
    m = TemplateMiner()
    a = m.mine("Registering class org.example.app.Foo for the event handler")
    b = m.mine("Registering class org.example.jobs.Baz for the event handler")
    c = m.mine("adding a path spec for /mapreduce/* to the server")
    d = m.mine("adding a path spec for /ws/* to the server")
    e = m.mine("opening the component app/Main of the package")
    f = m.mine("opening the component web/Login of the package")
    assert a.template_id == b.template_id and c.template_id == d.template_id
    assert e.template_id == f.template_id and m.template_count == 3


def test_month_and_weekday_names_of_a_date_are_values():
    m = TemplateMiner()
    a = m.mine("connection from 10.0.0.1 at Sat Jun 18 02:08:10 2005")
    b = m.mine("connection from 10.0.0.2 at Mon Jul 4 12:00:01 2005")
    assert a.template_id == b.template_id
    assert a.template == "connection from <IP> at <DATE> <DATE> <NUM> <NUM>:<NUM>:<NUM> <NUM>"
    c = m.mine("backup written on 3 May, next run Sunday")  # a name with no day beside it
    assert c.template == "backup written on <NUM> <DATE>, next run Sunday"
    assert m.mine("May I have the lock").template == "May I have the lock"


def test_enumerations_and_their_words_survive_a_checkpoint():
    import pickle

    m = TemplateMiner()
    m.mine("session opened for user cyrus by (uid=0)")
    m.mine("session opened for user news by (uid=0)")
    m.mine("session closed for user cyrus")
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.mine("session closed for user news").template == "session closed for user <*>"
    old = m.__getstate__()
    old.pop("_families")  # state version 4 kept no index of the enumerations' words
    m3 = TemplateMiner.__new__(TemplateMiner)
    m3.__setstate__(pickle.loads(pickle.dumps(old)))
    assert m3.mine("session closed for user news").template == "session closed for user <*>"


def test_a_quoted_string_is_one_value_whatever_it_holds():
    m = TemplateMiner()
    head = "release:lock=233570404, flg=0x0,"
    a = m.mine(f'{head} tag="View Lock", name=com.example.ui", ws=null, uid=10037, pid=2227')
    b = m.mine(f'{head} tag="*launch*", name=com.example.ui", ws=null, uid=1000, pid=1702')
    c = m.mine(f'{head} tag="AudioMix", name=com.example.ui", ws=null, uid=1041, pid=0')
    assert a.template_id == b.template_id == c.template_id
    assert c.template == ('release:lock=<HEX>, flg=<HEX>, tag="<*>", name=com.example.ui", '
                          'ws=null, uid=<NUM>, pid=<NUM>')
    again = m.mine(f'{head} tag="View Lock", name=com.example.ui", ws=null, uid=10037, pid=2227')
    assert again.params[2] == "View Lock" and c.params[2] == "AudioMix"
    # a stray quote with no closing one in reach does not join the tokens after it
    d = m.mine('name=com.example.ui", ws=null, uid=1, pid=2')
    assert d.template == 'name=com.example.ui", ws=null, uid=<NUM>, pid=<NUM>'


def test_a_null_value_stands_for_any_value():
    m = TemplateMiner()
    a = m.mine("acquire lock=1, flags=0x1, name=android, ws=null, uid=1000, pid=1702")
    b = m.mine("acquire lock=2, flags=0x1, name=android, ws=WorkSource{10113}, uid=1000, pid=1702")
    assert a.template_id == b.template_id
    assert b.template == ("acquire lock=<NUM>, flags=<HEX>, name=android, ws=<*>, uid=<NUM>, "
                          "pid=<NUM>")
    assert b.params[2] == "WorkSource{10113}"


def test_splitting_quoted_strings_is_bounded_and_linear():
    from streams.templates import QUOTE_SPAN, _split

    assert _split('say "a b c" now') == ['say', '"a b c"', 'now']
    far = 'x="' + " w" * QUOTE_SPAN + ' end"'
    assert len(_split(far)) == QUOTE_SPAN + 2  # the close is out of reach: not joined
    assert len(_split('"' * 100_001)) == 1 and _split(' " ' * 50_000) == ['" "'] * 25_000


_SHARED_SCRIPT = """
from streams.templates import TemplateMiner
m = TemplateMiner()
for msg, words in (("alpha job went", "ac"), ("beta task went", "bc"), ("gamma run went", "abc")):
    for w in words:
        m.mine(f"{msg} {dict(a='north', b='south', c='east')[w]} today")
print(sorted(m.merges().items()), sorted(g.template for leaf in m._leaves.values() for g in leaf))
"""


def test_enumerations_sharing_words_merge_alike_in_every_process():
    """Merges must not depend on the order of a set of strings (string hashing differs per
    process): a replay gives the same templates. Here the third enumeration's words are two
    of the first's and two of the second's: both merge, whatever PYTHONHASHSEED is."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    outs = set()
    for seed in range(6):
        env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": repo}
        r = subprocess.run([sys.executable, "-c", _SHARED_SCRIPT], env=env, cwd=repo,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1
    assert "alpha job went <*> today" in outs.pop()


def test_date_names_with_trailing_punctuation_and_long_tokens():
    """The date-name walk looks a token up by its word without trailing ',' and '.', and
    passes over tokens longer than ten characters (the walk was made cheaper: issue 18)."""
    from streams.templates import _mask_date_names

    toks = ["on", "Sat.,", "Jun.", "<NUM>", "and", "Wednesday,,,", "Jul", "<NUM>", "Mayday", "14"]
    _mask_date_names(toks)
    assert toks == ["on", "<DATE>.,", "<DATE>.", "<NUM>", "and", "Wednesday,,,", "<DATE>",
                    "<NUM>", "Mayday", "14"]
    toks = ["<DATE>", "Jun", "x", "Mon,", "May", "Fri", "x"]
    _mask_date_names(toks)
    assert toks == ["<DATE>", "<DATE>", "x", "<DATE>,", "May", "Fri", "x"]


def test_mined_values_are_those_of_the_message_split_on_its_own():
    """``mine`` splits a message once for its mask and its values; the values are those
    ``_params`` finds from the message alone, with and without quoted strings."""
    from streams.templates import _params

    m = TemplateMiner()
    lines = ["user=root uid=0 from 10.0.0.1:22", "user=news uid=12 from 10.0.0.2:2222",
             'tag="View Lock", uid=10037 pid=2227', 'tag="a b c", uid=1000 pid=1702',
             'odd " quote 42', 'odd " quote 43']
    for line in lines:
        got = m.mine(line)
        group = m._cache[m.mask(line)]
        while group.merged_into is not None:
            group = group.merged_into
        assert got.params == _params(line, group)


def _masked_token_by_token(miner: TemplateMiner, tokens: list[str]) -> list[str]:
    """The token memo as it was read before the fast path: one token at a time."""
    out: list[str] = []
    miner._mask_rest(tokens, 0, out)
    return out


def test_the_token_memo_read_at_once_masks_and_memoises_as_token_by_token():
    # a memo so small it is emptied in the middle of lines: the fast path (every token
    # memoised, read at once) and the slow one (from the first token not memoised) must
    # leave the same masks and the same memo, in the same order, as one token at a time
    lines = ["a 1 b 2 c 3", "a 1 b 2 c 3", "x 10.0.0.1 y 2 c 3", "a 1 b 2 c 3 z 4 5 6",
             "Jun 14 15:16:01 combo 4", "a 1 b 2 c 3"] * 3
    fast, slow = TemplateMiner(cache_size=5), TemplateMiner(cache_size=5)
    for line in lines:
        tokens = line.split()
        assert fast._masked(tokens) == _mask_date_names_of(slow, tokens)
        assert list(fast._tokens.items()) == list(slow._tokens.items())
        assert fast._memo_chars == slow._memo_chars


def _mask_date_names_of(miner: TemplateMiner, tokens: list[str]) -> list[str]:
    from streams.templates import _DATE_TOKENS, _mask_date_names

    out = _masked_token_by_token(miner, tokens)
    if not _DATE_TOKENS.isdisjoint(out):
        _mask_date_names(out)
    return out
