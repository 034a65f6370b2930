"""The calling rules in force (SPEC 7.3): environment defaults, supervisors' run-time changes
through GET|PUT /api/admin/calling-rules (audited, applied by every process on its next request),
the column a claim statement folds them in with, their history, and the 409 OutsideCallingHours
answer with its Retry-After."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.api import errors as api_errors
from app.auth.identity import authenticate_token
from app.config import Settings
from app.errors import InvalidInput, OutsideCallingHours
from app.hours import CallingRules
from app.rules.calling import (
    load_calling_rules,
    require_callback_inside,
    require_open,
    rules_timeline,
    update_calling_rules,
)
from app.services import Services
from tests.api.test_agents_api import assert_error, fetch_all
from tests.conftest import CRON_SECRET, SUPPRESSION_KEY
from tests.factories import new_agent
from tests.processes import clean_env, free_port, stop, wait_ready

RULES = "/api/admin/calling-rules"
DEFAULT_HOURS = "mon-fri 08:00-21:00; sat 09:00-17:00"
DEFAULT_RULES = {"timezone": "Europe/London", "hours": DEFAULT_HOURS, "holidays": []}


def rules_body(response: Any) -> dict[str, Any]:
    body = dict(response.json())
    return {k: body[k] for k in ("timezone", "hours", "holidays")}


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()  # type: ignore[no-any-return]


# -- storage -------------------------------------------------------------------------------------


def test_defaults_come_from_the_environment(
    make_settings: Callable[..., Settings], store_engine: Engine
) -> None:
    settings = make_settings(
        calling_timezone="America/New_York",
        calling_hours="mon-sun 08:00-21:00",
        calling_holidays="2026-07-04,2026-11-26",
    )
    with store_engine.connect() as conn:
        rules = load_calling_rules(conn, settings)
    assert rules.as_dict() == {
        "timezone": "America/New_York",
        "hours": "mon-sun 08:00-21:00",
        "holidays": ["2026-07-04", "2026-11-26"],
    }


def test_a_change_is_stored_per_field_and_audited(
    make_settings: Callable[..., Settings], store_engine: Engine
) -> None:
    london = make_settings()
    new_york = make_settings(calling_timezone="America/New_York")
    boss = new_agent(store_engine, "boss", "supervisor")
    with store_engine.begin() as conn:
        after = update_calling_rules(conn, london, {"hours": "mon-sun 09:00-20:00"}, boss.id)
    assert after.as_dict() == {**DEFAULT_RULES, "hours": "mon-sun 09:00-20:00"}
    with store_engine.connect() as conn:
        # Another process keeps its own default for the fields nobody changed.
        assert load_calling_rules(conn, new_york).as_dict() == {
            "timezone": "America/New_York",
            "hours": "mon-sun 09:00-20:00",
            "holidays": [],
        }
    with store_engine.begin() as conn:
        update_calling_rules(
            conn, new_york, {"timezone": "Europe/London", "holidays": [date(2026, 12, 25)]}, None
        )
        # The same values again: stored, but no change to audit.
        update_calling_rules(conn, london, {"hours": "mon-sun 09:00-20:00"}, boss.id)
    with store_engine.connect() as conn:
        for settings in (london, new_york):
            assert load_calling_rules(conn, settings).as_dict() == {
                "timezone": "Europe/London",
                "hours": "mon-sun 09:00-20:00",
                "holidays": ["2026-12-25"],
            }
    changes = fetch_all(
        store_engine,
        "SELECT old_rules, new_rules, changed_by FROM calling_rules_changes ORDER BY id",
    )
    assert changes == [
        {
            "old_rules": DEFAULT_RULES,
            "new_rules": {**DEFAULT_RULES, "hours": "mon-sun 09:00-20:00"},
            "changed_by": boss.id,
        },
        {
            "old_rules": {
                "timezone": "America/New_York",
                "hours": "mon-sun 09:00-20:00",
                "holidays": [],
            },
            "new_rules": {
                "timezone": "Europe/London",
                "hours": "mon-sun 09:00-20:00",
                "holidays": ["2026-12-25"],
            },
            "changed_by": None,
        },
    ]


def test_bad_values_are_invalid_input_and_write_nothing(
    settings: Settings, store_engine: Engine
) -> None:
    for changes, field in (
        ({"hours": "mon-fri 8-21"}, "hours"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"hours": "always", "timezone": "Nowhere/Land"}, "timezone"),
    ):
        with store_engine.begin() as conn, pytest.raises(InvalidInput) as caught:
            update_calling_rules(conn, settings, changes, None)
        assert caught.value.fields[0]["loc"] == ["body", field]
    assert fetch_all(store_engine, "SELECT * FROM calling_rules") == []
    assert fetch_all(store_engine, "SELECT * FROM calling_rules_changes") == []


def test_the_rules_read_with_the_agent_are_the_rules_in_force(
    services: Services, store_engine: Engine
) -> None:
    """The request's authentication statement reads the stored change beside the agent; the
    rules it gives (``Services.calling_rules_for``) are those of a query of their own, before
    and after a change."""
    settings = services.settings
    boss = new_agent(store_engine, "boss", "supervisor")
    token = boss.auth["Authorization"].removeprefix("Bearer ")

    def read_with_the_agent() -> CallingRules:
        with store_engine.connect() as conn:
            found = authenticate_token(conn, token)
            rules = services.calling_rules_for(found.calling_rules)
            assert load_calling_rules(conn, settings) == rules
            return rules

    assert read_with_the_agent() == settings.calling_rules
    with store_engine.begin() as conn:
        update_calling_rules(conn, settings, {"holidays": [date(2026, 12, 25)]}, boss.id)
    assert read_with_the_agent().holidays == (date(2026, 12, 25),)
    with store_engine.begin() as conn:
        update_calling_rules(conn, settings, {"hours": "never", "timezone": "Asia/Tokyo"}, None)
    assert read_with_the_agent().as_dict() == {
        "timezone": "Asia/Tokyo",
        "hours": "never",
        "holidays": ["2026-12-25"],
    }


def test_stored_rules_a_later_tzdata_no_longer_knows_fall_back_to_the_environment(
    settings: Settings, store_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calling_rules (id, timezone, updated_at)"
                " VALUES (1, 'Gone/Zone', now())"
            )
        )
    with caplog.at_level(logging.ERROR), store_engine.connect() as conn:
        assert load_calling_rules(conn, settings) == settings.calling_rules
    assert "calling_rules.stored_rules_unusable" in caplog.text


def test_the_timeline_gives_the_rules_of_each_moment(
    settings: Settings, store_engine: Engine
) -> None:
    first = datetime(2026, 3, 1, tzinfo=UTC)
    second = datetime(2026, 3, 8, tzinfo=UTC)
    with store_engine.begin() as conn:
        assert rules_timeline(conn, settings).at(first).as_dict() == DEFAULT_RULES
        for at, old, new in (
            (first, DEFAULT_RULES, {**DEFAULT_RULES, "hours": "always"}),
            (second, {**DEFAULT_RULES, "hours": "always"}, {**DEFAULT_RULES, "hours": "never"}),
        ):
            conn.execute(
                text(
                    "INSERT INTO calling_rules_changes (old_rules, new_rules, changed_at)"
                    " VALUES (CAST(:o AS jsonb), CAST(:n AS jsonb), :at)"
                ),
                {"o": json.dumps(old), "n": json.dumps(new), "at": at},
            )
        timeline = rules_timeline(conn, settings)
    assert timeline.at(first - timedelta(microseconds=1)).hours == DEFAULT_HOURS
    assert timeline.at(datetime(2000, 1, 1, tzinfo=UTC)).hours == DEFAULT_HOURS
    assert timeline.at(first).hours == "always"
    assert timeline.at(second - timedelta(seconds=1)).hours == "always"
    assert timeline.at(second).hours == "never"
    assert timeline.at(datetime(2030, 1, 1, tzinfo=UTC)).hours == "never"


# -- the checks the claim and completion paths raise ----------------------------------------------


def test_require_open_and_require_callback_inside() -> None:
    rules = CallingRules.parse("Europe/London", DEFAULT_HOURS)
    friday_evening = datetime(2026, 1, 16, 21, 0, 0, 250_000, tzinfo=UTC)
    with pytest.raises(OutsideCallingHours) as caught:
        require_open(rules, friday_evening)
    assert caught.value.opens_at == datetime(2026, 1, 17, 9, 0, tzinfo=UTC)
    # 11 h 59 min 59.75 s to go: rounded up to whole seconds.
    assert caught.value.retry_after == 12 * 3600
    require_open(rules, datetime(2026, 1, 16, 20, 59, tzinfo=UTC))

    with pytest.raises(OutsideCallingHours) as never:
        require_open(CallingRules.parse("Europe/London", "never"), friday_evening)
    assert never.value.opens_at is None and never.value.retry_after is None

    require_callback_inside(rules, datetime(2026, 1, 17, 9, 0, tzinfo=UTC))
    with pytest.raises(InvalidInput) as bad:
        require_callback_inside(rules, datetime(2026, 1, 18, 12, 0, tzinfo=UTC))
    assert bad.value.fields == [
        {"loc": ["body", "callback_at"], "msg": "callback_at is outside calling hours"}
    ]


def error_app(raise_it: Callable[[], None]) -> TestClient:
    """The service's own error handlers on a route that raises: how next-user will answer."""
    app = FastAPI()
    api_errors.install(app)

    @app.post("/next-user")
    def next_user() -> None:
        raise_it()

    return TestClient(app, raise_server_exceptions=False)


