"""What the console needed from the API (issue 15): a population a supervisor can run without the
cron secret, the activity per hour for the chart, and the pages and assets with their headers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, make_url, text

from app.queues.kinds import POPULATION_LOCK_KEY
from tests.factories import Agent, Replica, add_scores, new_agent, signed_in


@pytest.fixture
def supervisor(store_engine: Engine) -> Agent:
    return new_agent(store_engine, "sup", "supervisor")


# -- POST /api/admin/populate -----------------------------------------------------------------


def test_a_supervisor_runs_the_population_and_gets_the_cron_report(
    client: TestClient, supervisor: Agent, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    replica.outstanding(2)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": "unsigned_users"},
            {"user_id": 2, "current_queue_type": "outstanding_requests"},
        ],
    )
    dry = client.post("/api/admin/populate?dry_run=true", headers=supervisor.auth)
    assert dry.status_code == 200, dry.text
    answer = client.post("/api/admin/populate", headers=supervisor.auth)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["success"] is True
    assert {k: (q["status"], q["populated"]) for k, q in report["queues"].items()} == {
        "unsigned_users": ("succeeded", 1),
        "outstanding_requests": ("succeeded", 1),
    }
    only = client.post("/api/admin/populate?queue=unsigned_users", headers=supervisor.auth)
    assert only.json()["queues"]["outstanding_requests"]["status"] == "skipped"
    with store_engine.connect() as conn:
        runs = conn.execute(
            text("SELECT trigger, dry_run, queue_filter FROM population_runs ORDER BY started_at")
        ).all()
    assert [tuple(r) for r in runs] == [
        ("supervisor", True, None),
        ("supervisor", False, None),
        ("supervisor", False, "unsigned_users"),
    ]


def test_populate_is_refused_while_another_population_runs(
    client: TestClient, supervisor: Agent, store_engine: Engine
) -> None:
    with store_engine.connect() as holder:
        assert holder.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": POPULATION_LOCK_KEY}
        ).scalar_one()
        try:
            answer = client.post("/api/admin/populate", headers=supervisor.auth)
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POPULATION_LOCK_KEY})
            holder.commit()
    assert answer.status_code == 409
    assert answer.json() == {
        "error": "PopulationRunning",
        "detail": "another population is running; try again when it ends",
    }
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM population_runs")).scalar_one() == 0


def test_populate_rejects_an_unknown_queue(client: TestClient, supervisor: Agent) -> None:
    answer = client.post("/api/admin/populate?queue=everyone", headers=supervisor.auth)
    assert answer.status_code == 422
    assert "everyone" not in answer.text


# -- GET /api/reports/activity ----------------------------------------------------------------


def _ledger_row(conn: object, **row: object) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,"
            " status, assigned_at, lease_expires_at, finished_at, outcome)"
            " VALUES (:agent_id, :user_id, 'unsigned_users', :source, 0, :status, :assigned_at,"
            " :assigned_at + interval '15 minutes', :finished_at, :outcome)"
        ),
        {"finished_at": None, "outcome": None, "source": "queue", **row},
    )


def test_activity_counts_hand_outs_and_endings_per_utc_hour(
    client: TestClient, supervisor: Agent, store_engine: Engine
) -> None:
    agent = new_agent(store_engine, "worker")
    with store_engine.begin() as conn:
        h0: datetime = conn.execute(text("SELECT date_trunc('hour', now(), 'UTC')")).scalar_one()
        hour = timedelta(hours=1)
        rows = [
            # this hour: a completed hand-out and a live one
            dict(
                user_id=1, status="completed", assigned_at=h0, finished_at=h0, outcome="no_answer"
            ),
            dict(user_id=2, status="active", assigned_at=h0),
            # handed out (direct) two hours ago, completed in the previous hour
            dict(
                user_id=3,
                source="direct",
                status="completed",
                assigned_at=h0 - 1.5 * hour,
                finished_at=h0 - 0.5 * hour,
                outcome="call_back",
            ),
            # the first hour of the window: a lease that lapsed
            dict(
                user_id=4,
                status="expired",
                assigned_at=h0 - 23 * hour,
                finished_at=h0 - 23 * hour + timedelta(minutes=15),
            ),
            # handed out before the window, released inside it
            dict(
                user_id=5,
                status="released",
                assigned_at=h0 - 24 * hour,
                finished_at=h0 - 23 * hour + timedelta(minutes=1),
            ),
        ]
        for row in rows:
            _ledger_row(conn, agent_id=agent.id, **row)

    answer = client.get("/api/reports/activity", headers=supervisor.auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["hours"] == 24 and body["timezone"] == "UTC"
    buckets = body["buckets"]
    assert [datetime.fromisoformat(b["hour_start"]) for b in buckets] == [
        h0 - (23 - i) * hour for i in range(24)
    ]
    empty = {
        "handed_out": 0,
        "sources": {},
        "outcomes": {},
        "completed": 0,
        "released": 0,
        "expired": 0,
    }
    expected = {i: dict(empty) for i in range(24)}
    expected[23] = {
        **empty,
        "handed_out": 2,
        "sources": {"queue": 2},
        "outcomes": {"no_answer": 1},
        "completed": 1,
    }
    expected[22] = {**empty, "outcomes": {"call_back": 1}, "completed": 1}
    expected[21] = {**empty, "handed_out": 1, "sources": {"direct": 1}}
    expected[0] = {**empty, "handed_out": 1, "sources": {"queue": 1}, "expired": 1, "released": 1}
    assert [{k: v for k, v in b.items() if k != "hour_start"} for b in buckets] == [
        expected[i] for i in range(24)
    ]

    one = client.get("/api/reports/activity?hours=1", headers=supervisor.auth).json()
    assert len(one["buckets"]) == 1 and one["buckets"][0]["handed_out"] == 2


@pytest.mark.parametrize("hours", ["0", "169", "abc", "1.5"])
def test_activity_rejects_a_bad_window(client: TestClient, supervisor: Agent, hours: str) -> None:
    answer = client.get(f"/api/reports/activity?hours={hours}", headers=supervisor.auth)
    assert answer.status_code == 422
    assert answer.json()["error"] == "ValidationError"


# -- the console's pages and assets --------------------------------------------------------------


def test_the_front_door_leads_to_the_agents_console(client: TestClient) -> None:
    answer = client.get("/", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "/console"


@pytest.fixture
def signed_in_supervisor(store_engine: Engine) -> Agent:
    return signed_in(store_engine, "sup@example.com", "supervisor")


@pytest.mark.parametrize(
    "path", ["/console", "/console/supervisor", "/console/people", "/auth/login"]
)
def test_console_pages_carry_a_strict_policy(
    client: TestClient, signed_in_supervisor: Agent, path: str
) -> None:
    answer = client.get(path, headers=signed_in_supervisor.auth)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["cache-control"] == "private, no-cache"


def test_the_agent_page_offers_every_outcome_from_the_outcome_table(
    client: TestClient, signed_in_supervisor: Agent
) -> None:
    from app.rules.outcomes import Outcome

    page = client.get("/console", headers=signed_in_supervisor.auth).text
    for outcome in Outcome:
        assert f'value="{outcome}"' in page
    assert 'maxlength="2000"' in page  # notes, as CompleteIn declares
    assert "Skip for 60 min" in page
    assert 'aria-keyshortcuts="9"' in page and 'aria-keyshortcuts="10"' not in page


# Pages and templates get only the values they show (SPEC 8.1): never the settings (a database
# URL, the cron secret, the suppression key), nor the request (a way back to them).
SECRETS = {
    "cron_secret": "cron-secret-never-on-a-page-5e1f2d3c4b5a69788",
    "suppression_key": "suppression-key-never-on-a-page-0a9b8c7d6e5f4",
    "metrics_token": "metrics-token-never-on-a-page-77c3",
}
DB_PASSWORD = "db-password-never-on-a-page-3141"
FRAME = {"static", "view", "person"}
PAGE_VALUES = {
    "/console": {
        *FRAME,
        "queues",
        "callback_grace_minutes",
        "callback_personal_minutes",
        "outcomes",
        "notes_max",
        "reason_max",
        "callback_max_days",
        "skip_cooldown_minutes",
    },
    "/console/supervisor": {
        *FRAME,
        "queues",
        "callback_grace_minutes",
        "callback_personal_minutes",
        "reason_max",
    },
    "/console/people": {
        *FRAME,
        "queues",
        "callback_grace_minutes",
        "callback_personal_minutes",
        "roles",
        "password_login",
        "manages_tokens",
        "handles_personal_data",
        "manages_webhooks",
        "event_types",
    },
    "/auth/login": {
        *FRAME,
        "password_login",
        "provider_name",
        "message",
        "ended",
        "next_page",
    },
}


def plain(value: Any) -> bool:
    """Text, numbers, and lists, tuples or dataclasses of them: nothing to reach further from."""
    if value is None or isinstance(value, str | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(plain(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return all(plain(getattr(value, f.name)) for f in fields(value))
    return False


@pytest.mark.parametrize("path", sorted(PAGE_VALUES))
def test_console_pages_are_given_only_the_values_they_show(
    make_client: Callable[..., TestClient],
    store_url: str,
    signed_in_supervisor: Agent,
    path: str,
) -> None:
    database_url = make_url(store_url).set(password=DB_PASSWORD).render_as_string(False)
    client = make_client(
        database_url=database_url,
        callback_grace_minutes=17,
        callback_personal_minutes=23,
        skip_cooldown_minutes=41,
        **SECRETS,
    )
    page = client.get(path, headers=signed_in_supervisor.auth)
    assert page.status_code == 200
    # What the template was given (the test client hears it through the http.response.debug
    # ASGI extension, as Starlette's template responses tell it).
    context = page.context
    assert set(context) == PAGE_VALUES[path]
    unplain = {name: type(value).__name__ for name, value in context.items() if not plain(value)}
    assert unplain == {}
    if path.startswith("/console"):
        assert context["callback_grace_minutes"] == 17
        assert context["callback_personal_minutes"] == 23
    if path in ("/console", "/console/supervisor"):
        assert 'data-callback-personal-minutes="23"' in page.text
    if path == "/console":
        assert context["skip_cooldown_minutes"] == 41
        assert "Skip for 41 min" in page.text
    for secret in [*SECRETS.values(), DB_PASSWORD, database_url]:
        assert secret not in page.text
        assert secret not in repr(context)


def test_assets_are_served_with_their_types_and_unknown_ones_are_404(client: TestClient) -> None:
    script = client.get("/console/static/agent.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    assert client.get("/console/static/console.css").headers["content-type"].startswith("text/css")
    etag = script.headers["etag"]
    assert (
        client.get("/console/static/agent.js", headers={"If-None-Match": etag}).status_code == 304
    )
    missing = client.get("/console/static/nothing-here.js")
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFound"
    escape = client.get("/console/static/../pages.py")
    assert escape.status_code == 404
