"""Calling hours (SPEC 7.3): the grammar, and the window around its edges: opening and closing
minutes, holidays, both daylight-saving changes in Europe/London, and other time zones.

Pure: no database. Instants are written in UTC with the local time beside them."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from app.hours import (
    DAY_SECONDS,
    CallingRules,
    RulesError,
    Window,
    parse_holidays,
    parse_hours,
    parse_timezone,
)

DEFAULT = "mon-fri 08:00-21:00; sat 09:00-17:00"
LONDON = "Europe/London"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hm(hours: int, minutes: int = 0) -> int:
    return hours * 3600 + minutes * 60


# -- the grammar ---------------------------------------------------------------------------------


def test_the_default_hours() -> None:
    week = parse_hours(DEFAULT)
    assert week[:5] == ((Window(hm(8), hm(21)),),) * 5
    assert week[5] == (Window(hm(9), hm(17)),)
    assert week[6] == ()


@pytest.mark.parametrize(
    ("spec", "open_days"),
    [
        ("mon 09:00-10:00", {0}),
        ("mon-wed 09:00-10:00", {0, 1, 2}),
        ("sat,sun 09:00-10:00", {5, 6}),
        ("mon-tue,fri 09:00-10:00", {0, 1, 4}),
        ("fri-mon 09:00-10:00", {4, 5, 6, 0}),  # a range may wrap round the week
        ("sun-sat 09:00-10:00", {6, 0, 1, 2, 3, 4, 5}),
        ("MON-Fri 09:00-10:00", {0, 1, 2, 3, 4}),  # day names in any case
        ("sat , sun 09:00 - 10:00", {5, 6}),  # spaces around ',' and '-'
        ("  tue 09:00-10:00 ;  ", {1}),  # a trailing ';'
    ],
)
def test_day_forms(spec: str, open_days: set[int]) -> None:
    week = parse_hours(spec)
    assert {d for d in range(7) if week[d]} == open_days
    assert all(week[d] == (Window(hm(9), hm(10)),) for d in open_days)


def test_windows_of_a_day_are_merged_and_sorted() -> None:
    week = parse_hours("mon 14:00-16:00; mon 08:00-12:00; mon-tue 11:00-13:00; mon 16:00-17:00")
    assert week[0] == (Window(hm(8), hm(13)), Window(hm(14), hm(17)))
    assert week[1] == (Window(hm(11), hm(13)),)


def test_always_never_and_24_00() -> None:
    assert parse_hours("always") == ((Window(0, DAY_SECONDS),),) * 7
    assert parse_hours(" Always ") == parse_hours("always")
    assert parse_hours("never") == ((),) * 7
    assert parse_hours("sun 22:00-24:00")[6] == (Window(hm(22), DAY_SECONDS),)
    assert parse_hours("sun 00:00-00:01")[6] == (Window(0, 60),)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        ";",
        "mon-fri",
        "mon-fri 08:00",
        "mon-fri 8:00-21:00",
        "mon-fri 08:00-21:0",
        "mon-fri 08:00-25:00",
        "mon-fri 24:00-24:00",
        "mon-fri 08:60-21:00",
        "mon-fri 21:00-08:00",  # windows do not cross midnight
        "mon-fri 08:00-08:00",
        "mon-fri 08:00-21:00 extra",
        "mon-fri 08:00-21:00; always",
        "monday 08:00-21:00",
        "mon-fri, 08:00-21:00",
        "mon-fri 08:00-21:00-22:00",
        "x" * 1001,
    ],
)
def test_bad_hours_are_refused(spec: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_hours(spec)
    assert str(caught.value)


@pytest.mark.parametrize(
    "spec",
    [
        "zqxw 08:00-21:00",
        "mon-zqxw 08:00-21:00",
        "mon-fri zqxw",
        "mon-fri 08:00-zqxw",
        "mon-fri 08:00-21:00 zqxw",
        "mon-fri 08:00-21:00; zqxw",
        "zqxw",
    ],
)
def test_errors_never_repeat_the_value(spec: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_hours(spec)
    assert "zqxw" not in str(caught.value)
    assert "window" in str(caught.value) or "empty" in str(caught.value)


def test_time_zones_and_holidays() -> None:
    assert parse_timezone("America/New_York").key == "America/New_York"
    for bad in ("", "Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", "Europe/"):
        with pytest.raises(RulesError) as caught:
            parse_timezone(bad)
        assert "Mars" not in str(caught.value) and "passwd" not in str(caught.value)
    assert parse_holidays("") == ()
    assert parse_holidays(" 2026-12-26, 2026-12-25 ,2026-12-25,") == (
        date(2026, 12, 25),
        date(2026, 12, 26),
    )
    for bad in ("2026-12-32", "25/12/2026", "2026-12-25;2026-12-26", "20261225", "tomorrow"):
        with pytest.raises(RulesError):
            parse_holidays(bad)


def test_rules_are_parsed_once_per_distinct_value() -> None:
    first = CallingRules.parse(LONDON, DEFAULT, [date(2026, 12, 25)])
    assert CallingRules.parse(LONDON, f" {DEFAULT} ", (date(2026, 12, 25),)) is first
    assert first.as_dict() == {"timezone": LONDON, "hours": DEFAULT, "holidays": ["2026-12-25"]}


def test_naive_instants_are_refused() -> None:
    rules = CallingRules.parse(LONDON, DEFAULT)
    with pytest.raises(ValueError):
        rules.is_open(datetime(2026, 6, 1, 12))
    with pytest.raises(ValueError):
        rules.next_open(datetime(2026, 6, 1, 12))


# -- edges in Europe/London ------------------------------------------------------------------------

# Winter, GMT = UTC. Friday 2026-01-16, Saturday 17, Sunday 18, Monday 19.
WINTER_EDGES = [
    ("2026-01-16T07:59:59", False, "2026-01-16T08:00:00"),  # Fri 07:59:59: not yet
    ("2026-01-16T08:00:00", True, "2026-01-16T08:00:00"),  # Fri 08:00: the opening minute
    ("2026-01-16T20:59:59", True, "2026-01-16T20:59:59"),  # Fri, last second
    ("2026-01-16T21:00:00", False, "2026-01-17T09:00:00"),  # Fri 21:00: closed (end exclusive)
    ("2026-01-17T08:59:00", False, "2026-01-17T09:00:00"),  # Sat
    ("2026-01-17T09:00:00", True, "2026-01-17T09:00:00"),
    ("2026-01-17T16:59:00", True, "2026-01-17T16:59:00"),
    ("2026-01-17T17:00:00", False, "2026-01-19T08:00:00"),  # Sat 17:00 -> Mon 08:00
    ("2026-01-18T12:00:00", False, "2026-01-19T08:00:00"),  # Sunday: unlisted, closed
]


@pytest.mark.parametrize(("instant", "is_open", "opens_at"), WINTER_EDGES)
def test_opening_and_closing_minutes(instant: str, is_open: bool, opens_at: str) -> None:
    rules = CallingRules.parse(LONDON, DEFAULT)
    assert rules.is_open(utc(instant)) is is_open
    assert rules.next_open(utc(instant)) == utc(opens_at)


def test_summer_time_shifts_the_window_by_an_hour_in_utc() -> None:
    rules = CallingRules.parse(LONDON, DEFAULT)
    # Monday 2026-06-15, BST (UTC+1): 08:00 local is 07:00 UTC, 21:00 local is 20:00 UTC.
    assert not rules.is_open(utc("2026-06-15T06:59:59"))
    assert rules.is_open(utc("2026-06-15T07:00:00"))
    assert rules.is_open(utc("2026-06-15T19:59:59"))
    assert not rules.is_open(utc("2026-06-15T20:00:00"))
    assert rules.next_open(utc("2026-06-15T20:00:00")) == utc("2026-06-16T07:00:00")


def test_a_holiday_closes_the_whole_day() -> None:
    christmas = CallingRules.parse(LONDON, DEFAULT, [date(2026, 12, 25)])  # a Friday
    assert not christmas.is_open(utc("2026-12-25T12:00:00"))
    assert christmas.is_open(utc("2026-12-24T20:59:00"))
    assert christmas.next_open(utc("2026-12-24T21:00:00")) == utc("2026-12-26T09:00:00")
    both = CallingRules.parse(LONDON, DEFAULT, [date(2026, 12, 25), date(2026, 12, 26)])
    assert both.next_open(utc("2026-12-24T21:00:00")) == utc("2026-12-28T08:00:00")
    # 'always' still closes on a holiday, from local midnight to local midnight (BST here).
    summer = CallingRules.parse(LONDON, "always", [date(2026, 8, 31)])
    assert summer.is_open(utc("2026-08-30T22:59:59"))
    assert not summer.is_open(utc("2026-08-30T23:00:00"))
    assert not summer.is_open(utc("2026-08-31T22:59:59"))
    assert summer.next_open(utc("2026-08-31T12:00:00")) == utc("2026-08-31T23:00:00")


def test_spring_change_in_london() -> None:
    """Sunday 2026-03-29: at 01:00 GMT the clocks go to 02:00 BST; 01:00-01:59 never happens."""
    rules = CallingRules.parse(LONDON, DEFAULT)
    # Saturday 17:00 GMT closes; Monday 08:00 is BST now: 07:00 UTC.
    assert rules.next_open(utc("2026-03-28T17:00:00")) == utc("2026-03-30T07:00:00")

    gap = CallingRules.parse(LONDON, "sun 01:30-03:00")
    # The start does not exist that day: the window opens at the first existing minute after
    # it, 02:00 BST (01:00 UTC), and closes at 03:00 BST (02:00 UTC).
    assert not gap.is_open(utc("2026-03-29T00:59:59"))  # 00:59:59 GMT
    assert gap.is_open(utc("2026-03-29T01:00:00"))  # 02:00 BST
    assert gap.is_open(utc("2026-03-29T01:59:59"))
    assert not gap.is_open(utc("2026-03-29T02:00:00"))  # 03:00 BST
    assert gap.next_open(utc("2026-03-28T12:00:00")) == utc("2026-03-29T01:00:00")
    # The next Sunday, in BST: 01:30 BST is 00:30 UTC.
    assert gap.next_open(utc("2026-03-29T02:00:00")) == utc("2026-04-05T00:30:00")

    swallowed = CallingRules.parse(LONDON, "sun 01:10-01:50")
    # Wholly inside the gap: that Sunday it never opens; the next Sunday it does.
    assert swallowed.next_open(utc("2026-03-29T00:00:00")) == utc("2026-04-05T00:10:00")

    midnight = CallingRules.parse(LONDON, "sat 22:00-24:00; sun 00:00-08:00")
    assert midnight.is_open(utc("2026-03-29T00:59:59"))  # 00:59:59 GMT
    assert midnight.is_open(utc("2026-03-29T01:00:00"))  # 02:00 BST
    assert midnight.is_open(utc("2026-03-29T06:59:59"))  # 07:59:59 BST
    assert not midnight.is_open(utc("2026-03-29T07:00:00"))  # 08:00 BST


def test_autumn_change_in_london() -> None:
    """Sunday 2026-10-25: at 02:00 BST (01:00 UTC) the clocks go back to 01:00 GMT; 01:00-01:59
    happens twice."""
    rules = CallingRules.parse(LONDON, DEFAULT)
    # Saturday 17:00 BST (16:00 UTC) closes; Monday 08:00 is GMT again: 08:00 UTC.
    assert rules.next_open(utc("2026-10-24T16:00:00")) == utc("2026-10-26T08:00:00")
    assert not rules.is_open(utc("2026-10-24T16:00:00"))
    assert rules.is_open(utc("2026-10-24T15:59:59"))

    twice = CallingRules.parse(LONDON, "sun 01:15-01:45")
    # Open whenever the wall clock reads 01:15-01:44, which it does twice that night.
    assert twice.is_open(utc("2026-10-25T00:15:00"))  # 01:15 BST
    assert not twice.is_open(utc("2026-10-25T00:45:00"))  # 01:45 BST
    assert not twice.is_open(utc("2026-10-25T01:14:59"))  # 01:14:59 GMT
    assert twice.is_open(utc("2026-10-25T01:15:00"))  # 01:15 GMT
    assert not twice.is_open(utc("2026-10-25T01:45:00"))
    assert twice.next_open(utc("2026-10-24T12:00:00")) == utc("2026-10-25T00:15:00")
    assert twice.next_open(utc("2026-10-25T00:50:00")) == utc("2026-10-25T01:15:00")

    back_into = CallingRules.parse(LONDON, "sun 00:30-01:30")
    # At 01:31 BST it is closed; when the clocks go back to 01:00 GMT the window is open again.
    assert not back_into.is_open(utc("2026-10-25T00:31:00"))
    assert back_into.next_open(utc("2026-10-25T00:31:00")) == utc("2026-10-25T01:00:00")
    assert back_into.is_open(utc("2026-10-25T01:29:59"))
    assert not back_into.is_open(utc("2026-10-25T01:30:00"))


def test_new_york_hours_and_its_own_changes() -> None:
    """The TCPA's 8am to 9pm local, every day, in America/New_York (EST UTC-5, EDT UTC-4)."""
    rules = CallingRules.parse("America/New_York", "mon-sun 08:00-21:00")
    # Winter.
    assert not rules.is_open(utc("2026-01-15T12:59:59"))
    assert rules.is_open(utc("2026-01-15T13:00:00"))
    assert rules.is_open(utc("2026-01-16T01:59:59"))  # 20:59:59 EST the day before
    assert not rules.is_open(utc("2026-01-16T02:00:00"))
    # Spring forward on Sunday 2026-03-08 at 02:00 EST: Saturday 08:00 EST, Sunday 08:00 EDT.
    assert rules.next_open(utc("2026-03-07T02:00:00")) == utc("2026-03-07T13:00:00")
    assert rules.next_open(utc("2026-03-08T02:00:00")) == utc("2026-03-08T12:00:00")
    # Fall back on Sunday 2026-11-01 at 02:00 EDT: Sunday 08:00 EST is 13:00 UTC.
    assert rules.next_open(utc("2026-11-01T02:00:00")) == utc("2026-11-01T13:00:00")
    gap = CallingRules.parse("America/New_York", "sun 02:30-03:30")
    assert gap.next_open(utc("2026-03-08T00:00:00")) == utc("2026-03-08T07:00:00")  # 03:00 EDT
    # The same instant is open in London and closed in New York.
    london = CallingRules.parse(LONDON, "mon-sun 08:00-21:00")
    assert london.is_open(utc("2026-01-15T12:00:00"))
    assert not rules.is_open(utc("2026-01-15T12:00:00"))


