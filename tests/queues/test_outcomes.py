"""Completing an assignment (SPEC 3.4): every outcome of the table, field by field.

Each test claims a real assignment through the API (population, then next-user) and completes it
through the API, then reads the score row, the ledger row, the queue entry and the transition
audit straight from PostgreSQL. Times are compared with the database's clock, read just before
and just after the request: a "now + 4 h" must fall between the two readings plus 4 h.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth.people import create_agent
from tests.factories import Replica, add_scores

UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"
POPULATE = "/api/cron/populate-separated-queues"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"
SECRET_NOTE = "caller said: my PIN is 4321 and my sister's name is Bernadette"

H = timedelta(hours=1)
D = timedelta(days=1)


@dataclass(frozen=True)
class Rule:
    change: int
    delay: timedelta | None  # None: next_call_after becomes null
    successful: bool = False
    deactivates: bool = False
    accepts_callback: bool = False


# SPEC 3.4, transcribed independently of app/rules/outcomes.py.
TABLE: dict[str, Rule] = {
    "no_answer": Rule(1, 4 * H),
    "hung_up": Rule(2, 4 * H),
    "might_complete": Rule(2, 24 * H, accepts_callback=True),
    "going_to_complete": Rule(0, 72 * H, successful=True, accepts_callback=True),
    "call_back": Rule(0, 24 * H, successful=True, accepts_callback=True),
    "completed_form": Rule(0, 24 * H, successful=True),
    "missed_call": Rule(0, None),
    "bad_number": Rule(50, 28 * D),
    "not_interested": Rule(100, 28 * D),
    "do_not_contact": Rule(200, None, deactivates=True),
    "no_claim": Rule(200, None, deactivates=True),
}
ACCEPTS_CALLBACK = [o for o, r in TABLE.items() if r.accepts_callback]
REFUSES_CALLBACK = [o for o, r in TABLE.items() if not r.accepts_callback]


# -- helpers -----------------------------------------------------------------------------------


@dataclass
class Held:
    auth: dict[str, str]
    body: dict[str, Any]
    agent_id: int

    @property
    def id(self) -> str:
        return str(self.body["assignment_id"])

    @property
    def user_id(self) -> int:
        return int(self.body["user_id"])


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()


def one(engine: Engine, sql: str, **params: Any) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(text(sql), params).one_or_none()
    return dict(row._mapping) if row is not None else None


def score_row(engine: Engine, user_id: int) -> dict[str, Any]:
    row = one(engine, "SELECT * FROM user_call_scores WHERE user_id = :u", u=user_id)
    assert row is not None
    return row


def ledger_row(engine: Engine, assignment_id: str) -> dict[str, Any]:
    row = one(engine, "SELECT * FROM assignments WHERE id = CAST(:i AS uuid)", i=assignment_id)
    assert row is not None
    return row


def entry_row(engine: Engine, queue: str, entry_id: str) -> dict[str, Any]:
    row = one(engine, f"SELECT * FROM {queue}_queue WHERE id = CAST(:i AS uuid)", i=entry_id)
    assert row is not None
    return row


def transitions(engine: Engine, user_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM queue_transitions WHERE user_id = :u ORDER BY id"), {"u": user_id}
        )
        return [dict(r._mapping) for r in rows]


def set_score(engine: Engine, user_id: int, **values: Any) -> None:
    assignments = ", ".join(f"{k} = :{k}" for k in values)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE user_call_scores SET {assignments} WHERE user_id = :u"),
            {**values, "u": user_id},
        )


def ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value} has no offset"
    return parsed


def claim_many(
    client: TestClient,
    store: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    user_ids: list[int],
    *,
    queue: str = UNSIGNED,
    add_to_replica: bool = True,
) -> list[Held]:
    """Leads in ``queue``, populated through the cron route; agent i claims user_ids[i]."""
    for user_id in user_ids:
        if not add_to_replica:
            continue
        if queue == UNSIGNED:
            replica.unsigned(user_id)
        else:
            replica.outstanding(user_id)
    add_scores(store, [{"user_id": u, "current_queue_type": queue} for u in user_ids])
    tokens: list[tuple[str, int]] = []
    with store.begin() as conn:
        for user_id in user_ids:
            token = create_agent(conn, f"agent-{user_id}")
            agent_id = conn.execute(
                text("SELECT id FROM agents WHERE name = :n"), {"n": f"agent-{user_id}"}
            ).scalar_one()
            tokens.append((token, agent_id))
    pop = client.get(POPULATE, params={"queue": queue}, headers=cron_headers)
    assert pop.status_code == 200, pop.text
    held: list[Held] = []
    for user_id, (token, agent_id) in zip(user_ids, tokens, strict=True):
        auth = {"Authorization": f"Bearer {token}"}
        got = client.post(f"/api/queues/{queue}/next-user", headers=auth)
        assert got.status_code == 200, got.text
        assert got.json()["user_id"] == user_id  # equal scores: served by user_id
        held.append(Held(auth, got.json(), agent_id))
    return held


def claim(
    client: TestClient,
    store: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    *,
    user_id: int = 1,
    queue: str = UNSIGNED,
    add_to_replica: bool = True,
) -> Held:
    """One lead in ``queue``, populated through the cron route and claimed through the API."""
    [held] = claim_many(
        client, store, replica, cron_headers, [user_id], queue=queue, add_to_replica=add_to_replica
    )
    return held


def complete(client: TestClient, held: Held, **body: Any) -> Any:
    return client.post(f"/api/assignments/{held.id}/complete", json=body, headers=held.auth)


def assert_between(value: datetime | None, low: datetime, high: datetime) -> None:
    assert value is not None
    assert low <= value <= high, f"{value} not within [{low}, {high}]"


# -- the table, field by field -----------------------------------------------------------------

CASES = [pytest.param(o, False, id=o) for o in TABLE] + [
    pytest.param(o, True, id=f"{o}-with-callback") for o in ACCEPTS_CALLBACK
]


@pytest.mark.parametrize(("outcome", "with_callback"), CASES)
def test_outcome_applies_the_table(
    outcome: str,
    with_callback: bool,
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    rule = TABLE[outcome]
    held = claim(client, store_engine, replica, cron_headers)
    # Start from 7 (relative change visible), or 0 where +200 would otherwise hit the bound.
    start = 0 if rule.change >= 200 else 7
    set_score(store_engine, held.user_id, current_score=start, total_attempts=2, successful_calls=1)
    before_row = score_row(store_engine, held.user_id)

    before = db_now(store_engine)
    body: dict[str, Any] = {"outcome": outcome, "notes": "left a voicemail"}
    callback: datetime | None = None
    if with_callback:
        # An offset other than UTC: the instant must be kept exactly.
        callback = (before + 2 * D + timedelta(minutes=17, microseconds=123_456)).astimezone(
            timezone(timedelta(hours=2))
        )
        body["callback_at"] = callback.isoformat()
    response = complete(client, held, **body)
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    out = response.json()

    # The score row, field by field.
    row = score_row(store_engine, held.user_id)
    assert row["current_score"] == start + rule.change  # 3 attempts: no penalty yet
    assert row["total_attempts"] == 3
    assert row["successful_calls"] == 1 + (1 if rule.successful else 0)
    assert_between(row["last_call_at"], before, after)
    assert row["last_outcome"] == outcome
    assert_between(row["last_queue_check"], before, after)
    if callback is not None:
        assert row["next_call_after"] == callback
    elif rule.delay is None:
        assert row["next_call_after"] is None
    else:
        assert_between(row["next_call_after"], before + rule.delay, after + rule.delay)
    assert row["is_active"] is (not rule.deactivates)
    assert row["current_queue_type"] == UNSIGNED  # the replica still says so
    # Columns the service must not touch.
    for untouched in (
        "base_score",
        "outcome_penalty_score",
        "time_penalty_score",
        "created_at",
        "last_reset_date",
    ):
        assert row[untouched] == before_row[untouched], untouched

    # The response's score mirrors the row.
    score = out["score"]
    assert set(score) == {"current_score", "next_call_after", "is_active", "current_queue_type"}
    assert score["current_score"] == row["current_score"]
    assert ts(score["next_call_after"]) == row["next_call_after"]
    assert score["is_active"] is row["is_active"]
    assert score["current_queue_type"] == UNSIGNED
    # Times are returned in UTC, whatever offset the caller sent.
    for value in (out["assigned_at"], out["lease_expires_at"], score["next_call_after"]):
        if value is not None:
            assert ts(value).utcoffset() == timedelta(0), value  # type: ignore[union-attr]

    # The assignment and its entry.
    assert out["status"] == "completed"
    assert out["outcome"] == outcome
    assert out["assignment_id"] == held.id
    assert out["user"] is None  # contact details only while holding the user
    ledger = ledger_row(store_engine, held.id)
    assert ledger["status"] == "completed"
    assert ledger["outcome"] == outcome
    assert ledger["callback_at"] == callback
    assert ledger["notes"] == "left a voicemail"
    assert_between(ledger["finished_at"], before, after)
    entry = entry_row(store_engine, UNSIGNED, held.body["queue_entry_id"])
    assert entry["status"] == "completed"

    # Nothing to reclassify: the replica agrees with the score row.
    assert transitions(store_engine, held.user_id) == []
    assert client.get("/api/assignments/current", headers=held.auth).status_code == 204


def test_outstanding_queue_outcome_completes_its_entry(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    held = claim(client, store_engine, replica, cron_headers, user_id=5, queue=OUTSTANDING)
    response = complete(client, held, outcome="hung_up")
    assert response.status_code == 200, response.text
    assert response.json()["score"]["current_score"] == 2
    assert response.json()["score"]["current_queue_type"] == OUTSTANDING
    assert entry_row(store_engine, OUTSTANDING, held.body["queue_entry_id"])["status"] == (
        "completed"
    )


def test_direct_mode_outcome(
    make_client: Any, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    """Direct mode: no entry, same rules on the score row."""
    client = make_client(migration_mode="legacy-only")
    replica.unsigned(3)
    add_scores(store_engine, [{"user_id": 3, "current_queue_type": UNSIGNED}])
    with store_engine.begin() as conn:
        token = create_agent(conn, "dora")
    auth = {"Authorization": f"Bearer {token}"}
    got = client.post(f"/api/queues/{UNSIGNED}/next-user", headers=auth)
    assert got.status_code == 200, got.text
    assert got.json()["source"] == "direct"
    assert got.json()["queue_entry_id"] is None
    before = db_now(store_engine)
    done = client.post(
        f"/api/assignments/{got.json()['assignment_id']}/complete",
        json={"outcome": "bad_number"},
        headers=auth,
    )
    after = db_now(store_engine)
    assert done.status_code == 200, done.text
    row = score_row(store_engine, 3)
    assert row["current_score"] == 50
    assert row["total_attempts"] == 1
    assert_between(row["next_call_after"], before + 28 * D, after + 28 * D)
    assert ledger_row(store_engine, got.json()["assignment_id"])["status"] == "completed"


# -- attempt penalty and bounds ----------------------------------------------------------------

# (case, total_attempts before, outcome, score change including the penalty)
PENALTY_CASES = [
    ("4to5-no-penalty", 4, "missed_call", 0),
    ("5to6-plus1", 5, "missed_call", 1),
    ("9to10-plus1", 9, "missed_call", 1),
    ("10to11-plus3", 10, "missed_call", 3),
    ("30to31-plus3", 30, "missed_call", 3),
    ("4to5-no_answer", 4, "no_answer", 1),
    ("5to6-no_answer", 5, "no_answer", 2),
    ("10to11-no_answer", 10, "no_answer", 4),
    ("10to11-call_back", 10, "call_back", 3),
    ("5to6-bad_number", 5, "bad_number", 51),
]


def test_attempt_penalty(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    """+1 when total_attempts after the increment is above 5, +3 instead when above 10."""
    users = list(range(101, 101 + len(PENALTY_CASES)))
    held = claim_many(client, store_engine, replica, cron_headers, users)
    wrong = []
    for h, (case, attempts, outcome, change) in zip(held, PENALTY_CASES, strict=True):
        set_score(store_engine, h.user_id, current_score=20, total_attempts=attempts)
        response = complete(client, h, outcome=outcome)
        assert response.status_code == 200, (case, response.text)
        row = score_row(store_engine, h.user_id)
        got = (
            row["total_attempts"],
            row["current_score"],
            response.json()["score"]["current_score"],
        )
        if got != (attempts + 1, 20 + change, 20 + change):
            wrong.append((case, got, (attempts + 1, 20 + change, 20 + change)))
    assert wrong == []


# (case, score before, total_attempts before, outcome, score after)
BOUND_CASES = [
    ("199+bad_number", 199, 0, "bad_number", 200),
    ("200+not_interested", 200, 0, "not_interested", 200),
    ("150+do_not_contact", 150, 0, "do_not_contact", 200),
    ("199+no_answer+penalty3", 199, 10, "no_answer", 200),
    ("195+penalty3-not-clamped", 195, 10, "missed_call", 198),
    ("0+missed_call", 0, 0, "missed_call", 0),
    ("0+call_back", 0, 0, "call_back", 0),
    # The upstream scorer owns the score and may have written outside the range.
    ("upstream-negative-clamped-up", -5, 0, "missed_call", 0),
    ("upstream-above-clamped-down", 250, 0, "completed_form", 200),
]


def test_score_stays_within_0_and_200(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    users = list(range(201, 201 + len(BOUND_CASES)))
    held = claim_many(client, store_engine, replica, cron_headers, users)
    wrong = []
    for h, (case, score, attempts, outcome, expected) in zip(held, BOUND_CASES, strict=True):
        set_score(store_engine, h.user_id, current_score=score, total_attempts=attempts)
        response = complete(client, h, outcome=outcome)
        assert response.status_code == 200, (case, response.text)
        got = (
            score_row(store_engine, h.user_id)["current_score"],
            response.json()["score"]["current_score"],
        )
        if got != (expected, expected):
            wrong.append((case, got, expected))
    assert wrong == []


# -- callback_at and notes that are accepted ----------------------------------------------------


def test_accepted_edge_bodies(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The limits themselves are accepted: callback_at exactly 30 days ahead of the database's
    clock (read before the request) and one minute ahead, an explicit null callback_at and notes,
    and notes of exactly 2000 characters (kept whole, never echoed)."""
    thirty, minute, nulls, long_notes = claim_many(
        client, store_engine, replica, cron_headers, [41, 42, 43, 44]
    )

    callback = db_now(store_engine) + 30 * D
    response = complete(
        client, thirty, outcome="going_to_complete", callback_at=callback.isoformat()
    )
    assert response.status_code == 200, response.text
    assert score_row(store_engine, 41)["next_call_after"] == callback
    assert ledger_row(store_engine, thirty.id)["callback_at"] == callback

    callback = db_now(store_engine) + timedelta(minutes=1)
    response = complete(client, minute, outcome="call_back", callback_at=callback.isoformat())
    assert response.status_code == 200, response.text
    assert ts(response.json()["score"]["next_call_after"]) == callback

    before = db_now(store_engine)
    response = complete(client, nulls, outcome="might_complete", callback_at=None, notes=None)
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    assert_between(score_row(store_engine, 43)["next_call_after"], before + 24 * H, after + 24 * H)
    assert ledger_row(store_engine, nulls.id)["notes"] is None
    assert ledger_row(store_engine, nulls.id)["callback_at"] is None

    notes = ("Ünïcødé ☎ " * 200)[:2000]
    assert len(notes) == 2000
    caplog.set_level(logging.DEBUG, logger="app")
    response = complete(client, long_notes, outcome="no_answer", notes=notes)
    assert response.status_code == 200, response.text
    assert ledger_row(store_engine, long_notes.id)["notes"] == notes
    assert "Ünïcødé" not in response.text
    # Notes are never logged.
    assert any(r.name.startswith("app.") for r in caplog.records)
    assert not [r for r in caplog.records if "Ünïcødé" in str(r.__dict__)]


