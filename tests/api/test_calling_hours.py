"""GET /api/calling-hours (SPEC 8.1): for anyone signed in, the calling rules in force (a
supervisor's change included, as for next-user) and the window around now: ``opens_at`` the next
opening when closed, ``closes_at`` the next closing when open, each null when there is none.

The rules are chosen so that their state at "now" is certain whatever the hour the test runs: a
fixed-offset zone (``Etc/GMT-N``) puts the local time between 12:00 and 13:00, and the windows lie
well around it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.hours import DAY_NAMES, CallingRules
from tests.factories import Agent, new_agent

KEYS = {"timezone", "hours", "holidays", "open_now", "opens_at", "closes_at"}


@pytest.fixture
def supervisor(store_engine: Engine) -> Agent:
    return new_agent(store_engine, "boss", "supervisor")


@pytest.fixture
def agent(store_engine: Engine) -> Agent:
    return new_agent(store_engine, "caller")


def noon_zone() -> tuple[str, ZoneInfo]:
    """A fixed-offset zone whose local time is now between 12:00 and 13:00."""
    shift = (12 - datetime.now(UTC).hour + 12) % 24 - 12  # -12..11 hours ahead of UTC
    name = "Etc/UTC" if shift == 0 else f"Etc/GMT{-shift:+d}"  # Etc/GMT-5 is UTC+5
    zone = ZoneInfo(name)
    assert datetime.now(zone).hour == 12, name
    return name, zone


def set_rules(client: TestClient, supervisor: Agent, **rules: Any) -> None:
    answer = client.put("/api/admin/calling-rules", json=rules, headers=supervisor.auth)
    assert answer.status_code == 200, answer.text


def hours_of(client: TestClient, who: Agent) -> dict[str, Any]:
    answer = client.get("/api/calling-hours", headers=who.auth)
    assert answer.status_code == 200, answer.text
    body = dict(answer.json())
    assert set(body) == KEYS
    for key in ("opens_at", "closes_at"):
        if body[key] is not None:
            body[key] = datetime.fromisoformat(body[key])
    return body


def at(zone: ZoneInfo, day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)


def test_who_may_read_the_calling_hours(
    client: TestClient, store_engine: Engine, agent: Agent, supervisor: Agent
) -> None:
    assert client.get("/api/calling-hours").status_code == 401
    unknown = client.get("/api/calling-hours", headers={"Authorization": "Bearer cq_" + "0" * 64})
    assert (unknown.status_code, unknown.json()["error"]) == (401, "Unauthorized")
    scorer = new_agent(store_engine, "scorer", "scorer")
    refused = client.get("/api/calling-hours", headers=scorer.auth)
    assert (refused.status_code, refused.json()["error"]) == (403, "Forbidden")
    for who in (agent, supervisor):
        assert hours_of(client, who)["hours"] == "always"  # the tests' environment default


def test_always_and_never(client: TestClient, agent: Agent, supervisor: Agent) -> None:
    assert hours_of(client, agent) == {
        "timezone": "Europe/London",
        "hours": "always",
        "holidays": [],
        "open_now": True,
        "opens_at": None,
        "closes_at": None,  # it never closes
    }
    set_rules(client, supervisor, hours="never")
    assert hours_of(client, agent) == {
        "timezone": "Europe/London",
        "hours": "never",
        "holidays": [],
        "open_now": False,
        "opens_at": None,  # it never opens
        "closes_at": None,
    }


def test_always_closes_at_the_next_holiday(
    client: TestClient, agent: Agent, supervisor: Agent
) -> None:
    name, zone = noon_zone()
    today = datetime.now(zone).date()
    holiday = today + timedelta(days=3)
    set_rules(client, supervisor, timezone=name, hours="always", holidays=[holiday.isoformat()])
    assert hours_of(client, agent) == {
        "timezone": name,
        "hours": "always",
        "holidays": [holiday.isoformat()],
        "open_now": True,
        "opens_at": None,
        "closes_at": at(zone, holiday, 0),
    }


def test_a_weekly_window_open_now_closes_at_its_end(
    client: TestClient, agent: Agent, supervisor: Agent
) -> None:
    name, zone = noon_zone()
    today = datetime.now(zone).date()
    day = DAY_NAMES[today.weekday()]
    hours = f"{day} 10:00-14:00; {day} 15:00-16:00"
    set_rules(client, supervisor, timezone=name, hours=hours, holidays=[])
    assert hours_of(client, agent) == {
        "timezone": name,
        "hours": hours,
        "holidays": [],
        "open_now": True,
        "opens_at": None,
        "closes_at": at(zone, today, 14),
    }


def test_a_weekly_window_closed_now_opens_at_its_next_start_past_holidays(
    client: TestClient, agent: Agent, supervisor: Agent
) -> None:
    name, zone = noon_zone()
    today = datetime.now(zone).date()
    tomorrow = today + timedelta(days=1)
    # Open every day 10:00-14:00, but today and tomorrow are holidays.
    holidays = [today.isoformat(), tomorrow.isoformat()]
    set_rules(client, supervisor, timezone=name, hours="mon-sun 10:00-14:00", holidays=holidays)
    assert hours_of(client, agent) == {
        "timezone": name,
        "hours": "mon-sun 10:00-14:00",
        "holidays": holidays,
        "open_now": False,
        "opens_at": at(zone, today + timedelta(days=2), 10),
        "closes_at": None,
    }
    # Later today, no holiday: closed now, open this afternoon.
    day = DAY_NAMES[today.weekday()]
    set_rules(client, supervisor, hours=f"{day} 15:00-16:00", holidays=[])
    body = hours_of(client, agent)
    assert (body["open_now"], body["opens_at"], body["closes_at"]) == (
        False,
        at(zone, today, 15),
        None,
    )


def test_the_answer_is_the_rules_in_force_on_the_databases_clock(
    client: TestClient, agent: Agent, supervisor: Agent
) -> None:
    """The agents' answer agrees with the supervisors' route and with the rules' own
    decisions."""
    set_rules(client, supervisor, hours="mon-fri 08:00-21:00; sat 09:00-17:00")
    before = datetime.now(UTC)
    body = hours_of(client, agent)
    after = datetime.now(UTC)
    admin = client.get("/api/admin/calling-rules", headers=supervisor.auth).json()
    assert {k: body[k] for k in ("timezone", "hours", "holidays", "open_now")} == {
        k: admin[k] for k in ("timezone", "hours", "holidays", "open_now")
    }
    rules = CallingRules.parse(body["timezone"], body["hours"])
    if body["open_now"]:
        assert body["opens_at"] is None
        assert rules.next_close(before) <= body["closes_at"] <= rules.next_close(after)
    else:
        assert body["closes_at"] is None
        assert body["opens_at"] == datetime.fromisoformat(admin["opens_at"])
