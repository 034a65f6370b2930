"""The console's reading of the calling-hours grammar (SPEC 7.3), run in the browser: the agent's
callback picker refuses a time outside the window before the API's 422 does, so both must read
the rules alike, daylight-saving changes included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page

from tests.console.conftest import Server, Tab

RULES = {
    "timezone": "Europe/London",
    "hours": "mon-fri 08:00-21:00; sat 09:00-17:00",
    "holidays": ["2026-12-25"],
}


@pytest.fixture
def page(servers: Callable[..., Server], open_tab: Callable[..., Tab]) -> Page:
    server = servers()
    page = open_tab().page
    page.goto(server.base + "/console")
    return page


def within(page: Page, rules: dict[str, object], instant: str) -> bool:
    return bool(
        page.evaluate(
            "async ([rules, instant]) => {"
            " const m = await import('/console/static/calling-hours.js');"
            " return m.isWithinCallingHours(rules, new Date(instant)); }",
            [rules, instant],
        )
    )


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        ("2026-12-01T07:59:00Z", False),  # Tuesday 07:59 in London (GMT)
        ("2026-12-01T08:00:00Z", True),  # start inclusive
        ("2026-12-01T20:59:00Z", True),
        ("2026-12-01T21:00:00Z", False),  # end exclusive
        ("2026-12-05T08:30:00Z", False),  # Saturday before 09:00
        ("2026-12-05T16:59:00Z", True),
        ("2026-12-06T12:00:00Z", False),  # Sunday: unlisted, closed
        ("2026-12-25T12:00:00Z", False),  # a holiday closes a Friday
        ("2026-07-01T07:30:00Z", True),  # 08:30 in London in summer time (BST)
        ("2026-07-01T20:30:00Z", False),  # 21:30 BST
    ],
)
def test_the_weekly_window_in_the_rules_time_zone(page: Page, instant: str, expected: bool) -> None:
    assert within(page, RULES, instant) is expected


def test_always_never_24_00_comma_lists_and_the_spring_gap(page: Page) -> None:
    london = {"timezone": "Europe/London", "holidays": []}
    assert within(page, {**london, "hours": "always"}, "2026-12-06T03:00:00Z")
    assert not within(page, {**london, "hours": "never"}, "2026-12-01T12:00:00Z")
    late = {**london, "hours": "sat,sun 20:00-24:00"}
    assert within(page, late, "2026-12-06T23:59:00Z")
    assert not within(page, late, "2026-12-07T00:00:00Z")  # Monday 00:00
    # 29 March 2026: London skips 01:00-02:00. A window opening at 01:30 opens at 02:00 BST.
    gap = {**london, "hours": "sun 01:30-03:00"}
    assert not within(page, gap, "2026-03-29T00:59:00Z")  # 00:59 GMT
    assert within(page, gap, "2026-03-29T01:00:00Z")  # 02:00 BST, the first minute after
    # Another zone, and a day range that wraps past Sunday.
    ny = {"timezone": "America/New_York", "hours": "fri-mon 10:00-12:00", "holidays": []}
    assert within(page, ny, "2026-12-07T15:30:00Z")  # Monday 10:30 in New York
    assert not within(page, ny, "2026-12-08T15:30:00Z")  # Tuesday


def test_unreadable_rules_are_refused_with_a_reason(page: Page) -> None:
    problems = page.evaluate(
        "async (texts) => { const m = await import('/console/static/calling-hours.js');"
        " return texts.map((t) => { try { m.parseHours(t); return null; }"
        " catch (e) { return e instanceof m.RulesError ? e.message : 'other'; } }); }",
        ["mon 09:00", "funday 09:00-10:00", "mon 10:00-09:00", "mon 24:00-24:30", "mon 9:00-10:00"],
    )
    assert problems == [
        "each part reads DAYS HH:MM-HH:MM",
        "a day must be mon..sun, a range such as mon-fri, or a comma list",
        "a window must end after it starts",
        "times are HH:MM, 00:00 to 23:59, and 24:00 only as an end",
        "each part reads DAYS HH:MM-HH:MM",
    ]
