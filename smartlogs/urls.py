"""Checks on URLs a user gives (``--url``, ``--kibana-url``): a URL that can never answer is a
setup mistake, said at once rather than retried until a timeout."""

from __future__ import annotations

import httpx

__all__ = ["http_url_problem"]


def http_url_problem(url: str, option: str, example: str) -> str | None:
    """Why ``url`` (given as ``option``) cannot be an http(s) endpoint, or None when it can."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        return f"{option} {url!r} is not an http(s) URL ({exc}); expected e.g. {example}"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"{option} {url!r} is not an http(s) URL with a host; expected e.g. {example}"
    return None