# -- 422 with nothing written ------------------------------------------------------------------


def _cb(delta: timedelta, outcome: str = "call_back") -> Any:
    return lambda now: {"outcome": outcome, "callback_at": (now + delta).isoformat()}


# (case, body built from the database's now, an input value that must not be echoed, field)
BAD_BODIES: list[tuple[str, Any, str | None, str]] = [
    ("unknown-outcome", lambda now: {"outcome": "voicemail"}, "voicemail", "outcome"),
    ("wrong-case-outcome", lambda now: {"outcome": "NO_ANSWER"}, "NO_ANSWER", "outcome"),
    ("null-outcome", lambda now: {"outcome": None}, None, "outcome"),
    ("missing-outcome", lambda now: {}, None, "outcome"),
    ("callback-1s-past", _cb(-timedelta(seconds=1)), None, "callback_at"),
    ("callback-2d-past", _cb(-2 * D, "might_complete"), None, "callback_at"),
    ("callback-30d-5min", _cb(30 * D + timedelta(minutes=5)), None, "callback_at"),
    ("callback-1y", _cb(365 * D, "going_to_complete"), None, "callback_at"),
    (
        "naive-datetime",
        lambda now: {"outcome": "call_back", "callback_at": "2030-01-01T10:00:00"},
        "2030-01-01T10:00:00",
        "callback_at",
    ),
    (
        "not-a-datetime",
        lambda now: {"outcome": "call_back", "callback_at": "next tuesday-ish"},
        "next tuesday-ish",
        "callback_at",
    ),
    ("notes-2001", lambda now: {"outcome": "no_answer", "notes": "N" * 2001}, "N" * 2001, "notes"),
    ("notes-not-text", lambda now: {"outcome": "no_answer", "notes": 42}, None, "notes"),
    (
        "unknown-field",
        lambda now: {"outcome": "no_answer", "priority": "vip"},
        "vip",
        "(unknown field)",  # the caller's field name is not echoed
    ),
] + [(f"callback-with-{o}", _cb(D, o), None, "callback_at") for o in REFUSES_CALLBACK]


