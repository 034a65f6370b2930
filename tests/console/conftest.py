"""The console in a real browser: Debian's Chromium driven by Playwright, against the service as a
real server (uvicorn in a subprocess on a free port) on the tests' PostgreSQL, with replica rows.

Chromium comes from the system (``apt-get install chromium``; `.ci/run` installs it), because
Playwright's own browser download cannot be fetched here. Without it the console tests are
skipped, or fail under CALLQUEUE_REQUIRE_BROWSER=1 so CI cannot silently lose them.

Servers are started once per settings and shared by the package's tests (each test starts from
empty tables, as everywhere in the suite); a test that breaks its server's links gets its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app.auth.passwords import hash_password
from tests.chromium import chromium
from tests.conftest import CRON_SECRET
from tests.factories import Replica, add_scores, make_due, new_agent
from tests.processes import clean_env, free_port, stop, wait_ready
from tests.proxy import FaultProxy

CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
VIEWPORT = {"width": 1200, "height": 900}
# Where the README's screenshots live; the tests write there only when asked, so an ordinary run
# leaves the work tree clean.
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS_ENV = "CALLQUEUE_SCREENSHOTS"


# -- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@dataclass
class Tab:
    """A page and everything it did that a test may want to assert on."""

    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # page errors and CSP violations


@pytest.fixture
def open_tab(browser: Browser, store_engine: Engine) -> Iterator[Callable[..., Tab]]:
    """A fresh browser context per call (its own session storage: another agent's browser).

    At the end the contexts close and the test waits for the shared server to finish what the
    pages had asked of it: the next test's truncation must not meet a request still running
    (their locks, taken in opposite orders, deadlock)."""
    contexts: list[BrowserContext] = []

    def open_(**options: Any) -> Tab:
        context = browser.new_context(viewport=VIEWPORT, locale="en-GB", **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        tab = Tab(page)

        def on_request(request: Request) -> None:
            tab.requests.append(request.url)

        page.on("request", on_request)
        page.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                tab.problems.append(f"console: {message.text}")
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )
        return tab

    yield open_
    for context in contexts:
        context.close()
    wait_until_quiet(store_engine)


def wait_until_quiet(store_engine: Engine, timeout: float = 15) -> None:
    """Until no other session of the test database has run a statement or held a transaction
    open for three checks in a row (a request already on the wire reaches its first statement
    within that)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    with store_engine.connect() as conn:
        while True:
            busy = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    " AND state <> 'idle'"
                )
            ).scalar_one()
            conn.rollback()
            quiet = quiet + 1 if busy == 0 else 0
            if quiet >= 3:
                return
            assert time.monotonic() < deadline, f"{busy} sessions still busy after the test"
            time.sleep(0.1)


# -- the service -------------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[str]
    log: Path
    proxy: FaultProxy | None


def _start(store_url: str, replica_url: str, log: Path, **env: str) -> Server:
    proxy = None
    if env.pop("REPLICA_PROXY", "") == "1":
        url = make_url(replica_url)
        if url.host not in ("127.0.0.1", "localhost") or not url.port:
            pytest.skip("the replica is not on 127.0.0.1 TCP; the fault proxy needs one")
        proxy = FaultProxy(url.port)
        replica_url = url.set(port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    variables: dict[str, str] = {
        "DATABASE_URL": store_url,
        "REPLICA_DATABASE_URL": replica_url,
        "APP_ENV": "test",
        "CRON_SECRET": CRON_SECRET,
        "SCHEDULER_ENABLED": "false",
        "COOLING_PERIOD_MINUTES": "0",
        "DB_POOL_SIZE": "3",
        "DB_MAX_OVERFLOW": "2",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        **env,
    }
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
            env=clean_env(**variables),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc)
    return Server(base, proc, log, proxy)


def _stop(server: Server) -> None:
    code, _ = stop(server.proc)
    if server.proxy:
        server.proxy.close()
    text = server.log.read_text()
    assert code in (0, -15), text[-3000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="package")
