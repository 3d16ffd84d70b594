"""The console shows each event's source and filters by it (issue 19), in headless Chromium
against a real `smartlogs` API process (the fixtures of test_console_browser)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.e2e.test_console_browser import (_browser_errors, _click, _console, _js, _rows,  # noqa: F401
                                            _text, _wait, _wait_stored, browser, platform)

_SOURCES = "return [...document.querySelectorAll('#{} td.source')].map(e => e.textContent)"


def _post(url: str, rows: list[dict], stream: str | None = None) -> None:
    headers = {"Content-Type": "application/x-ndjson"}
    if stream:
        headers["X-SmartLogs-Stream"] = stream
    r = httpx.post(f"{url}/ingest", content=b"\n".join(orjson.dumps(x) for x in rows),
                   headers=headers, timeout=10)
    assert r.status_code == 202, r.text


@pytest.mark.timeout(120)
def test_console_shows_the_source_column_and_filters_by_source(platform, browser):  # noqa: F811
    url, drv = platform, browser
    _post(url, [{"raw": f"order {i} accepted for checkout"} for i in range(3)], "orders.log")
    _post(url, [{"raw": f"invoice {i} sent to customer"} for i in range(2)], "billing.log")
    _post(url, [{"message": "payment refused", "host": "web-1"}])
    _wait_stored(url, 6)

    _console(drv, url, "search")
    headers = _js(drv, "return [...document.querySelectorAll('#view-search thead th')].map(e => e.textContent)")
    assert headers[1] == "source"
    _click(drv, "#search-go")
    _wait(lambda: _rows(drv, "search-body") == 6, "every event")
    assert sorted(_js(drv, _SOURCES.format("search-body"))) == sorted(
        ["orders.log"] * 3 + ["billing.log"] * 2 + ["web-1"])

    # a source in a row is a link: it filters the search on that source
    _js(drv, "[...document.querySelectorAll('#search-body td.source button')]"
             ".find(b => b.textContent === 'billing.log').click()")
    _wait(lambda: _rows(drv, "search-body") == 2, "the events of billing.log")
    assert _js(drv, "return document.getElementById('search-source').value") == "billing.log"
    assert _js(drv, _SOURCES.format("search-body")) == ["billing.log"] * 2
    assert _text(drv, "search-summary").startswith("2 matching")

    # typed into the filter, a host is a source too
    box = drv.find_element("css selector", "#search-source")
    box.clear()
    box.send_keys("web-1")
    _click(drv, "#search-go")
    _wait(lambda: _js(drv, _SOURCES.format("search-body")) == ["web-1"], "the events of web-1")

    # the live tail filters by source as well
    _js(drv, "window.smartlogsConsole.showView('tail')")
    drv.find_element("css selector", "#tail-source").send_keys("orders.log")
    _wait(lambda: _js(drv, "const t = window.smartlogsConsole.tail; return !!t.filters && "
                           "JSON.parse(t.filters).source === 'orders.log'") and _text(drv, "conn") == "live",
          "the tail restarted on the source filter")
    _post(url, [{"raw": "order 9 accepted for checkout"}], "orders.log")
    _post(url, [{"raw": "invoice 9 sent to customer"}], "billing.log")
    _wait(lambda: _js(drv, "return window.smartlogsConsole.tail.received") >= 1, "a live event")
    _wait(lambda: set(_js(drv, _SOURCES.format("tail-body")) or ["-"]) == {"orders.log"},
          "only orders.log in the tail")
    assert _browser_errors(drv) == []
