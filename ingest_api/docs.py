"""The interactive API docs (``/docs``, Swagger UI) served from a package, not from a CDN.

FastAPI's default ``/docs`` page loads Swagger UI's JavaScript and CSS from a CDN, so it is
blank on a machine without internet. The same files ship in the ``swagger-ui-bundle-v2``
package (Swagger UI 5, which reads the OpenAPI 3.1 schema FastAPI writes); they are served at
``/docs/assets/{name}`` and the page is FastAPI's own ``get_swagger_ui_html`` pointed at them
(FastAPI's documented "self-hosting JavaScript and CSS for docs" recipe). ReDoc has no such
package, so ``/redoc`` is off. The routes are open (``smartlogs.auth.ROUTE_SCOPES``), like
FastAPI's own docs routes, and answer GET and HEAD as those did.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

__all__ = ["DOCS_URL", "ASSETS_URL", "ASSETS", "add_offline_docs"]

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
# the files the page loads (the package holds more: source maps, other bundles)
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` with Swagger UI's files from the installed package (create the app
    with ``docs_url=None``)."""
    import swagger_ui_bundle

    root = Path(swagger_ui_bundle.swagger_ui_path)

    async def swagger_ui(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - API docs",
            oauth2_redirect_url=f"{DOCS_URL}/oauth2-redirect",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png")

    async def swagger_ui_redirect(request: Request) -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return JSONResponse({"error": "not_found", "detail": f"no docs asset {name!r}"},
                                status_code=404)
        return FileResponse(root / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})

    app.add_route(DOCS_URL, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_route(f"{DOCS_URL}/oauth2-redirect", swagger_ui_redirect, methods=["GET"],
                  include_in_schema=False)
    app.add_route(f"{ASSETS_URL}/{{name}}", asset, methods=["GET"], include_in_schema=False)