def test_bad_completion_is_422_and_writes_nothing(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every bad body against the same live assignment: 422, the one error shape, no echo, and
    not a byte written; afterwards the assignment can still be completed."""
    held = claim(client, store_engine, replica, cron_headers)
    score_before = score_row(store_engine, held.user_id)
    ledger_before = ledger_row(store_engine, held.id)
    entry_before = entry_row(store_engine, UNSIGNED, held.body["queue_entry_id"])
    caplog.set_level(logging.DEBUG, logger="app")

    for case, make_body, echo, field in BAD_BODIES:
        body = make_body(db_now(store_engine))
        if "notes" not in body:
            body["notes"] = SECRET_NOTE
        response = complete(client, held, **body)

        assert response.status_code == 422, (case, response.text)
        payload = response.json()
        assert set(payload) == {"error", "detail", "fields"}, case
        assert payload["error"] == "ValidationError", case
        assert isinstance(payload["detail"], str) and payload["detail"], case
        assert payload["fields"], case
        for f in payload["fields"]:
            assert set(f) == {"loc", "msg"}, case
            assert isinstance(f["loc"], list) and f["loc"], case
            assert isinstance(f["msg"], str) and f["msg"], case
        assert any(field in f["loc"] for f in payload["fields"]), (case, payload["fields"])
        # Error bodies never echo input values, the notes least of all.
        assert "PIN is 4321" not in response.text, case
        assert "Bernadette" not in response.text, case
        if echo is not None:
            assert echo not in response.text, case
        if body.get("callback_at") is not None:
            assert str(body["callback_at"]) not in response.text, case

        # Nothing written anywhere.
        assert score_row(store_engine, held.user_id) == score_before, case
        assert ledger_row(store_engine, held.id) == ledger_before, case
        assert entry_row(store_engine, UNSIGNED, held.body["queue_entry_id"]) == entry_before, case
        assert transitions(store_engine, held.user_id) == [], case

    ok = complete(client, held, outcome="no_answer", notes=SECRET_NOTE)
    assert ok.status_code == 200, ok.text
    assert score_row(store_engine, held.user_id)["total_attempts"] == 1
    assert not [r for r in caplog.records if "Bernadette" in str(r.__dict__)]


# -- reclassification after the outcome --------------------------------------------------------


def _unsigned_with_claim(replica: Replica, user_id: int) -> int:
    replica.user(user_id, signed=False)
    return replica.claim(user_id)


def test_outcome_reclassifies_when_the_replica_says_otherwise(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    replica_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    """The user signed during the call and still owes a document: now outstanding_requests."""
    claim_id = _unsigned_with_claim(replica, 21)
    held = claim(client, store_engine, replica, cron_headers, user_id=21, add_to_replica=False)
    with replica_engine.begin() as conn:
        conn.execute(text("UPDATE users SET current_signature_file_id = 99 WHERE id = 21"))
    replica.requirement(claim_id, "proof_of_address")

    response = complete(client, held, outcome="completed_form")
    assert response.status_code == 200, response.text
    assert response.json()["score"]["current_queue_type"] == OUTSTANDING
    row = score_row(store_engine, 21)
    assert row["current_queue_type"] == OUTSTANDING
    assert row["last_outcome"] == "completed_form"
    assert row["total_attempts"] == 1
    [moved] = transitions(store_engine, 21)
    assert moved["from_queue_type"] == UNSIGNED
    assert moved["to_queue_type"] == OUTSTANDING
    assert moved["source"] == "outcome"
    assert moved["agent_id"] == held.agent_id
    assert moved["reason"]
    assert moved["run_id"] is None


def test_outcome_reclassifies_to_none(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    replica_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    """The claim was cancelled meanwhile: the user belongs in no queue."""
    _unsigned_with_claim(replica, 22)
    held = claim(client, store_engine, replica, cron_headers, user_id=22, add_to_replica=False)
    with replica_engine.begin() as conn:
        conn.execute(text("UPDATE claims SET status = 'CANCELLED' WHERE user_id = 22"))
    response = complete(client, held, outcome="not_interested")
    assert response.status_code == 200, response.text
    assert response.json()["score"]["current_queue_type"] is None
    assert score_row(store_engine, 22)["current_queue_type"] is None
    [moved] = transitions(store_engine, 22)
    assert (moved["from_queue_type"], moved["to_queue_type"], moved["source"]) == (
        UNSIGNED,
        None,
        "outcome",
    )


def test_deactivating_outcome_still_follows_the_replica(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    replica_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    claim_id = _unsigned_with_claim(replica, 23)
    held = claim(client, store_engine, replica, cron_headers, user_id=23, add_to_replica=False)
    with replica_engine.begin() as conn:
        conn.execute(text("UPDATE users SET current_signature_file_id = 99 WHERE id = 23"))
    replica.requirement(claim_id, "bank_statement")
    response = complete(client, held, outcome="do_not_contact")
    assert response.status_code == 200, response.text
    score = response.json()["score"]
    assert score["is_active"] is False
    assert score["current_queue_type"] == OUTSTANDING
    row = score_row(store_engine, 23)
    assert (row["is_active"], row["current_queue_type"]) == (False, OUTSTANDING)
    assert [t["source"] for t in transitions(store_engine, 23)] == ["outcome"]


def test_outcome_with_user_gone_from_replica(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    replica_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    held = claim(client, store_engine, replica, cron_headers, user_id=24)
    with replica_engine.begin() as conn:
        conn.execute(text("DELETE FROM claims WHERE user_id = 24"))
        conn.execute(text("DELETE FROM users WHERE id = 24"))
    response = complete(client, held, outcome="no_answer")
    assert response.status_code == 200, response.text
    assert score_row(store_engine, 24)["current_queue_type"] is None
    assert [t["to_queue_type"] for t in transitions(store_engine, 24)] == [None]


def test_outcome_recorded_when_the_replica_is_down(
    client: TestClient,
    make_client: Any,
    store_engine: Engine,
    replica: Replica,
    replica_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    """Claimed while the replica answered; completed by an instance that cannot reach it."""
    held = claim(client, store_engine, replica, cron_headers, user_id=31)
    # Even though the replica would now say otherwise, nobody can know it: no reclassification.
    with replica_engine.begin() as conn:
        conn.execute(text("UPDATE claims SET status = 'cancelled' WHERE user_id = 31"))
    blind = make_client(replica_database_url=UNREACHABLE)
    before = db_now(store_engine)
    response = blind.post(
        f"/api/assignments/{held.id}/complete",
        json={"outcome": "hung_up", "notes": "n"},
        headers=held.auth,
    )
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["score"]["current_queue_type"] == UNSIGNED
    row = score_row(store_engine, 31)
    assert row["current_score"] == 2
    assert row["total_attempts"] == 1
    assert row["last_outcome"] == "hung_up"
    assert_between(row["next_call_after"], before + 4 * H, after + 4 * H)
    assert row["current_queue_type"] == UNSIGNED
    ledger = ledger_row(store_engine, held.id)
    assert (ledger["status"], ledger["outcome"], ledger["notes"]) == ("completed", "hung_up", "n")
    assert entry_row(store_engine, UNSIGNED, held.body["queue_entry_id"])["status"] == "completed"
    assert transitions(store_engine, 31) == []


def test_simultaneous_completions_record_one_outcome(
    client: TestClient,
    make_client: Any,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    """A double submit from two instances at once: one outcome applied, the other 409."""
    held = claim(client, store_engine, replica, cron_headers)
    other = make_client()
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def submit(c: TestClient, outcome: str) -> None:
        barrier.wait()
        results[outcome] = complete(c, held, outcome=outcome).status_code

    threads = [
        threading.Thread(target=submit, args=(client, "no_answer")),
        threading.Thread(target=submit, args=(other, "bad_number")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results.values()) == [200, 409], results
    winner = next(o for o, status in results.items() if status == 200)
    row = score_row(store_engine, held.user_id)
    assert row["total_attempts"] == 1
    assert row["last_outcome"] == winner
    assert row["current_score"] == TABLE[winner].change
    assert ledger_row(store_engine, held.id)["outcome"] == winner
