from streams.templates import TemplateMiner


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
    assert m2.mine("user carol logged in").template_id == b.template_id
    assert m2.template_count == 2


def test_bump_ids_never_reuses_a_stored_id():
    m = TemplateMiner()
    m.bump_ids_past(41)
    assert m.mine("anything at all").template_id == "T42"


def test_garbage_never_raises():
    m = TemplateMiner()
    for s in ["", " ", "\x00\x01", "😀" * 100, "a" * 100000]:
        assert m.mine(s).template_id.startswith("T")
