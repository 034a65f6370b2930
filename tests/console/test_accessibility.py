"""Accessibility and self-containment of both views (issue 15): axe-core (vendored for the tests
only) finds no serious or critical violation in any state a person meets; the pages send the
security headers, load nothing from another origin and trip no Content-Security-Policy rule; and
the README's screenshots are taken here."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from tests.console.conftest import (
    EMAILS,
    PASSWORD,
    Book,
    Server,
    Tab,
    book_callback,
    card_user,
    console_person,
    make_due,
    populate,
    same_origin_only,
    screenshot,
    sign_in,
)

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
BLOCKING = {"serious", "critical"}


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))"
    )
    return [v for v in found if v["impact"] in BLOCKING]


def test_the_vendored_axe_is_the_checked_in_release() -> None:
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    assert (AXE.parent / "LICENSE").read_text().startswith("Mozilla Public License")


@pytest.fixture
def axe_tab(open_tab: Callable[..., Tab]) -> Callable[[], Tab]:
    """axe is injected as a script, which the console's own policy rightly refuses: these
    contexts bypass the policy for the audit only (the other tests run with it)."""
    return lambda: open_tab(bypass_csp=True)


def test_the_agent_view_has_no_serious_accessibility_violation(
    servers: Callable[..., Server], axe_tab: Callable[[], Tab], book: Callable[..., Book]
) -> None:
    server = servers()
    seeded = book(2)
    populate(server, seeded.supervisor)
    page = axe_tab().page
    page.goto(server.base + "/console")
    assert axe_violations(page) == [], "signed out: the sign-in page"
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_have_text("the email or the password is wrong")
    assert axe_violations(page) == [], "sign-in error"

    sign_in(Tab(page), server, seeded.agents["agent-a"])
    assert axe_violations(page) == [], "signed in, idle"
    page.keyboard.press("n")
    card_user(page)
    page.keyboard.press("5")  # call back: the date-time picker shows
    expect(page.get_by_label("Call back at")).to_be_visible()
    assert axe_violations(page) == [], "holding a user, call back chosen"
    page.get_by_label("Do not contact").check()
    page.get_by_role("button", name="Record outcome").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert axe_violations(page) == [], "confirmation dialog"
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    page.keyboard.press("r")
    expect(page.locator("#last-result")).to_contain_text("went back to the queue")
    page.keyboard.press("q")
    page.keyboard.press("n")
    expect(page.locator("#state")).to_contain_text("Nobody to call")
    assert axe_violations(page) == [], "empty queue"


def test_the_supervisor_view_has_no_serious_accessibility_violation(
    servers: Callable[..., Server],
    axe_tab: Callable[[], Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(3)
    populate(server, seeded.supervisor)
    overdue = book_callback(server, seeded.agents["agent-a"])
    agent = sign_in(axe_tab(), server, seeded.agents["agent-a"])
    agent.keyboard.press("n")
    card_user(agent)
    make_due(store_engine, overdue["user_id"], minutes_ago=20)

    page = axe_tab().page
    sign_in(Tab(page), server, seeded.supervisor, "/console/supervisor")
    expect(page.locator("#live-table tbody tr")).to_have_count(1)
    expect(page.locator("#chart svg")).to_be_visible()
    page.get_by_role("button", name="Populate now").click()
    expect(page.locator("#populate-result")).to_contain_text("The population succeeded.")
    page.locator("#activity details summary").click()
    expect(page.locator("#callbacks-table tbody tr")).to_have_count(1)
    expect(page.locator("#rules-now")).to_have_text("Calling is open now.")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#compliance-table")).to_be_visible()
    page.locator("#compliance-result details summary").click()
    assert axe_violations(page) == [], "signed in, with data"
    page.get_by_role("button", name="Release user").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert axe_violations(page) == [], "confirmation dialog"
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    page.get_by_role("button", name=f"Reassign the callback of user {overdue['user_id']}").click()
    expect(page.get_by_role("dialog")).to_contain_text("The id of the agent who should keep it")
    assert axe_violations(page) == [], "reassign dialog"


def test_the_people_page_and_the_sign_in_pages_have_no_serious_accessibility_violation(
    servers: Callable[..., Server],
    axe_tab: Callable[[], Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(0, agents=("agent-a", "agent-b"))
    page = axe_tab().page
    sign_in(Tab(page), server, seeded.supervisor, "/console/people")
    expect(page.locator("#people-table tbody tr")).to_have_count(3)
    assert axe_violations(page) == [], "the people page"
    page.get_by_label("Email").fill("new.agent@example.com")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#link-box")).to_be_visible()
    assert axe_violations(page) == [], "a new person's link"
    link = page.locator("#link-value").inner_text()
    page.get_by_role("button", name="Change").first.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert axe_violations(page) == [], "the change dialog"
    page.keyboard.press("Escape")
    page.goto(link)
    assert axe_violations(page) == [], "the set-password page"
    page.goto(server.base + "/auth/set-password?token=cqp_unknown")
    assert axe_violations(page) == [], "a link that cannot be used"

    # An admin's page: the API tokens and the personal-data panel, its error and its answer.
    admin = axe_tab().page
    sign_in(Tab(admin), server, console_person(store_engine, "admin-x", "admin"), "/console/people")
    expect(admin.locator("#personal-data")).to_be_visible()
    assert axe_violations(admin) == [], "an admin's people page"
    admin.get_by_label("User id").fill("x")
    admin.get_by_role("button", name="Export").click()
    expect(admin.locator("#d-user-error")).to_be_visible()
    assert axe_violations(admin) == [], "a user id that is not one"
    admin.get_by_label("User id").fill("31337")
    admin.get_by_role("button", name="Erase…").click()
    expect(admin.get_by_role("dialog")).to_contain_text("Erase user 31337?")
    assert axe_violations(admin) == [], "the erasure's confirmation"
    admin.get_by_role("dialog").get_by_role("button", name="Erase user 31337").click()
    expect(admin.locator("#data-summary")).to_contain_text("User 31337 is erased")
    assert axe_violations(admin) == [], "an erasure's answer"


def signed_in_cookies(server: Server, token: str) -> dict[str, str]:
    """The session cookie of the token's person, signed in with the password."""
    answer = httpx.post(
        server.base + "/auth/login", data={"email": EMAILS[token], "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text
    return {"callqueue_session": answer.cookies["callqueue_session"]}


def test_the_pages_are_self_contained_and_protected(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    """Both views at work, under their real policy: every request goes to the service, no
    policy violation, no script error; then the screenshots for the README."""
    server = servers()
    seeded = book(6, agents=("agent-a", "agent-b"))
    populate(server, seeded.supervisor)

    cookies = signed_in_cookies(server, seeded.supervisor)
    for path in ("/console", "/console/supervisor", "/console/people", "/auth/login"):
        answer = httpx.get(server.base + path, cookies=cookies)
        assert answer.status_code == 200
        policy = answer.headers["content-security-policy"]
        assert policy.startswith("default-src 'self';"), policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        # No inline script, style or handler the policy would have to allow; no other host.
        for pattern in (
            r"<script>",
            r"<style",
            r"\sstyle=",
            r"\son[a-z]+=",
            r"javascript:",
            r"https?://",
        ):
            assert not re.search(pattern, answer.text), (path, pattern)

    # Each agent booked a callback earlier in the day; agent-a's has just fallen due.
    b_booked = book_callback(server, seeded.agents["agent-b"])
    a_booked = book_callback(server, seeded.agents["agent-a"])
    make_due(store_engine, a_booked["user_id"], minutes_ago=3)

    other = sign_in(open_tab(), server, seeded.agents["agent-b"])
    other.keyboard.press("n")
    card_user(other)
    # agent-b's callback falls due too, and is left waiting: overdue on the supervisor's screen.
    make_due(store_engine, b_booked["user_id"], minutes_ago=20)

    agent_tab = open_tab()
    agent = sign_in(agent_tab, server, seeded.agents["agent-a"])
    agent.keyboard.press("n")
    assert card_user(agent) == a_booked["user_id"]  # the promised callback, before the queue
    expect(agent.locator("#c-callback")).to_be_visible()
    agent.keyboard.press("5")
    agent.get_by_label("Notes").fill("Prefers mornings; works shifts")
    agent.locator("#call-title").focus()
    expect(agent.locator('[data-count-for="unsigned_users"]')).to_have_text("3 waiting")
    expect(agent.locator("#callbacks-table tbody tr td").nth(3)).to_have_text("being called")

    sup_tab = open_tab()
    sup = sign_in(sup_tab, server, seeded.supervisor, "/console/supervisor")
    expect(sup.locator("#live-table tbody tr")).to_have_count(2)
    expect(sup.locator("#runs-table tbody tr")).to_have_count(1)
    expect(sup.locator("#chart svg")).to_be_visible()
    expect(sup.locator("#callbacks-table tbody tr")).to_have_count(1)
    expect(sup.locator("#rules-now")).to_have_text("Calling is open now.")
    sup.get_by_role("button", name="Show").click()
    expect(sup.locator("#compliance-table")).to_be_visible()

    for tab in (agent_tab, sup_tab):
        assert same_origin_only(tab, server) == []
        assert tab.problems == []
        assert len(tab.requests) >= 5
    assert any("/console/static/agent.js" in u for u in agent_tab.requests)
    assert any("/api/reports/activity" in u for u in sup_tab.requests)

    screenshot(agent, "console-agent.png", tmp_path)
    screenshot(sup, "console-supervisor.png", tmp_path)
