"""The interactive API docs (``/docs``, Swagger UI) served from a package, not from a CDN.

FastAPI's default ``/docs`` page loads Swagger UI's JavaScript and CSS from a CDN, so it is
blank on a machine without internet. The same files ship in the ``swagger-ui-bundle-v2``
package (Swagger UI 5, which reads the OpenAPI 3.1 schema FastAPI writes); they are served
under ``/docs/assets/`` and the page is FastAPI's own ``get_swagger_ui_html`` pointed at them
(FastAPI's documented "self-hosting JavaScript and CSS for docs" recipe). ReDoc has no such
package, so ``/redoc`` is off.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_URL", "ASSETS_URL", "add_offline_docs"]

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"  # under /docs: open without an API key, like the page itself


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` with Swagger UI's files from the installed package (create the app
    with ``docs_url=None``)."""
    import swagger_ui_bundle

    app.mount(ASSETS_URL, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="swagger-ui-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - API docs",
            oauth2_redirect_url=f"{DOCS_URL}/oauth2-redirect",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png")

    @app.get(f"{DOCS_URL}/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
