"""A real browser for the pages the service serves: Playwright driving Debian's chromium
(tests/chromium.py). The service runs as a real process (``uvicorn app.main:app``) on a free
port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import chromium
from tests.conftest import CRON_SECRET
from tests.processes import running_service, service_env


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module, not per session: Playwright's sync API keeps an event loop running in the
    main thread while it is open, and later tests that call asyncio.run() there would fail."""
    with chromium() as launched:
        yield launched


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