def test_outside_calling_hours_is_409_with_opens_at_and_retry_after() -> None:
    rules = CallingRules.parse("Europe/London", DEFAULT_HOURS)
    now = datetime(2026, 1, 17, 17, 0, 0, 1, tzinfo=UTC)  # Saturday, just after closing

    response = error_app(lambda: require_open(rules, now)).post("/next-user")

    assert response.status_code == 409
    assert response.json() == {
        "error": "OutsideCallingHours",
        "detail": "outside calling hours: nobody may be called now; see opens_at",
        "opens_at": "2026-01-19T08:00:00+00:00",
    }
    # Monday 08:00 is 38 h 59 min 59.999999 s away: 140,400 whole seconds, rounded up.
    assert response.headers["retry-after"] == "140400"


def test_rules_that_never_open_are_409_without_retry_after() -> None:
    rules = CallingRules.parse("Europe/London", "never")
    now = datetime(2026, 1, 17, 12, tzinfo=UTC)

    response = error_app(lambda: require_open(rules, now)).post("/next-user")

    assert response.status_code == 409
    assert response.json() == {
        "error": "OutsideCallingHours",
        "detail": "the calling rules never open: nobody may be called",
        "opens_at": None,
    }
    assert "retry-after" not in response.headers


def test_the_callback_at_check_renders_as_a_standard_422() -> None:
    rules = CallingRules.parse("Europe/London", DEFAULT_HOURS)
    sunday = datetime(2026, 1, 18, 12, tzinfo=UTC)

    response = error_app(lambda: require_callback_inside(rules, sunday)).post("/next-user")

    assert_error(response, 422, "ValidationError")
    assert response.json()["fields"] == [
        {"loc": ["body", "callback_at"], "msg": "callback_at is outside calling hours"}
    ]


