"""The API's server runs on httptools and uvloop (uvicorn[standard]): with h11 and the pure
Python event loop each small request would cost markedly more CPU (bench/RESULTS.md, small
requests)."""

from __future__ import annotations


def test_the_api_serves_http_with_httptools_on_uvloop():
    import uvloop  # noqa: F401 - uvicorn's loop="auto" (the CLI's) picks it when installed
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from ingest_api.timeouts import http_protocol

    assert AutoHTTPProtocol is HttpToolsProtocol
    assert issubclass(http_protocol(5.0), HttpToolsProtocol)  # what `smartlogs up`/`api` pass
