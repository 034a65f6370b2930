"""The documentation page works offline (issue 11, item 7): Swagger UI loads its scripts and
styles from the service itself, never from another host, and actually renders the operations.
Every request the page makes is recorded, and every console error."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.config import load_settings
from app.main import create_app

pytestmark = pytest.mark.browser

DOCUMENT = create_app(load_settings(app_env="test")).openapi()
PATHS = sorted(DOCUMENT["paths"])


class Recorder:
    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.statuses: dict[str, int] = {}
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append(request.url))
        page.on(
            "response", lambda response: self.statuses.__setitem__(response.url, response.status)
        )
        page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def foreign(self, origin: str) -> list[str]:
        def same(url: str) -> bool:
            parts = urlsplit(url)
            return parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == origin

        return [url for url in self.requests if not same(url)]


def test_swagger_ui_renders_every_operation_from_the_service_alone(
    page: Any, live_service: str
) -> None:
    seen = Recorder(page)
    page.goto(f"{live_service}/docs", wait_until="networkidle")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    shown = set(page.locator(".opblock-summary-path").all_inner_texts())
    shown = {path.replace("\u200b", "").strip() for path in shown}

    assert seen.foreign(live_service) == []
    assert seen.failed == []
    assert seen.errors == []
    assert {u.rsplit("/", 1)[-1] for u in seen.requests if "/docs/assets/" in u} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
    }
    assert f"{live_service}/openapi.json" in seen.requests
    assert all(status < 400 for status in seen.statuses.values()), seen.statuses
    assert shown == set(PATHS)
    assert page.title() == "callqueue - Swagger UI"


def test_there_is_no_redoc_page(live_service: str) -> None:
    """ReDoc's bundle always fetches its vendor's logo from a CDN; the service does not serve it
    (app/api/docs.py). Swagger UI shows the same document."""
    got = httpx.get(f"{live_service}/redoc", timeout=10)
    assert got.status_code == 404
    assert (
        httpx.get(f"{live_service}/docs/assets/redoc.standalone.js", timeout=10).status_code == 404
    )
