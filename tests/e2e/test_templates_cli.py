"""`smartlogs templates` (list, show, mark) against a real `smartlogs up` process."""

from __future__ import annotations

import json

import httpx

from tests.e2e.test_cli_embedded import _cli, _wait_total, platform  # noqa: F401 - the fixture

T0 = 1_700_000_000


def test_templates_list_show_and_mark(platform):  # noqa: F811
    url = platform
    events = [{"message": f"cache warmed in region {r}", "host": "h", "timestamp": T0 + i}
              for i, r in enumerate(["a1b2", "c3d4x", "e5f6yy"])]
    events.append({"message": "replica lagging behind primary", "host": "h", "timestamp": T0 + 60})
    assert httpx.post(f"{url}/ingest", json=events).status_code == 202
    assert _wait_total(url, 4) == 4
    rows = httpx.get(f"{url}/api/templates").json()["templates"]
    cache, replica = rows[0]["id"], rows[1]["id"]

    r = _cli("templates", url=url)
    assert r.returncode == 0, r.stderr
    assert "2 template(s), by count" in r.stdout and "cache warmed in region <*>" in r.stdout
    assert r.stdout.index(cache) < r.stdout.index(replica)
    r = _cli("templates", "--sort", "first-seen", "--since", str(T0 + 30), url=url)
    assert r.returncode == 0, r.stderr
    assert replica in r.stdout and "cache warmed" not in r.stdout
    r = _cli("templates", "--json", "--limit", "1", url=url)
    assert r.returncode == 0 and json.loads(r.stdout)["templates"][0]["id"] == cache
    r = _cli("templates", "show", replica, "--json", url=url)
    assert r.returncode == 0 and json.loads(r.stdout)["examples"] == ["replica lagging behind primary"]
    r = _cli("templates", "--sort", "size", url=url)
    assert r.returncode == 1 and "--sort must be count, first-seen or last-seen" in r.stderr

    r = _cli("templates", "mark", cache, "always-alert", "--note", "page me", url=url)
    assert r.returncode == 0, r.stderr
    assert f"{cache}: marked always-alert" in r.stdout
    r = _cli("templates", "show", cache, url=url)
    assert r.returncode == 0, r.stderr
    for text in ("cache warmed in region <*>", "marked always-alert", "generalised",
                 "cache warmed in region a1b2", "marked always-alert: page me", "created"):
        assert text in r.stdout, (text, r.stdout)
    r = _cli("templates", "mark", cache, "bogus", url=url)
    assert r.returncode == 1 and "expected, always-alert or none" in r.stderr
    r = _cli("templates", "show", "T99999", url=url)
    assert r.returncode == 1 and "404" in r.stderr and "no template T99999" in r.stderr
    r = _cli("templates", "mark", cache, "none", url=url)
    assert r.returncode == 0 and "mark cleared" in r.stdout