# -- the routes ----------------------------------------------------------------------------------


def test_get_and_put_calling_rules(client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    got = client.get(RULES, headers=boss.auth)
    assert got.status_code == 200, got.text
    body = got.json()
    assert rules_body(got) == DEFAULT_RULES
    now = db_now(store_engine)
    rules = CallingRules.parse("Europe/London", DEFAULT_HOURS)
    assert body["open_now"] is rules.is_open(now)
    opens_at = datetime.fromisoformat(body["opens_at"])
    expected = rules.next_open(now)
    assert expected is not None
    if body["open_now"]:
        assert abs(opens_at - now) < timedelta(seconds=5)
    else:
        assert opens_at == expected

    put = client.put(RULES, json={"hours": "always", "holidays": ["2026-12-25"]}, headers=boss.auth)
    assert put.status_code == 200, put.text
    assert rules_body(put) == {**DEFAULT_RULES, "hours": "always", "holidays": ["2026-12-25"]}
    assert put.json()["open_now"] is (db_now(store_engine).date() != date(2026, 12, 25))
    assert rules_body(client.get(RULES, headers=boss.auth)) == rules_body(put)

    never = client.put(RULES, json={"hours": "never"}, headers=boss.auth)
    assert never.json()["open_now"] is False and never.json()["opens_at"] is None
    # An empty object changes nothing and answers the rules in force.
    assert rules_body(client.put(RULES, json={}, headers=boss.auth)) == rules_body(never)
    assert len(fetch_all(store_engine, "SELECT * FROM calling_rules_changes")) == 2


BAD_BODIES = [
    ("unknown field", {"days": "mon"}),
    ("null hours", {"hours": None}),
    ("null timezone", {"timezone": None}),
    ("null holidays", {"holidays": None}),
    ("number hours", {"hours": 9}),
    ("bad hours", {"hours": "weekdays nine-to-five H0stile"}),
    ("bad time", {"hours": "mon-fri 08:00-25:00"}),
    ("bad zone", {"timezone": "H0stile/Zone"}),
    ("zone path", {"timezone": "../../etc/passwd"}),
    ("holiday number", {"holidays": [1767225600]}),
    ("holiday datetime", {"holidays": ["2026-12-25T00:00:00Z"]}),
    ("holiday bad", {"holidays": ["2026-13-45"]}),
    ("holiday string", {"holidays": "2026-12-25"}),
    ("huge hours", {"hours": "mon 08:00-09:00;" * 200}),
    ("too many holidays", {"holidays": ["2026-12-25"] * 1001}),
    ("not an object", ["hours", "always"]),
]


def test_bad_bodies_are_422_echo_nothing_and_write_nothing(
    client: TestClient, store_engine: Engine
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    for case, body in BAD_BODIES:
        response = client.put(RULES, json=body, headers=boss.auth)
        assert_error(response, 422, "ValidationError")
        assert "H0stile" not in response.text and "passwd" not in response.text, case
        assert fetch_all(store_engine, "SELECT * FROM calling_rules") == [], case
        assert fetch_all(store_engine, "SELECT * FROM calling_rules_changes") == [], case
    fields = client.put(RULES, json={"hours": "mon-fri 08:00-25:00"}, headers=boss.auth).json()
    assert fields["fields"][0]["loc"] == ["body", "hours"]


def test_only_supervisors_see_or_change_the_rules(client: TestClient, store_engine: Engine) -> None:
    agent = new_agent(store_engine, "alice")
    assert_error(client.get(RULES), 401, "Unauthorized")
    assert_error(client.put(RULES, json={"hours": "always"}), 401, "Unauthorized")
    assert_error(client.get(RULES, headers=agent.auth), 403, "Forbidden")
    assert_error(client.put(RULES, json={"hours": "always"}, headers=agent.auth), 403, "Forbidden")
    # A bad body from a caller who may not change the rules is refused for who they are.
    assert_error(client.put(RULES, json={"hours": 9}, headers=agent.auth), 403, "Forbidden")
    assert fetch_all(store_engine, "SELECT * FROM calling_rules") == []


def test_a_change_reaches_another_instance_with_another_default(
    client: TestClient, make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    other = make_client(calling_timezone="America/New_York")
    boss = new_agent(store_engine, "boss", "supervisor")
    assert rules_body(other.get(RULES, headers=boss.auth))["timezone"] == "America/New_York"

    assert client.put(RULES, json={"hours": "never"}, headers=boss.auth).status_code == 200
    seen = other.get(RULES, headers=boss.auth).json()
    assert seen["hours"] == "never" and seen["timezone"] == "America/New_York"
    assert seen["open_now"] is False and seen["opens_at"] is None


# -- two processes -------------------------------------------------------------------------------


@pytest.fixture
def two_processes(store_url: str, replica_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two service processes on their own ports against one database, as on two hosts; the
    second with another environment default for the time zone."""
    base_env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        CRON_SECRET=CRON_SECRET,
        SUPPRESSION_KEY=SUPPRESSION_KEY,
        SCHEDULER_ENABLED="false",
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="1",
        CALLING_HOURS="always",
    )
    envs = [base_env, {**base_env, "CALLING_TIMEZONE": "America/New_York"}]
    procs: list[subprocess.Popen[str]] = []
    bases = []
    try:
        for i, env in enumerate(envs):
            port = free_port()
            with (tmp_path / f"instance-{i}.log").open("w") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        text=True,
                    )
                )
            bases.append(f"http://127.0.0.1:{port}")
        for proc, base in zip(procs, bases, strict=True):
            wait_ready(base, proc)
        yield bases
    finally:
        for proc in procs:
            stop(proc)


def window_gauge(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("callqueue_calling_window_open "):
            return float(line.split()[1])
    raise AssertionError("no callqueue_calling_window_open in /metrics")


@pytest.mark.slow
def test_two_processes_apply_a_change_on_their_next_request(
    two_processes: list[str], store_engine: Engine
) -> None:
    first, second = two_processes
    boss = new_agent(store_engine, "boss", "supervisor")
    with httpx.Client(headers=boss.auth, timeout=10) as http:
        before = http.get(f"{second}{RULES}").json()
        assert (before["timezone"], before["hours"], before["open_now"]) == (
            "America/New_York",
            "always",
            True,
        )
        assert window_gauge(second) == 1

        changed = http.put(f"{first}{RULES}", json={"hours": "never"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["timezone"] == "Europe/London"

        # The second process's very next requests: its API and its own judgement of the window.
        after = http.get(f"{second}{RULES}").json()
        assert (after["timezone"], after["hours"], after["open_now"], after["opens_at"]) == (
            "America/New_York",
            "never",
            False,
            None,
        )
        assert window_gauge(second) == 0
        assert window_gauge(first) == 0

        http.put(f"{second}{RULES}", json={"timezone": "Asia/Tokyo", "hours": "always"})
        assert rules_body(http.get(f"{first}{RULES}")) == {
            "timezone": "Asia/Tokyo",
            "hours": "always",
            "holidays": [],
        }
        assert window_gauge(first) == 1
    assert len(fetch_all(store_engine, "SELECT * FROM calling_rules_changes")) == 2