def test_never_and_always() -> None:
    never = CallingRules.parse(LONDON, "never")
    assert not never.is_open(utc("2026-06-15T12:00:00"))
    assert never.next_open(utc("2026-06-15T12:00:00")) is None
    assert never.never_opens
    always = CallingRules.parse("Asia/Tokyo", "always")
    assert always.is_open(utc("2026-06-15T03:00:00"))
    assert always.next_open(utc("2026-06-15T03:00:00")) == utc("2026-06-15T03:00:00")
    # Holidays everywhere but never all days: the first ordinary day.
    holidays = [date(2026, 6, 15) + timedelta(days=n) for n in range(20)]
    busy = CallingRules.parse(LONDON, "mon 09:00-10:00", holidays)
    assert busy.next_open(utc("2026-06-15T00:00:00")) == utc("2026-07-06T08:00:00")


ZONES_AND_HOURS = [
    (LONDON, DEFAULT),
    (LONDON, "sun 01:15-01:45; sun 00:30-01:30; sat 22:00-24:00"),
    ("America/New_York", "mon-sun 08:00-21:00"),
    ("America/New_York", "sun 01:30-02:30; sat 23:00-24:00"),
    ("Australia/Lord_Howe", "mon-sun 01:45-02:15; fri 09:00-17:00"),  # a 30-minute change
    ("Asia/Kolkata", "mon-fri 09:30-18:00"),
]


@pytest.mark.parametrize(("zone", "hours"), ZONES_AND_HOURS)
def test_next_open_is_the_first_open_minute_found_by_walking(zone: str, hours: str) -> None:
    """next_open agrees with is_open walked minute by minute, around both of each year's
    changes and on ordinary days."""
    rules = CallingRules.parse(zone, hours, [date(2026, 4, 3)])
    rng = random.Random(14)
    starts = [
        utc("2026-03-27T00:00:00"),
        utc("2026-04-03T00:00:00"),
        utc("2026-10-01T00:00:00"),
        utc("2026-10-23T00:00:00"),
        utc("2026-10-30T00:00:00"),
    ]
    for start in starts:
        for _ in range(12):
            instant = start + timedelta(seconds=rng.randrange(4 * 86_400))
            expected = instant
            if not rules.is_open(expected):
                expected = expected.replace(second=0, microsecond=0) + timedelta(minutes=1)
                while not rules.is_open(expected):
                    expected += timedelta(minutes=1)
                # The minute before the opening was closed: the answer is the opening itself.
                assert not rules.is_open(expected - timedelta(seconds=1))
            assert rules.next_open(instant) == expected, (zone, hours, instant)
