"""The agent's screen in a real browser (issue 15): a whole call cycle by mouse and by keyboard,
a callback booked, falling due and served first, two agents side by side, and the states a claim
can end in, each in words."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import expect
from sqlalchemy import Engine, text

from tests.console.conftest import (
    EMAILS,
    PASSWORD,
    Book,
    Server,
    Tab,
    card_user,
    make_due,
    populate,
    same_origin_only,
    sign_in,
    words,
)

LONDON = ZoneInfo("Europe/London")


def ledger(store_engine: Engine) -> list[dict[str, object]]:
    with store_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.user_id, g.name AS agent, a.status, a.outcome, a.callback_at, a.notes,"
                " a.source FROM assignments a JOIN agents g ON g.id = a.agent_id"
                " ORDER BY a.assigned_at, a.id"
            )
        ).all()
    return [dict(r._mapping) for r in rows]


def test_an_agent_takes_a_user_records_a_call_back_and_takes_the_next(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(3)
    populate(server, seeded.supervisor)
    tab = open_tab(timezone_id="Europe/London")
    page = sign_in(tab, server, seeded.agents["agent-a"])
    expect(page.locator('[data-count-for="unsigned_users"]')).to_have_text("3 waiting")

    page.get_by_role("button", name="Next user").click()
    first = seeded.people[0]
    assert card_user(page) == first["user_id"]
    expect(page.locator("#call-title")).to_have_text(f"Now calling {first['name']}")
    expect(page.locator("#call-title")).to_be_focused()
    tel = page.get_by_role("link", name=f"Call {first['phone']}")
    expect(tel).to_have_attribute("href", "tel:" + first["phone"].replace(" ", ""))
    expect(page.locator("#c-reason")).to_have_text("New lead - Missing signature")
    expect(page.locator("#c-source")).to_have_text("the queue")
    details = page.locator("#c-details")
    expect(details.locator("dt")).to_have_text(["Signature type", "Signature missing since"])
    expect(details.locator("dd").first).to_have_text("initial")
    expect(page.locator("#lease-left")).to_have_text(re.compile(r"^1[45]:\d\d left$"))

    # Call back on the day after tomorrow at 10:30, the agent's (London) time.
    day = (datetime.now(LONDON) + timedelta(days=2)).date()
    local = datetime(day.year, day.month, day.day, 10, 30)
    page.get_by_label("Call back", exact=True).check()
    page.get_by_label("Call back at").fill(local.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Notes").fill("Wants a call after the school run")
    expect(page.locator("#notes-count")).to_have_text("33 of 2000 characters")
    page.get_by_role("button", name="Record outcome").click()

    result = page.locator("#last-result")
    expect(result).to_contain_text(f"Recorded “Call back” for {first['name']}.")
    expect(result).to_contain_text("Callback booked for")
    expect(page.locator("#call")).to_be_hidden()
    # The person's details leave the screen with the assignment.
    assert first["phone"] not in page.locator("main").inner_text()
    expect(page.get_by_role("button", name="Next user")).to_be_focused()

    # The callback is under "My callbacks" (GET /api/callbacks/mine), at the time picked.
    mine = page.locator("#callbacks-table tbody tr")
    expect(mine).to_have_count(1)
    when = mine.locator("td").nth(0)
    expect(when).to_contain_text("10:30")
    expect(when).to_contain_text(f"{day.day} {day.strftime('%b')}")
    expect(mine.locator("td").nth(1)).to_have_text("Unsigned users")
    expect(mine.locator("td").nth(2)).to_have_text(str(first["user_id"]))
    expect(mine.locator("td").nth(3)).to_have_text(re.compile(r"^in (1|2) days? \d+ h$"))
    expect(page.locator('[data-due-for="unsigned_users"]')).to_be_hidden()

    page.get_by_role("button", name="Next user").click()
    assert card_user(page) == seeded.people[1]["user_id"]
    expect(page.locator("#c-callback")).to_be_hidden()

    rows = ledger(store_engine)
    expected_at = local.replace(tzinfo=LONDON).astimezone(UTC)
    assert [(r["user_id"], r["status"], r["outcome"]) for r in rows] == [
        (first["user_id"], "completed", "call_back"),
        (seeded.people[1]["user_id"], "active", None),
    ]
    assert rows[0]["callback_at"] == expected_at
    assert rows[0]["notes"] == "Wants a call after the school run"
    with store_engine.connect() as conn:
        next_call = conn.execute(
            text("SELECT next_call_after FROM user_call_scores WHERE user_id = :u"),
            {"u": first["user_id"]},
        ).scalar_one()
    assert next_call == expected_at

    # Time passes: the callback falls due (its time moved two minutes into the past).
    make_due(store_engine, first["user_id"], minutes_ago=2)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(result).to_contain_text(f"Recorded “No answer” for {seeded.people[1]['name']}.")
    expect(mine.locator("td").nth(3)).to_have_text(re.compile(r"^due now; yours alone until "))
    expect(page.locator('[data-due-for="unsigned_users"]')).to_have_text(
        "1 callback due (yours), served first"
    )

    # The next claim serves the promised callback before the queue's next entry (people[2]).
    page.keyboard.press("n")
    assert card_user(page) == first["user_id"]
    expect(page.locator("#c-source")).to_contain_text("a callback, promised for")
    expect(page.locator("#c-source")).to_have_attribute("data-source", "callback")
    expect(page.locator("#c-callback")).to_contain_text(
        "A promised callback: they were told someone would call at"
    )
    expect(mine.locator("td").nth(3)).to_have_text("being called")
    rows = ledger(store_engine)
    assert [(r["user_id"], r["status"], r["source"]) for r in rows] == [
        (first["user_id"], "completed", "queue"),
        (seeded.people[1]["user_id"], "completed", "queue"),
        (first["user_id"], "active", "callback"),
    ]
    with store_engine.connect() as conn:
        entry = conn.execute(
            text("SELECT status FROM unsigned_users_queue WHERE user_id = :u"),
            {"u": seeded.people[2]["user_id"]},
        ).scalar_one()
    assert entry == "pending"
    assert same_origin_only(tab, server) == []
    assert tab.problems == []


def test_two_agents_in_their_own_browsers_never_see_the_same_user(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(6, agents=("agent-a", "agent-b"))
    populate(server, seeded.supervisor)
    pages = {
        name: sign_in(open_tab(), server, seeded.agents[name]) for name in ("agent-a", "agent-b")
    }
    seen: dict[str, list[int]] = {"agent-a": [], "agent-b": []}
    for _ in range(3):
        # Both ask at (nearly) the same moment, then both hold a user at once.
        for page in pages.values():
            page.keyboard.press("n")
        for name, page in pages.items():
            seen[name].append(card_user(page))
        held = [seen[name][-1] for name in pages]
        assert held[0] != held[1], held
        for page in pages.values():
            page.get_by_label("No answer").check()
            page.get_by_role("button", name="Record outcome").click()
            expect(page.locator("#last-result")).to_contain_text("Recorded “No answer”")

    handed = seen["agent-a"] + seen["agent-b"]
    assert sorted(handed) == [p["user_id"] for p in seeded.people]
    by_agent = {}
    for row in ledger(store_engine):
        by_agent.setdefault(row["agent"], []).append(row["user_id"])
    assert by_agent == seen


def test_the_whole_agent_cycle_by_keyboard_alone(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(4)
    populate(server, seeded.supervisor)
    tab = open_tab()
    page = tab.page
    keys = page.keyboard
    page.goto(server.base + "/")

    # The sign-in page: the email field has the focus on arrival; type, Tab, the password,
    # Enter; back on the console, Next user has the focus.
    assert page.url.startswith(server.base + "/auth/login")
    expect(page.get_by_label("Email")).to_be_focused()
    keys.type(EMAILS[seeded.agents["agent-a"]])
    keys.press("Tab")
    keys.type(PASSWORD)
    keys.press("Enter")
    page.wait_for_url(server.base + "/console")
    expect(page.get_by_role("button", name="Next user")).to_be_focused()

    # 1. N for the next user, 1 for "No answer", Enter to record it.
    keys.press("n")
    assert card_user(page) == seeded.people[0]["user_id"]
    keys.press("1")
    expect(page.get_by_label("No answer")).to_be_checked()
    expect(page.get_by_label("No answer")).to_be_focused()
    keys.press("Enter")
    expect(page.locator("#last-result")).to_contain_text("Recorded “No answer”")

    # 2. Enter on the focused Next button; T to write a note, Esc to leave it; 2, Enter.
    expect(page.get_by_role("button", name="Next user")).to_be_focused()
    keys.press("Enter")
    assert card_user(page) == seeded.people[1]["user_id"]
    keys.press("t")
    expect(page.get_by_label("Notes")).to_be_focused()
    keys.type("Put the phone down on me")
    keys.press("Escape")
    keys.press("2")
    keys.press("Enter")
    expect(page.locator("#last-result")).to_contain_text("Recorded “Hung up”")

    # 3. E extends the lease, S skips the person.
    keys.press("n")
    assert card_user(page) == seeded.people[2]["user_id"]
    keys.press("e")
    expect(page.locator("#announcer")).to_contain_text("Lease extended")
    keys.press("s")
    expect(page.locator("#last-result")).to_contain_text("Skipped")

    # 4. Q switches queue: the other queue is empty, and says so.
    keys.press("q")
    expect(page.get_by_label("Outstanding requests")).to_be_checked()
    keys.press("n")
    expect(page.locator("#state")).to_contain_text("Nobody to call")

    rows = ledger(store_engine)
    assert [(r["user_id"], r["status"], r["outcome"], r["notes"]) for r in rows] == [
        (seeded.people[0]["user_id"], "completed", "no_answer", None),
        (seeded.people[1]["user_id"], "completed", "hung_up", "Put the phone down on me"),
        (seeded.people[2]["user_id"], "released", None, None),
    ]
    assert tab.problems == []


def test_an_empty_queue_is_shown_as_empty(
    servers: Callable[..., Server], open_tab: Callable[..., Tab], book: Callable[..., Book]
) -> None:
    server = servers()
    seeded = book(0)
    populate(server, seeded.supervisor)
    tab = open_tab()
    page = sign_in(tab, server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    state = page.locator("#state")
    expect(state).to_be_visible()
    assert words(page, "#state") == (
        "Nobody to call Nobody is waiting in Unsigned users right now. The queue is refilled"
        " automatically; try again in a minute, or switch queue (Q)."
    )
    expect(state).to_be_focused()
    expect(page.locator("#announcer")).to_contain_text("Nobody to call")
    assert tab.problems == []


def test_a_busy_service_is_retried_by_itself_after_retry_after(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    replica_engine: Engine,
    store_engine: Engine,
) -> None:
    """Two people without a phone number at the front and one validation attempt per request:
    next-user answers 503 ValidationAttemptsExhausted with Retry-After twice, and the page asks
    again by itself until the third person is handed out."""
    server = servers(MAX_VALIDATION_ATTEMPTS="1")
    seeded = book(3)
    with replica_engine.begin() as conn:
        conn.execute(text("UPDATE users SET phone_number = NULL WHERE id IN (4000, 4001)"))
    populate(server, seeded.supervisor)
    tab = open_tab()
    page = sign_in(tab, server, seeded.agents["agent-a"])
    statuses: list[int] = []
    page.on(
        "response",
        lambda r: statuses.append(r.status) if r.url.endswith("/next-user") else None,
    )
    page.keyboard.press("n")
    expect(page.locator("#state")).to_contain_text("Busy: retrying by itself")
    expect(page.locator("#state")).to_contain_text(
        "Many people at the front of the queue turned out not to be callable; still looking."
    )
    assert card_user(page) == seeded.people[2]["user_id"]
    assert statuses == [503, 503, 200]
    expect(page.locator("#state")).to_be_hidden()
