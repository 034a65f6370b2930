"""A real browser for the pages the service serves: Playwright driving Debian's chromium.

``playwright install`` cannot download browsers on these machines, so the browser is the
system's (``apt-get install chromium``; .ci/run installs it when missing). Without it the
browser tests are skipped, or fail under CALLQUEUE_REQUIRE_BROWSER=1 so CI cannot silently lose
them. The service runs as a real process (``uvicorn app.main:app``) on a free port.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CRON_SECRET
from tests.processes import running_service, service_env

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CALLQUEUE_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " and CALLQUEUE_REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module, not per session: Playwright's sync API keeps an event loop running in the
    main thread while it is open, and later tests that call asyncio.run() there would fail."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def live_service(
    store_url: str, replica_url: str, tmp_path: Path, store_engine: Any
) -> Iterator[str]:
    """The service as a real process, documentation on (APP_ENV=test); its base URL."""
    env = service_env(store_url, replica_url, CRON_SECRET)
    with running_service(env, tmp_path / "serve.log") as (_, base):
        yield base
