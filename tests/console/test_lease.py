"""The lease on the agent's screen (issue 15): extended by the page while it is visible, shown as
expired once it lapses while hidden, and a late outcome answered as the API answers it. The
server runs with the shortest lease the settings allow (10 s), so the page extends every few
seconds."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, text

from tests.console.conftest import (
    Book,
    Server,
    Tab,
    card_user,
    hide_page,
    populate,
    show_page,
    sign_in,
)

LEASE = "10"


def lease_of(store_engine: Engine, user_id: int) -> tuple[str, datetime]:
    with store_engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, lease_expires_at FROM assignments WHERE user_id = :u"
                " ORDER BY assigned_at DESC LIMIT 1"
            ),
            {"u": user_id},
        ).one()
    return row.status, row.lease_expires_at


def seconds_left(page: Page) -> int:
    match = re.fullmatch(r"(\d+):(\d\d) left", page.locator("#lease-left").inner_text())
    assert match, page.locator("#lease-left").inner_text()
    return int(match[1]) * 60 + int(match[2])


def test_the_countdown_extends_itself_while_the_page_is_visible(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers(LEASE_SECONDS=LEASE)
    seeded = book(2)
    populate(server, seeded.supervisor)
    page = sign_in(open_tab(), server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    user = card_user(page)
    _, first_expiry = lease_of(store_engine, user)

    # Three lease lengths later the agent still holds the user: the page kept extending.
    lowest = 10
    deadline = time.monotonic() + 3 * int(LEASE)
    while time.monotonic() < deadline:
        lowest = min(lowest, seconds_left(page))
        page.wait_for_timeout(500)
    status, expiry = lease_of(store_engine, user)
    assert status == "active"
    assert (expiry - first_expiry).total_seconds() > 2 * int(LEASE) - 5
    assert lowest >= 3, "the page let the lease run low while visible"
    expect(page.locator("#lease")).not_to_have_class(re.compile("is-expired"))


def test_a_lease_lapsed_while_hidden_shows_as_expired_and_the_late_outcome_is_accepted(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers(LEASE_SECONDS=LEASE)
    seeded = book(2)
    populate(server, seeded.supervisor)
    page = sign_in(open_tab(), server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    user = card_user(page)

    hide_page(page)  # the agent switched tab: no more extensions
    expect(page.locator("#lease")).to_have_class(re.compile("is-warning"), timeout=15_000)
    expect(page.locator("#lease-left")).to_have_text("expired", timeout=15_000)
    expect(page.locator("#lease-state")).to_contain_text("This person may now be handed to")
    expect(page.locator("#alert")).to_have_text(
        f"The lease on {seeded.people[0]['name']} has expired."
    )
    assert re.search(r"Lease expired", page.title())
    expect(page.get_by_role("button", name="Release to the queue")).to_be_disabled()
    show_page(page)

    # Nobody else has had the user: the service still takes the outcome, and says so.
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    name = seeded.people[0]["name"]
    expect(page.locator("#last-result")).to_have_text(
        re.compile(
            rf"^Recorded “No answer” for {name}\. Next call after [^.]+\. The lease had lapsed,"
            r" but nobody else had been given them, so the service accepted it\.$"
        )
    )
    with store_engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, outcome FROM assignments WHERE user_id = :u"), {"u": user}
        ).one()
    assert tuple(row) == ("completed", "no_answer")


def test_a_late_outcome_refused_by_the_api_is_shown_as_the_api_answered(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers(LEASE_SECONDS=LEASE)
    seeded = book(2, agents=("agent-a", "agent-b"))
    populate(server, seeded.supervisor)
    page = sign_in(open_tab(), server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    user = card_user(page)
    hide_page(page)
    expect(page.locator("#lease-left")).to_have_text("expired", timeout=15_000)

    # Meanwhile another agent is given the same person (the lapsed lease put them back).
    other = httpx.post(
        f"{server.base}/api/queues/unsigned_users/next-user",
        headers={"Authorization": f"Bearer {seeded.agents['agent-b']}"},
    )
    assert other.status_code == 200 and other.json()["user_id"] == user

    show_page(page)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#last-result")).to_have_text(
        "Not recorded: the service answered 409 Conflict: the assignment is no longer active."
        " The lease had lapsed, and the service no longer takes an outcome for it."
    )
    expect(page.locator("#call")).to_be_hidden()
    with store_engine.connect() as conn:
        statuses = (
            conn.execute(
                text("SELECT status FROM assignments WHERE user_id = :u ORDER BY assigned_at"),
                {"u": user},
            )
            .scalars()
            .all()
        )
    assert statuses == ["expired", "active"]
