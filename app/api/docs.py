"""The documentation page (DOCS_ENABLED), served with its own scripts and styles.

FastAPI's pages load Swagger UI and ReDoc from a public CDN: on a machine or a call-centre
network without internet access they are blank. Swagger UI's bundle and stylesheet come from
the ``fastapi-offline`` package instead, served by the service under /docs/assets/, and the page
says so to the browser: its Content-Security-Policy allows nothing but this origin.

ReDoc is not served: its bundle always loads the Redocly logo from cdn.redoc.ly (no option turns
it off; the browser test caught it), and Swagger UI shows the same document.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.errors import NotFound

ASSETS_DIR = files("fastapi_offline") / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
ASSETS_URL = "/docs/assets"
# The page's own inline bootstrap script and styles aside, everything comes from this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    return response


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs", response_class=HTMLResponse)
    async def swagger_ui() -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - Swagger UI",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
                # Swagger UI would otherwise send the document to swagger.io's online validator.
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @router.get(ASSETS_URL + "/{name}")
    async def asset(name: Annotated[str, Path(max_length=64)]) -> Any:
        """Only the files the page uses, never a path into the package."""
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound("there is no such documentation asset")
        return FileResponse(
            str(ASSETS_DIR / name),
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return router
