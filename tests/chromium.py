"""Debian's Chromium for the browser tests (the console and the documentation pages), driven by
Playwright. ``playwright install`` cannot download browsers on these machines, so the browser is
the system's (``apt-get install chromium``; .ci/run installs it when missing). Without it the
browser tests are skipped, or fail under CALLQUEUE_REQUIRE_BROWSER=1 so CI cannot silently lose
them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get(
    "CALLQUEUE_CHROMIUM", os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
)
ARGS = [
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


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (a Playwright ``Browser``), closed at the end."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()
