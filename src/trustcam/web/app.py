"""The FastAPI application: every router, JSON errors, security headers, the static UI and authenticated docs.

Only login, health and the static assets are public. The API description (OpenAPI spec and its HTML
rendering) reveals every route and parameter, so it needs a signed-in user like everything else. The docs page
is rendered on the server without any script, so it works under the strict CSP and without internet access.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from trustcam import __version__
from trustcam.web.auth import Principal, require
from trustcam.web.context import AppContext
from trustcam.web.errors import SecurityHeaders, install_error_handlers
from trustcam.web.routers import all_routers

STATIC = Path(__file__).with_name("static")
AnyUser = Annotated[Principal, Depends(require())]


def _docs_html(spec: dict[str, Any]) -> str:
    rows = []
    for path, operations in sorted(spec.get("paths", {}).items()):
        for method, op in operations.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", [])
                               if p.get("in") in ("path", "query"))
            body = "JSON body" if "requestBody" in op else ""
            rows.append(f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}"
                        f"</code></td><td>{html.escape(op.get('summary', ''))}</td><td>{html.escape(params)}"
                        f"{'; ' if params and body else ''}{body}</td></tr>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>trustcam API</title>"
            "<link rel='stylesheet' href='/static/style.css'></head><body><main><h1>trustcam API "
            f"{html.escape(__version__)}</h1><p>Machine-readable spec: <a href='/api/openapi.json'>/api/openapi.json"
            "</a>. Scripts authenticate with <code>Authorization: Bearer &lt;api token&gt;</code>.</p>"
            "<table><thead><tr><th>method</th><th>path</th><th>what</th><th>parameters</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></main></body></html>")


def create_app(ctx: AppContext) -> FastAPI:
    tls = not ctx.settings.server.insecure_http
    app = FastAPI(title="trustcam", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    install_error_handlers(app)
    for router in all_routers():
        app.include_router(router)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(_principal: AnyUser) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs(_principal: AnyUser) -> HTMLResponse:
        return HTMLResponse(_docs_html(app.openapi()))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        page = STATIC / "index.html"
        if not page.is_file():
            raise HTTPException(404, "the web UI is not installed (web/static/index.html missing); the API works")
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    generate = app.openapi

    def openapi_with_json_errors() -> dict[str, Any]:
        """Validation errors are ``{"detail": "<message>"}`` like every other error (see errors.py)."""
        if app.openapi_schema is None:
            spec = generate()
            schemas = spec.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = {
                    "title": "HTTPValidationError", "type": "object", "required": ["detail"],
                    "properties": {"detail": {"type": "string", "title": "Detail"}}}
                schemas.pop("ValidationError", None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi_with_json_errors  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.add_middleware(SecurityHeaders, tls=tls)
    return app
