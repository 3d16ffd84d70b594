"""`smartlogs replay` names its file as the stream; `smartlogs sources` shows what was learned
(a real `smartlogs up` process and the CLI as a user runs them; issue 17)."""

from __future__ import annotations

import json

from tests.e2e.test_cli_embedded import _cli, _wait_total, platform  # noqa: F401 - fixture


def test_replay_then_sources_shows_the_learned_layout(platform, loghub):  # noqa: F811
    url = platform
    for name in ("Android", "Linux"):
        r = _cli("replay", str(loghub / name / f"{name}_2k.log"), "--batch-size", "500", url=url)
        assert r.returncode == 0, r.stderr
    assert _wait_total(url, 4000, timeout=90) == 4000
    r = _cli("sources", url=url)
    assert r.returncode == 0, r.stderr
    assert "Android_2k.log" in r.stdout and "ts:md int int level comp message" in r.stdout
    assert "built-in syslog" in r.stdout and "100.0%" in r.stdout
    doc = json.loads(_cli("sources", "--json", url=url).stdout)
    by = {s["source"]: s for s in doc["sources"]}
    assert by["Android_2k.log"]["lines"] == 2000 and by["Android_2k.log"]["parsed_share"] == 1.0
    assert by["Linux_2k.log"]["layout"] == "built-in syslog"
    found = json.loads(_cli("search", "printFreezingDisplayLogsopening", "--json", "--limit", "1",
                            url=url).stdout)["events"][0]
    assert found["format"] == "inferred" and found["level"] == "DEBUG"
    assert found["timestamp"].endswith("-03-17T16:13:38.811Z")  # no year in the line: this year's


def test_search_by_source_shows_and_filters_the_replayed_files(platform, tmp_path):  # noqa: F811
    """Issue 19: a replay names its events' source (the file's name); `smartlogs search`
    shows a source column and filters with --source."""
    url = platform
    lines = {"orders.log": [f"order {i} accepted for checkout" for i in range(6)],
             "billing.log": [f"invoice {i} sent to customer" for i in range(4)]}
    for name, text in lines.items():
        (tmp_path / name).write_text("\n".join(text) + "\n")
        r = _cli("replay", str(tmp_path / name), url=url)
        assert r.returncode == 0, r.stderr
    assert _wait_total(url, 10) == 10
    doc = json.loads(_cli("search", "--source", "billing.log", "--json", url=url).stdout)
    assert doc["total"] == 4
    assert {(e["source"], e["receiver"]) for e in doc["events"]} == {("billing.log", "http")}
    r = _cli("search", "--source", "orders.log", "--limit", "3", url=url)
    assert r.returncode == 0, r.stderr
    assert "│ source " in r.stdout.replace("┃", "│") and "billing.log" not in r.stdout
    assert r.stdout.count("│ orders.log │") == 3 and "6 matching events" in r.stdout
    # the next page's command keeps the filter
    assert "next page: smartlogs search --source orders.log --limit 3 --cursor" in r.stdout
