"""The compliance report (SPEC 7.3): a ledger seeded by the test with known violations, and the
report counting exactly those, per local day, by the calling rules in force at each moment (their
history from the audit), through the API and the command (table and CSV).

The week is Monday 2026-03-23 to Sunday 2026-03-29 in Europe/London: GMT until the clocks go
forward at 01:00 UTC on the Sunday, so that Sunday ends at 23:00 UTC."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.config import Settings
from app.rules.compliance import COLUMNS, compliance_report
from tests.api.test_agents_api import assert_error
from tests.conftest import SUPPRESSION_KEY
from tests.factories import new_agent
from tests.processes import clean_env, command

REPORT = "/api/reports/compliance"
PERIOD = {"from": "2026-03-23", "to": "2026-03-29"}
DEFAULT_RULES = {
    "timezone": "Europe/London",
    "hours": "mon-fri 08:00-21:00; sat 09:00-17:00",
    "holidays": [],
}
ALWAYS_BUT_FRIDAY = {**DEFAULT_RULES, "hours": "always", "holidays": ["2026-03-27"]}


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


# (assigned at, user, status, finished at, source). Completed rows are attempts.
HANDOUTS: list[tuple[str, int, str, str | None, str]] = [
    # Before the period: user 5's eight attempts, two a day, and one hand-out late on Sunday.
    *[
        (f"2026-03-{d}T{h - 1:02d}:55:00", 5, "completed", f"2026-03-{d}T{h}:00:00", "queue")
        for d in (18, 19, 20, 21)
        for h in (10, 14)
    ],
    ("2026-03-22T23:30:00", 20, "released", "2026-03-22T23:31:00", "queue"),
    # Monday: 00:00 and 07:59:59 are before opening, 21:00 is closing time.
    ("2026-03-23T00:00:00", 13, "released", "2026-03-23T00:01:00", "queue"),
    ("2026-03-23T07:59:59", 2, "released", "2026-03-23T08:01:00", "queue"),
    ("2026-03-23T09:00:00", 1, "completed", "2026-03-23T09:05:00", "queue"),
    ("2026-03-23T21:00:00", 3, "expired", "2026-03-23T21:15:00", "queue"),
    ("2026-03-23T09:55:00", 5, "completed", "2026-03-23T10:00:00", "queue"),  # 9th attempt
    ("2026-03-23T13:55:00", 5, "completed", "2026-03-23T14:00:00", "queue"),  # 10th
    # Tuesday: user 4 three times, then twice more over the daily cap; user 5 over the weekly
    # cap (ten attempts since Wednesday 10:00, exactly 6 days before), not the daily one (the
    # Monday 10:00 attempt is exactly 24 hours old, out of the window).
    ("2026-03-24T08:50:00", 4, "completed", "2026-03-24T09:00:00", "queue"),
    ("2026-03-24T09:50:00", 4, "completed", "2026-03-24T10:00:00", "queue"),
    ("2026-03-24T10:50:00", 4, "completed", "2026-03-24T11:00:00", "queue"),
    ("2026-03-24T12:00:00", 4, "completed", "2026-03-24T12:05:00", "queue"),  # over daily
    ("2026-03-24T13:00:00", 4, "released", "2026-03-24T13:10:00", "queue"),  # over daily
    ("2026-03-24T10:00:00", 5, "released", "2026-03-24T10:05:00", "queue"),  # over weekly
    # Wednesday: user 4 again (one attempt in the last 24 hours); at 12:00 a supervisor made it
    # 'always', Friday a holiday: 22:00 is inside.
    ("2026-03-25T11:30:00", 4, "completed", "2026-03-25T11:35:00", "queue"),
    ("2026-03-25T22:00:00", 7, "released", "2026-03-25T22:05:00", "queue"),
    # Thursday: 03:00 inside ('always'); user 14 three times, then a due callback (exempt from
    # the daily cap) and a queue hand-out (over it).
    ("2026-03-26T03:00:00", 8, "released", "2026-03-26T03:05:00", "queue"),
    ("2026-03-26T08:50:00", 14, "completed", "2026-03-26T09:00:00", "queue"),
    ("2026-03-26T09:50:00", 14, "completed", "2026-03-26T10:00:00", "queue"),
    ("2026-03-26T10:50:00", 14, "completed", "2026-03-26T11:00:00", "queue"),
    ("2026-03-26T12:00:00", 14, "completed", "2026-03-26T12:05:00", "callback"),
    ("2026-03-26T13:00:00", 14, "released", "2026-03-26T13:05:00", "queue"),  # over daily
    # Friday, the holiday: outside.
    ("2026-03-27T12:00:00", 9, "released", "2026-03-27T12:05:00", "queue"),
    # Saturday: 08:00 inside ('always' until 12:00, when the default came back); 18:00 outside.
    ("2026-03-28T08:00:00", 10, "released", "2026-03-28T08:05:00", "queue"),
    ("2026-03-28T18:00:00", 11, "released", "2026-03-28T18:05:00", "queue"),
    # Sunday: closed. 22:59 UTC is 23:59 BST, still Sunday; 23:30 UTC is Monday 00:30 BST.
    ("2026-03-29T00:30:00", 12, "released", "2026-03-29T00:35:00", "queue"),
    ("2026-03-29T22:59:00", 15, "released", "2026-03-29T23:05:00", "queue"),
    ("2026-03-29T23:30:00", 16, "released", "2026-03-29T23:35:00", "queue"),
]
# (when, reason): refusals recorded by the claim path.
INVALIDATIONS = [
    ("2026-03-22T23:59:00", "suppressed"),  # Sunday before: out
    ("2026-03-23T10:00:00", "suppressed"),
    ("2026-03-23T10:00:01", "suppressed"),
    ("2026-03-24T12:30:00", "attempt_cap"),
    *[("2026-03-24T12:31:00", "no_phone_number")] * 3,  # not a compliance refusal
    ("2026-03-29T22:30:00", "suppressed"),  # Sunday 23:30 BST
    ("2026-03-29T23:30:00", "suppressed"),  # Monday 00:30 BST: out
]
# Callbacks (SPEC 7.2): (user, booked, due, first hand-out, status, finished). Grace: 15 minutes.
CALLBACKS = [
    (
        20,
        "2026-03-23T10:00:00",
        "2026-03-24T10:00:00",
        "2026-03-24T10:10:00",
        "completed",
        "2026-03-24T10:20:00",
    ),  # kept on time (Tuesday)
    (
        21,
        "2026-03-23T11:00:00",
        "2026-03-24T11:00:00",
        "2026-03-24T11:16:00",
        "completed",
        "2026-03-24T11:30:00",
    ),  # late (Tuesday)
    (22, "2026-03-24T09:00:00", "2026-03-25T09:00:00", None, "scheduled", None),  # overdue (Wed)
    (
        23,
        "2026-03-24T09:30:00",
        "2026-03-26T09:00:00",
        None,
        "cancelled",
        "2026-03-25T12:00:00",
    ),  # cancelled (Wednesday)
    # Booked the Sunday before (out); handed out exactly at the end of the grace: on time.
    (
        24,
        "2026-03-22T12:00:00",
        "2026-03-23T12:00:00",
        "2026-03-23T12:15:00",
        "completed",
        "2026-03-23T12:20:00",
    ),
]
RULE_CHANGES = [
    ("2026-03-25T12:00:00", DEFAULT_RULES, ALWAYS_BUT_FRIDAY),
    ("2026-03-28T12:00:00", ALWAYS_BUT_FRIDAY, DEFAULT_RULES),
]

ZERO = {c.name: 0 for c in COLUMNS}
EXPECTED_DAYS = [
    {
        "date": "2026-03-23",
        **ZERO,
        "handouts": 6,
        "outside_hours": 3,
        "blocked_suppressed": 2,
        "callbacks_booked": 2,
        "callbacks_kept_on_time": 1,
    },
    {
        "date": "2026-03-24",
        **ZERO,
        "handouts": 6,
        "over_daily_cap": 2,
        "over_weekly_cap": 1,
        "blocked_attempt_cap": 1,
        "callbacks_booked": 2,
        "callbacks_kept_on_time": 1,
        "callbacks_late": 1,
    },
    {
        "date": "2026-03-25",
        **ZERO,
        "handouts": 2,
        "callbacks_overdue": 1,
        "callbacks_cancelled": 1,
    },
    {"date": "2026-03-26", **ZERO, "handouts": 6, "over_daily_cap": 1},
    {"date": "2026-03-27", **ZERO, "handouts": 1, "outside_hours": 1},
    {"date": "2026-03-28", **ZERO, "handouts": 2, "outside_hours": 1},
    {"date": "2026-03-29", **ZERO, "handouts": 2, "outside_hours": 2, "blocked_suppressed": 1},
]
EXPECTED_TOTALS = {
    "handouts": 25,
    "outside_hours": 7,
    "over_daily_cap": 3,
    "over_weekly_cap": 1,
    "blocked_suppressed": 3,
    "blocked_attempt_cap": 1,
    "callbacks_booked": 4,
    "callbacks_kept_on_time": 2,
    "callbacks_late": 1,
    "callbacks_overdue": 1,
    "callbacks_cancelled": 1,
}


@pytest.fixture
def seeded(store_engine: Engine) -> None:
    agent = new_agent(store_engine, "caller")
    with store_engine.begin() as conn:
        for assigned, user, status, finished, source in HANDOUTS:
            conn.execute(
                text(
                    "INSERT INTO assignments (agent_id, user_id, queue_type, source,"
                    " priority_score, status, assigned_at, lease_expires_at, finished_at, outcome,"
                    " callback_id)"
                    " VALUES (:agent, :user, 'unsigned_users', :source, 0, :status, :assigned,"
                    " :assigned + interval '15 minutes', :finished,"
                    " CASE WHEN :status = 'completed' THEN 'no_answer' END,"
                    " CASE WHEN :source = 'callback' THEN gen_random_uuid() END)"
                ),
                {
                    "agent": agent.id,
                    "user": user,
                    "source": source,
                    "status": status,
                    "assigned": at(assigned),
                    "finished": at(finished) if finished else None,
                },
            )
        for when, reason in INVALIDATIONS:
            conn.execute(
                text(
                    "INSERT INTO entry_invalidations (queue_type, source, user_id, reason,"
                    " created_at) VALUES ('unsigned_users', 'queue', 1, :reason, :at)"
                ),
                {"reason": reason, "at": at(when)},
            )
        for user, booked, due, handed_out, status, finished in CALLBACKS:
            conn.execute(
                text(
                    "INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id, status,"
                    " first_handed_out_at, finished_at, created_at)"
                    " VALUES (:user, 'unsigned_users', :due, :agent, :status, :handed_out,"
                    " :finished, :booked)"
                ),
                {
                    "user": user,
                    "due": at(due),
                    "agent": agent.id,
                    "status": status,
                    "handed_out": at(handed_out) if handed_out else None,
                    "finished": at(finished) if finished else None,
                    "booked": at(booked),
                },
            )
        for when, old, new in RULE_CHANGES:
            conn.execute(
                text(
                    "INSERT INTO calling_rules_changes (old_rules, new_rules, changed_by,"
                    " changed_at) VALUES (CAST(:o AS jsonb), CAST(:n AS jsonb), :a, :at)"
                ),
                {"o": json.dumps(old), "n": json.dumps(new), "a": agent.id, "at": at(when)},
            )


def test_the_report_counts_exactly_the_seeded_violations(
    seeded: None, store_engine: Engine, settings: Settings
) -> None:
    with store_engine.connect() as conn:
        report = compliance_report(conn, settings, date(2026, 3, 23), date(2026, 3, 29))
    assert report["days"] == EXPECTED_DAYS
    assert report["totals"] == EXPECTED_TOTALS
    assert (report["from"], report["to"], report["timezone"]) == (
        "2026-03-23",
        "2026-03-29",
        "Europe/London",
    )
    assert report["caps"] == {"per_day": 3, "per_week": 10}
    assert [c["name"] for c in report["columns"]] == list(EXPECTED_TOTALS)


def test_a_later_rules_change_does_not_rewrite_the_past(
    seeded: None, client: TestClient, store_engine: Engine
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    before = client.get(REPORT, params=PERIOD, headers=boss.auth)
    assert before.status_code == 200, before.text
    assert (
        client.put(
            "/api/admin/calling-rules", json={"hours": "always"}, headers=boss.auth
        ).status_code
        == 200
    )
    after = client.get(REPORT, params=PERIOD, headers=boss.auth).json()
    assert after["days"] == before.json()["days"] == EXPECTED_DAYS
    assert after["totals"] == EXPECTED_TOTALS


def test_one_day_and_the_caps_of_the_settings(
    seeded: None, make_client: Any, store_engine: Engine
) -> None:
    client = make_client(max_attempts_per_day=5, max_attempts_per_week=11)
    boss = new_agent(store_engine, "boss", "supervisor")
    tuesday = client.get(
        REPORT, params={"from": "2026-03-24", "to": "2026-03-24"}, headers=boss.auth
    )
    assert tuesday.status_code == 200, tuesday.text
    body = tuesday.json()
    assert body["days"] == [{**EXPECTED_DAYS[1], "over_daily_cap": 0, "over_weekly_cap": 0}]
    assert body["caps"] == {"per_day": 5, "per_week": 11}


def test_the_api_answers_the_report(seeded: None, client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    response = client.get(REPORT, params=PERIOD, headers=boss.auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["days"] == EXPECTED_DAYS and body["totals"] == EXPECTED_TOTALS
    assert set(body) == {
        "from",
        "to",
        "timezone",
        "generated_at",
        "caps",
        "columns",
        "days",
        "totals",
    }
    assert all(set(c) == {"name", "description"} for c in body["columns"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "from"),
        ({"from": "2026-03-23"}, "to"),
        ({"to": "2026-03-29"}, "from"),
        ({"from": "2026-02-30", "to": "2026-03-29"}, "from"),
        ({"from": "23/03/2026", "to": "2026-03-29"}, "from"),
        ({"from": "20260323", "to": "2026-03-29"}, "from"),
        ({"from": "2026-03-23T00:00:00", "to": "2026-03-29"}, "from"),
        ({"from": "1774224000", "to": "2026-03-29"}, "from"),
        ({"from": "2026-03-23", "to": "H0stile"}, "to"),
        ({"from": "2026-03-29", "to": "2026-03-23"}, "to"),
        ({"from": "2025-03-23", "to": "2026-03-29"}, "to"),  # more than 366 days
    ],
)
def test_missing_or_bad_dates_are_422_after_authentication(
    client: TestClient, store_engine: Engine, params: dict[str, str], field: str
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    agent = new_agent(store_engine, "alice")
    assert_error(client.get(REPORT, params=params), 401, "Unauthorized")
    assert_error(client.get(REPORT, params=params, headers=agent.auth), 403, "Forbidden")
    body = assert_error(
        client.get(REPORT, params=params, headers=boss.auth), 422, "ValidationError"
    )
    assert body["fields"][0]["loc"] == ["query", field]
    assert "H0stile" not in json.dumps(body)


def test_a_full_year_is_accepted(client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    response = client.get(
        REPORT, params={"from": "2025-03-30", "to": "2026-03-30"}, headers=boss.auth
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["days"]) == 366
    assert response.json()["totals"] == {name: 0 for name in EXPECTED_TOTALS}


def run_report(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), "report", "compliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_a_table_or_csv(
    seeded: None, store_url: str, replica_url: str, store_engine: Engine
) -> None:
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        SUPPRESSION_KEY=SUPPRESSION_KEY,
    )
    as_csv = run_report(env, "--from", "2026-03-23", "--to", "2026-03-29", "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    names = list(EXPECTED_TOTALS)
    assert as_csv.stdout.splitlines() == [
        ",".join(["date", *names]),
        *(",".join([d["date"], *(str(d[n]) for n in names)]) for d in EXPECTED_DAYS),
    ]

    table = run_report(env, "--from", "2026-03-23", "--to", "2026-03-29")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "Compliance 2026-03-23 to 2026-03-29 (Europe/London; caps 3/day, 10/week)" in lines[0]
    # The header (rich wraps the longer column names over two lines on a narrow terminal).
    first_day = next(i for i, line in enumerate(lines) if line.lstrip("│ ").startswith("2026"))
    head = " ".join(lines[1:first_day])
    for words in ("outside hours", "over daily cap", "blocked", "suppressed", "callbacks late"):
        assert words in head, head
    monday = next(line for line in lines[1:] if "2026-03-23" in line)
    assert [cell for cell in monday.replace("│", " ").split()] == [
        "2026-03-23",
        "6",
        "3",
        "0",
        "0",
        "2",
        "0",
        "2",
        "1",
        "0",
        "0",
        "0",
    ]
    total = next(line for line in lines[1:] if "total" in line)
    assert total.replace("│", " ").split() == [
        "total",
        "25",
        "7",
        "3",
        "1",
        "3",
        "1",
        "4",
        "2",
        "1",
        "1",
        "1",
    ]

    bad = run_report(env, "--from", "2026-03-29", "--to", "2026-03-23")
    assert bad.returncode == 2
    assert "--to must not be before --from" in bad.stderr
    assert bad.stdout == ""
