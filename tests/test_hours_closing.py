"""When calling closes (``CallingRules.next_close``): the first instant at or after a given one
outside the window, for GET /api/calling-hours' ``closes_at`` (SPEC 8.1). The counterpart of
``next_open``, with the same daylight-saving cases in Europe/London, and checked against a
minute-by-minute walk of the clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from app.hours import CallingRules

LONDON = "Europe/London"
DEFAULT = "mon-fri 08:00-21:00; sat 09:00-17:00"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Winter, GMT = UTC. Friday 2026-01-16, Saturday 17, Sunday 18.
@pytest.mark.parametrize(
    ("instant", "closes_at"),
    [
        ("2026-01-16T07:59:59", "2026-01-16T07:59:59"),  # closed: now
        ("2026-01-16T08:00:00", "2026-01-16T21:00:00"),
        ("2026-01-16T20:59:59", "2026-01-16T21:00:00"),  # end exclusive
        ("2026-01-17T09:00:00", "2026-01-17T17:00:00"),
        ("2026-01-18T12:00:00", "2026-01-18T12:00:00"),  # Sunday, closed
    ],
)
def test_a_window_closes_at_its_end(instant: str, closes_at: str) -> None:
    rules = CallingRules.parse(LONDON, DEFAULT)
    assert rules.next_close(utc(instant)) == utc(closes_at)


def test_always_never_and_holidays() -> None:
    assert CallingRules.parse(LONDON, "always").next_close(utc("2026-06-01T12:00:00")) is None
    never = CallingRules.parse(LONDON, "never")
    assert never.next_close(utc("2026-06-01T12:00:00")) == utc("2026-06-01T12:00:00")
    # 'always' closes on a holiday, at local midnight (BST: 23:00 UTC the day before); the
    # nearest holiday ahead counts, however far.
    summer = CallingRules.parse(LONDON, "always", [date(2026, 8, 31), date(2027, 1, 1)])
    assert summer.next_close(utc("2026-05-01T12:00:00")) == utc("2026-08-30T23:00:00")
    assert summer.next_close(utc("2026-09-01T00:00:00")) == utc("2027-01-01T00:00:00")
    # A window running to midnight before a holiday closes at midnight.
    christmas = CallingRules.parse(LONDON, "mon-sun 00:00-24:00", [date(2026, 12, 25)])
    assert christmas.next_close(utc("2026-12-24T20:00:00")) == utc("2026-12-25T00:00:00")


def test_windows_across_midnight_close_once() -> None:
    midnight = CallingRules.parse(LONDON, "sat 22:00-24:00; sun 00:00-08:00")
    assert midnight.next_close(utc("2026-01-17T23:00:00")) == utc("2026-01-18T08:00:00")
    week = CallingRules.parse(LONDON, "mon-sat 00:00-24:00")
    assert week.next_close(utc("2026-01-19T12:00:00")) == utc("2026-01-25T00:00:00")  # Sunday


def test_daylight_saving_changes_in_london() -> None:
    # Spring, Sunday 2026-03-29: at 01:00 GMT the clocks go to 02:00 BST.
    gap = CallingRules.parse(LONDON, "sun 01:30-03:00")
    assert gap.next_close(utc("2026-03-29T01:00:00")) == utc("2026-03-29T02:00:00")  # 03:00 BST
    into_gap = CallingRules.parse(LONDON, "sun 00:00-01:30")
    # The wall clock jumps from 01:00 to 02:00, past the window's end: it closes at the jump.
    assert into_gap.next_close(utc("2026-03-29T00:30:00")) == utc("2026-03-29T01:00:00")
    # Autumn, Sunday 2026-10-25: at 02:00 BST (01:00 UTC) the clocks go back to 01:00 GMT.
    twice = CallingRules.parse(LONDON, "sun 01:15-01:45")
    assert twice.next_close(utc("2026-10-25T00:15:00")) == utc("2026-10-25T00:45:00")
    assert twice.next_close(utc("2026-10-25T01:15:00")) == utc("2026-10-25T01:45:00")


def minute_walk(rules: CallingRules, instant: datetime, days: int = 10) -> datetime | None:
    if not rules.is_open(instant):
        return instant
    first = (instant + timedelta(minutes=1)).replace(second=0, microsecond=0)
    for minute in range(days * 24 * 60):
        moment = first + timedelta(minutes=minute)
        if not rules.is_open(moment):
            return moment
    return None


@pytest.mark.parametrize(
    "zone", ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
def test_next_close_agrees_with_walking_the_clock(zone: str) -> None:
    """Every quarter of a day through the weeks of both changes of 2026 (and Lord Howe's
    half-hour ones), for rules of several shapes: the same answer as walking minute by minute."""
    shapes = [
        DEFAULT,
        "sun 01:30-03:00; mon-sat 00:00-24:00",
        "sat 22:00-24:00; sun 00:00-08:00",
        "fri-mon 10:00-12:00; tue 00:00-24:00",
    ]
    starts = [utc("2026-03-26T03:17:00"), utc("2026-10-22T03:17:00"), utc("2026-04-02T03:17:00")]
    for shape in shapes:
        rules = CallingRules.parse(zone, shape, [date(2026, 4, 5), date(2026, 10, 27)])
        for start in starts:
            for step in range(0, 8 * 4):
                instant = start + timedelta(hours=6 * step)
                assert rules.next_close(instant) == minute_walk(rules, instant), (
                    shape,
                    instant,
                )
