"""Calling rules and compliance in the console (SPEC 7.3, 7.4): outside calling hours the agent's
screen says so in words with when calling opens; a callback time outside the hours is refused in
words; the supervisor changes the rules only after confirmation and reads the compliance report,
all against the real routes."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import expect

from tests.console.conftest import (
    Book,
    Server,
    Tab,
    card_user,
    populate,
    same_origin_only,
    sign_in,
    words,
)

LONDON = ZoneInfo("Europe/London")
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def put_rules(server: Server, supervisor: str, **rules: Any) -> dict[str, Any]:
    answer = httpx.put(
        f"{server.base}/api/admin/calling-rules",
        headers={"Authorization": f"Bearer {supervisor}"},
        json=rules,
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_outside_calling_hours_the_agent_is_told_when_calling_opens(
    servers: Callable[..., Server], open_tab: Callable[..., Tab], book: Callable[..., Book]
) -> None:
    server = servers()
    seeded = book(2)
    populate(server, seeded.supervisor)
    tab = open_tab(timezone_id="Europe/London")
    page = sign_in(tab, server, seeded.agents["agent-a"])

    # Rules that never open: 409 OutsideCallingHours with opens_at null.
    put_rules(server, seeded.supervisor, hours="never")
    page.keyboard.press("n")
    state = page.locator("#state")
    expect(state).to_contain_text("Outside calling hours")
    assert words(page, "#state-text") == (
        "Nobody may be called now. The calling rules do not open again; ask your supervisor."
    )
    expect(state).to_be_focused()
    expect(page.locator("#call")).to_be_hidden()

    # A window on the day after tomorrow only: closed now, opening then at 09:00 London time.
    opens_day = (datetime.now(LONDON) + timedelta(days=2)).date()
    rules = put_rules(server, seeded.supervisor, hours=f"{DAYS[opens_day.weekday()]} 09:00-17:00")
    opens_at = datetime.fromisoformat(rules["opens_at"]).astimezone(LONDON)
    assert (opens_at.date(), opens_at.hour, opens_at.minute) == (opens_day, 9, 0)
    page.keyboard.press("n")
    expect(page.locator("#state-text")).to_contain_text("Calling opens")
    text = words(page, "#state-text")
    assert re.fullmatch(
        rf"Nobody may be called now\. Calling opens \w+,? {opens_day.day} \w+,? (at )?09:00"
        r" \(in (1|2) days? \d+ h\)\.",
        text,
    ), text

    # Open again: the next claim hands someone out.
    put_rules(server, seeded.supervisor, hours="always")
    page.keyboard.press("n")
    assert card_user(page) == seeded.people[0]["user_id"]
    expect(state).to_be_hidden()
    assert tab.problems == []


def test_a_callback_time_outside_calling_hours_is_refused_in_words(
    servers: Callable[..., Server], open_tab: Callable[..., Tab], book: Callable[..., Book]
) -> None:
    server = servers()
    seeded = book(2)
    populate(server, seeded.supervisor)
    tab = open_tab(timezone_id="Europe/London")
    page = sign_in(tab, server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    user = card_user(page)
    # Sundays are closed from now on (the claim above was made while calling was open).
    put_rules(server, seeded.supervisor, hours="mon-sat 00:00-24:00")
    today = datetime.now(LONDON).date()
    sunday = today + timedelta(days=(6 - today.weekday()) or 7)
    monday = sunday + timedelta(days=1)

    page.get_by_label("Call back", exact=True).check()
    page.get_by_label("Call back at").fill(f"{sunday.isoformat()}T12:00")
    page.get_by_role("button", name="Record outcome").click()
    error = page.locator("#callback-error")
    expect(error).to_contain_text(
        "Not recorded. That time is outside calling hours: nobody may be called then."
    )
    expect(error).to_contain_text("422")
    expect(page.get_by_label("Call back at")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Call back at")).to_be_focused()
    expect(page.locator("#call")).to_be_visible()
    assert card_user(page) == user

    page.get_by_label("Call back at").fill(f"{monday.isoformat()}T12:00")
    page.get_by_role("button", name="Record outcome").click()
    expect(page.locator("#last-result")).to_contain_text("Callback booked for")
    expect(page.locator("#callbacks-table tbody tr")).to_have_count(1)
    assert tab.problems == []


def test_an_agents_page_reads_the_calling_hours_and_its_picker_offers_only_open_times(
    servers: Callable[..., Server], open_tab: Callable[..., Tab], book: Callable[..., Book]
) -> None:
    """SPEC 8.1: the agent's console reads GET /api/calling-hours, no supervisors' route, so
    loading it answers no 403; and the callback picker refuses a closed time itself, before
    anything is sent."""
    server = servers()
    seeded = book(2)
    # Open all day every day but the day after tomorrow (London time): open now.
    today = datetime.now(LONDON).date()
    closed = today + timedelta(days=2)
    hours = "; ".join(f"{day} 00:00-24:00" for day in DAYS if day != DAYS[closed.weekday()])
    put_rules(server, seeded.supervisor, timezone="Europe/London", hours=hours, holidays=[])
    populate(server, seeded.supervisor)
    tab = open_tab(timezone_id="Europe/London")
    answers: list[tuple[str, str, int]] = []
    tab.page.on(
        "response",
        lambda response: answers.append(
            (response.request.method, urlsplit(response.url).path, response.status)
        ),
    )
    page = sign_in(tab, server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    card_user(page)
    page.wait_for_load_state("networkidle")
    assert [a for a in answers if a[2] == 403] == []
    assert [a for a in answers if a[1] == "/api/calling-hours"] == [
        ("GET", "/api/calling-hours", 200)
    ] * 2  # on start, and with the person handed out

    page.get_by_label("Call back", exact=True).check()
    expect(page.locator("#callback-hours")).to_have_text(
        f"Calling hours: {hours} (Europe/London time)."
    )
    completes = [url for url in tab.requests if url.endswith("/complete")]
    page.get_by_label("Call back at").fill(f"{closed.isoformat()}T12:00")
    page.get_by_role("button", name="Record outcome").click()
    expect(page.locator("#callback-error")).to_have_text(
        f"That time is outside calling hours. Calling hours: {hours} (Europe/London time)."
    )
    expect(page.get_by_label("Call back at")).to_have_attribute("aria-invalid", "true")
    assert [url for url in tab.requests if url.endswith("/complete")] == completes  # not sent
    open_day = today + timedelta(days=1)
    page.get_by_label("Call back at").fill(f"{open_day.isoformat()}T12:00")
    page.get_by_role("button", name="Record outcome").click()
    expect(page.locator("#last-result")).to_contain_text("Callback booked for")

    assert [a for a in answers if a[2] == 403] == []
    assert not [a for a in answers if a[1].startswith("/api/admin/")]
    assert same_origin_only(tab, server) == []
    assert tab.problems == []


def test_a_supervisor_changes_the_calling_rules_after_confirming_and_reads_compliance(
    servers: Callable[..., Server], open_tab: Callable[..., Tab], book: Callable[..., Book]
) -> None:
    server = servers()
    seeded = book(3)
    populate(server, seeded.supervisor)
    # Some activity for the report: two hand-outs today, one of them booking a callback.
    agent = sign_in(open_tab(), server, seeded.agents["agent-a"])
    agent.keyboard.press("n")
    card_user(agent)
    agent.keyboard.press("1")
    agent.keyboard.press("Enter")
    expect(agent.locator("#last-result")).to_contain_text("Recorded “No answer”")
    agent.keyboard.press("n")
    card_user(agent)
    tomorrow = datetime.now(LONDON).date() + timedelta(days=1)
    agent.get_by_label("Call back", exact=True).check()
    agent.get_by_label("Call back at").fill(f"{tomorrow.isoformat()}T11:00")
    agent.get_by_role("button", name="Record outcome").click()
    expect(agent.locator("#last-result")).to_contain_text("Callback booked for")

    tab = open_tab()
    sup = sign_in(tab, server, seeded.supervisor, "/console/supervisor")
    expect(sup.locator("#rules-now")).to_have_text("Calling is open now.")
    expect(sup.get_by_label("Hours", exact=True)).to_have_value("always")
    expect(sup.get_by_label("Time zone", exact=True)).to_have_value("Europe/London")

    # Unreadable hours are refused on the page, before any request.
    rules_form = sup.locator("#rules-form")
    sup.get_by_label("Hours", exact=True).fill("mon 9:00-10:00")
    rules_form.get_by_role("button", name="Apply changes…").click()
    expect(sup.locator("#rules-error")).to_have_text(
        "The hours cannot be read: each part reads DAYS HH:MM-HH:MM."
    )
    # A time zone the service does not know: its 422, in the panel.
    sup.get_by_label("Hours", exact=True).fill("always")
    sup.get_by_label("Time zone", exact=True).fill("Mars/Olympus_Mons")
    rules_form.get_by_role("button", name="Apply changes…").click()
    dialog = sup.get_by_role("dialog")
    expect(dialog).to_contain_text("timezone: Europe/London → Mars/Olympus_Mons")
    dialog.get_by_role("button", name="Apply").click()
    expect(sup.locator("#rules-error")).to_contain_text("Not changed: the service answered 422")
    sup.get_by_label("Time zone", exact=True).fill("Europe/London")

    # Never: asked first; Cancel changes nothing.
    sup.get_by_label("Hours", exact=True).fill("never")
    rules_form.get_by_role("button", name="Apply changes…").click()
    expect(dialog).to_contain_text("Change the calling rules?")
    expect(dialog).to_contain_text("hours: always → never")
    dialog.get_by_role("button", name="Cancel").click()
    auth = {"Authorization": f"Bearer {seeded.supervisor}"}
    assert httpx.get(f"{server.base}/api/admin/calling-rules", headers=auth).json()["hours"] == (
        "always"
    )
    rules_form.get_by_role("button", name="Apply changes…").click()
    dialog.get_by_role("button", name="Apply").click()
    expect(sup.locator("#announcer")).to_have_text("The calling rules were changed.")
    expect(sup.locator("#rules-now")).to_have_text(
        "Calling is closed, and these rules never open: nobody can be called."
    )
    in_force = httpx.get(f"{server.base}/api/admin/calling-rules", headers=auth).json()
    assert (in_force["hours"], in_force["open_now"], in_force["opens_at"]) == (
        "never",
        False,
        None,
    )
    # The agent's next claim follows.
    agent.keyboard.press("n")
    expect(agent.locator("#state")).to_contain_text("Outside calling hours")

    # The compliance report for today (the default range): the API's columns, the day, totals.
    sup.get_by_role("button", name="Show").click()
    table = sup.locator("#compliance-table")
    expect(table).to_be_visible()
    report = httpx.get(
        f"{server.base}/api/reports/compliance",
        params={
            "from": sup.get_by_label("From", exact=True).input_value(),
            "to": sup.get_by_label("To", exact=True).input_value(),
        },
        headers=auth,
    ).json()
    names = [c["name"] for c in report["columns"]]
    heads = table.locator("thead th")
    expect(heads).to_have_text(["Day", *(n.replace("_", " ") for n in names)])
    expect(heads.nth(1 + names.index("outside_hours"))).to_have_attribute(
        "title", report["columns"][names.index("outside_hours")]["description"]
    )
    body = table.locator("tbody tr")
    expect(body).to_have_count(len(report["days"]) + 1)
    totals = body.last
    expect(totals.locator("th")).to_have_text("Total")
    expect(totals.locator("td")).to_have_text([str(report["totals"][n]) for n in names])
    assert report["totals"]["handouts"] == 2
    assert report["totals"]["callbacks_booked"] == 1
    assert report["totals"]["outside_hours"] == 0
    expect(sup.locator("#compliance-result")).to_contain_text("days in Europe/London time")

    # A range that ends before it starts: the API's 422, in words.
    sup.get_by_label("From", exact=True).fill("2026-03-02")
    sup.get_by_label("To", exact=True).fill("2026-03-01")
    sup.get_by_role("button", name="Show").click()
    expect(sup.locator("#compliance-error")).to_have_text(
        "No report: the service answered 422 ValidationError: 'to' must not be before 'from'."
    )
    assert same_origin_only(tab, server) == []
    assert tab.problems == []