def servers(
    store_url: str, replica_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    """Servers by settings, started on first use and shared by the package's tests."""
    started: dict[tuple[tuple[str, str], ...], Server] = {}

    def get(**env: str) -> Server:
        key = tuple(sorted(env.items()))
        if key not in started:
            log = tmp_path_factory.mktemp("console-server") / "server.log"
            started[key] = _start(store_url, replica_url, log, **env)
        return started[key]

    yield get
    for server in started.values():
        _stop(server)


@pytest.fixture
def own_server(store_url: str, replica_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A server for this test alone (for tests that break its links)."""
    mine: list[Server] = []

    def start(**env: str) -> Server:
        server = _start(store_url, replica_url, tmp_path / f"server-{len(mine)}.log", **env)
        mine.append(server)
        return server

    yield start
    for server in mine:
        _stop(server)


# -- data --------------------------------------------------------------------------------------


@dataclass
class Book:
    """What a test seeded: tokens, and the people in the unsigned queue in serving order."""

    agents: dict[str, str]
    supervisor: str
    people: list[dict[str, Any]]


FIRST_NAMES = ["Ada", "Ben", "Cleo", "Dev", "Esme", "Finn", "Gwen", "Hugo", "Iris", "Jude"]


@pytest.fixture
def book(store_engine: Engine, replica_engine: Engine) -> Callable[..., Book]:
    """Seed n unsigned users (phone numbers from the range reserved for fiction), their score
    rows in a known order, agents and a supervisor."""

    def seed(n: int = 6, agents: tuple[str, ...] = ("agent-a",), **kw: Any) -> Book:
        replica = Replica(replica_engine)
        people = []
        for i in range(n):
            user_id = 4000 + i
            first = FIRST_NAMES[i % len(FIRST_NAMES)]
            phone = f"07700 900{100 + i:03d}"
            replica.unsigned(
                user_id,
                first_name=first,
                last_name="Example",
                phone=phone,
                **kw,
            )
            people.append({"user_id": user_id, "name": f"{first} Example", "phone": phone})
        add_scores(
            store_engine,
            [
                {
                    "user_id": p["user_id"],
                    "current_queue_type": "unsigned_users",
                    "current_score": i,
                }
                for i, p in enumerate(people)
            ],
        )
        tokens = {name: console_person(store_engine, name) for name in agents}
        supervisor = console_person(store_engine, "supervisor-s", "supervisor")
        return Book(tokens, supervisor, people)

    return seed


# Everyone the console tests make signs in with this password (and their email, below); their
# API token is what the tests' own calls (populate, book a callback) use.
PASSWORD = "console test password"
_PASSWORD_HASH = hash_password(PASSWORD)
EMAILS: dict[str, str] = {}  # token -> the email of its person


def console_person(
    store_engine: Engine,
    name: str,
    role: str = "agent",
    queues: tuple[str, ...] = ("unsigned_users", "outstanding_requests"),
) -> str:
    """A person who can sign in to the console (``name``@example.com, PASSWORD); their token."""
    token = new_agent(store_engine, name, role).auth["Authorization"].removeprefix("Bearer ")
    email = f"{name}@example.com"
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE agents SET email = :email, display_name = :display, password_hash = :hash,"
                " allowed_queues = :queues WHERE name = :name"
            ),
            {
                "email": email,
                "display": name.replace("-", " ").title(),
                "hash": _PASSWORD_HASH,
                "queues": list(queues),
                "name": name,
            },
        )
    EMAILS[token] = email
    return token


def populate(server: Server, supervisor: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base}/api/admin/populate", headers={"Authorization": f"Bearer {supervisor}"}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def book_callback(server: Server, token: str) -> dict[str, Any]:
    """The agent takes the next person and records call_back for two hours from now."""
    claim = httpx.post(f"{server.base}/api/queues/unsigned_users/next-user", headers=bearer(token))
    assert claim.status_code == 200, claim.text
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0).isoformat()
    done = httpx.post(
        f"{server.base}/api/assignments/{claim.json()['assignment_id']}/complete",
        headers=bearer(token),
        json={"outcome": "call_back", "callback_at": at},
    )
    assert done.status_code == 200, done.text
    booked = done.json()["callback"]
    assert booked is not None
    return {"user_id": claim.json()["user_id"], **booked}


# -- driving the pages -------------------------------------------------------------------------


def sign_in(tab: Tab, server: Server, token: str, view: str = "/console") -> Page:
    """Open a view, be sent to the sign-in page, sign in as the token's person with the
    password, and be back on the view with its workspace shown."""
    page = tab.page
    page.goto(server.base + view)
    page.get_by_label("Email").fill(EMAILS[token])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.base + view)
    page.locator("body[data-ready='yes']").wait_for(state="attached")
    return page


def card_user(page: Page) -> int:
    """The user id on the contact card, once the card is shown."""
    try:
        page.locator("#call").wait_for(state="visible")
    except Exception as exc:
        raise AssertionError(
            "no contact card; the page says: " + page.locator("main").inner_text()[:1500]
        ) from exc
    return int(page.locator("#c-user").inner_text())


def hide_page(page: Page) -> None:
    """What the browser reports when the agent switches tab or minimises the window."""
    page.evaluate(
        "() => { Object.defineProperty(document, 'visibilityState',"
        " {configurable: true, get: () => 'hidden'});"
        " Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )


def show_page(page: Page) -> None:
    page.evaluate(
        "() => { delete document.visibilityState; delete document.hidden;"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )


def same_origin_only(tab: Tab, server: Server) -> list[str]:
    """Requests the page made to anywhere but the service (none allowed)."""
    return [url for url in tab.requests if not url.startswith(server.base + "/")]


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """Always taken (it proves the view renders); written to docs/ for the README only when
    CALLQUEUE_SCREENSHOTS=1."""
    target = DOCS / name if os.environ.get(SCREENSHOTS_ENV) == "1" else tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True, animations="disabled", caret="hide")
    assert target.stat().st_size > 10_000, "an empty-looking screenshot"
    return target


def words(page: Page, selector: str) -> str:
    return re.sub(r"\s+", " ", page.locator(selector).inner_text()).strip()


__all__ = [
    "EMAILS",
    "PASSWORD",
    "Book",
    "Server",
    "Tab",
    "bearer",
    "book_callback",
    "card_user",
    "console_person",
    "hide_page",
    "make_due",
    "populate",
    "same_origin_only",
    "screenshot",
    "show_page",
    "sign_in",
    "words",
]
