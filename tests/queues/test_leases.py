"""Leases (SPEC 3.3): expiry returns the entry, late completions, extend and release.

Assignments are made through the API (population, then next-user); leases are made to run out
by moving ``lease_expires_at`` into the past in the database, and swept with
``sweep_expired_leases`` in a transaction, as the claim path and ``callqueue sweep`` do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth.identity import AgentIdentity
from app.queues.leases import sweep_expired_leases
from app.services import Services
from tests.factories import Agent, Replica, add_scores, lapse, new_agent, own_phone

UNSIGNED = "unsigned_users"
POPULATE = "/api/cron/populate-separated-queues"
NEXT = f"/api/queues/{UNSIGNED}/next-user"


def book(
    client: TestClient,
    store: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    user_ids: tuple[int, ...] = (1, 2, 3),
) -> None:
    """Unsigned leads served in the order given (equal scores: by user_id), populated."""
    for uid in user_ids:
        replica.unsigned(uid)
    add_scores(store, [{"user_id": uid, "current_queue_type": UNSIGNED} for uid in user_ids])
    pop = client.get(POPULATE, params={"queue": UNSIGNED}, headers=cron_headers)
    assert pop.status_code == 200, pop.text
    assert pop.json()["queues"][UNSIGNED]["populated"] == len(user_ids)


def next_user(client: TestClient, agent: Agent) -> dict[str, Any]:
    got = client.post(NEXT, headers=agent.auth)
    assert got.status_code == 200, got.text
    return dict(got.json())


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()


def fetch(engine: Engine, sql: str, **params: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text(sql), params).one()
    return dict(row._mapping)


def ledger(engine: Engine, assignment_id: str) -> dict[str, Any]:
    return fetch(engine, "SELECT * FROM assignments WHERE id = CAST(:i AS uuid)", i=assignment_id)


def entry(engine: Engine, entry_id: str) -> dict[str, Any]:
    return fetch(engine, f"SELECT * FROM {UNSIGNED}_queue WHERE id = CAST(:i AS uuid)", i=entry_id)


def score(engine: Engine, user_id: int) -> dict[str, Any]:
    return fetch(engine, "SELECT * FROM user_call_scores WHERE user_id = :u", u=user_id)


def sweep(engine: Engine) -> int:
    with engine.begin() as conn:
        return sweep_expired_leases(conn)


def act(client: TestClient, agent: Agent, assignment_id: str, action: str, **body: Any) -> Any:
    return client.post(
        f"/api/assignments/{assignment_id}/{action}", json=body or None, headers=agent.auth
    )


def assert_between(value: datetime | None, low: datetime, high: datetime) -> None:
    assert value is not None
    assert low <= value <= high, f"{value} not within [{low}, {high}]"


# -- expiry ------------------------------------------------------------------------------------


def test_expiry_returns_the_entry_to_the_queue(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice = new_agent(store_engine, "alice")
    first = next_user(client, alice)
    assert first["user_id"] == 1 and first["queue_position"] == 1
    assert entry(store_engine, first["queue_entry_id"])["status"] == "assigned"
    assert sweep(store_engine) == 0  # nothing overdue yet

    lapse(store_engine, first["assignment_id"])
    assert sweep(store_engine) == 1

    row = ledger(store_engine, first["assignment_id"])
    assert row["status"] == "expired"
    assert row["outcome"] is None
    assert row["finished_at"] is not None
    back = entry(store_engine, first["queue_entry_id"])
    assert back["status"] == "pending"
    assert back["assigned_to_agent"] is None
    assert back["assigned_at"] is None
    assert back["queue_position"] == 1
    assert score(store_engine, 1)["total_attempts"] == 0
    assert sweep(store_engine) == 0  # idempotent
    # The holder no longer has a current assignment, and the entry is served again, first.
    assert client.get("/api/assignments/current", headers=alice.auth).status_code == 204
    bob = new_agent(store_engine, "bob")
    again = next_user(client, bob)
    assert again["queue_entry_id"] == first["queue_entry_id"]
    assert again["user_id"] == 1
    assert again["queue_position"] == 1
    assert again["assignment_id"] != first["assignment_id"]


def test_claim_sweeps_overdue_leases_itself(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice, bob = new_agent(store_engine, "alice"), new_agent(store_engine, "bob")
    first = next_user(client, alice)
    lapse(store_engine, first["assignment_id"])
    again = next_user(client, bob)  # no explicit sweep: the claim expires alice's lease
    assert again["user_id"] == 1
    assert ledger(store_engine, first["assignment_id"])["status"] == "expired"


def _late_setup(
    client: TestClient, store: Engine, replica: Replica, cron_headers: dict[str, str]
) -> tuple[Agent, Agent, dict[str, Any], dict[str, Any]]:
    """Alice's lease on user 1 ran out; Bob has been given user 1 since."""
    book(client, store, replica, cron_headers, (1, 2))
    alice, bob = new_agent(store, "alice"), new_agent(store, "bob")
    late = next_user(client, alice)
    lapse(store, late["assignment_id"])
    assert sweep(store) == 1
    current = next_user(client, bob)
    assert current["user_id"] == late["user_id"] == 1
    return alice, bob, late, current


def test_late_complete_after_reassignment_is_409_and_changes_nothing(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    alice, _bob, late, current = _late_setup(client, store_engine, replica, cron_headers)
    score_before = score(store_engine, 1)
    late_before = ledger(store_engine, late["assignment_id"])
    current_before = ledger(store_engine, current["assignment_id"])
    entry_before = entry(store_engine, current["queue_entry_id"])

    for outcome in ("no_answer", "completed_form", "not_interested"):
        response = act(client, alice, late["assignment_id"], "complete", outcome=outcome)
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "Conflict"
        assert score(store_engine, 1) == score_before
        assert ledger(store_engine, late["assignment_id"]) == late_before
        assert ledger(store_engine, current["assignment_id"]) == current_before
        assert entry(store_engine, current["queue_entry_id"]) == entry_before
    # Nor may she extend or release the lapsed lease.
    for action in ("extend", "release"):
        assert act(client, alice, late["assignment_id"], action).status_code == 409
    assert ledger(store_engine, current["assignment_id"]) == current_before


def test_late_do_not_contact_still_deactivates(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    """A person who asked not to be called is never called again because a lease ran out."""
    alice, bob, late, current = _late_setup(client, store_engine, replica, cron_headers)
    response = act(
        client, alice, late["assignment_id"], "complete", outcome="do_not_contact", notes="stop"
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "Conflict"

    row = score(store_engine, 1)
    assert row["is_active"] is False
    assert row["last_outcome"] == "do_not_contact"
    late_row = ledger(store_engine, late["assignment_id"])
    assert late_row["outcome"] == "do_not_contact"
    assert late_row["status"] == "expired"
    # Bob's assignment was not completed by Alice's late answer.
    assert ledger(store_engine, current["assignment_id"])["status"] == "active"
    assert ledger(store_engine, current["assignment_id"])["outcome"] is None

    # Once Bob finishes, the deactivated user is not served again.
    done = act(client, bob, current["assignment_id"], "complete", outcome="no_answer")
    assert done.status_code == 200, done.text
    assert score(store_engine, 1)["is_active"] is False
    assert next_user(client, bob)["user_id"] == 2


def test_late_no_claim_still_deactivates(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    alice, _bob, late, _current = _late_setup(client, store_engine, replica, cron_headers)
    response = act(client, alice, late["assignment_id"], "complete", outcome="no_claim")
    assert response.status_code == 409, response.text
    row = score(store_engine, 1)
    assert (row["is_active"], row["last_outcome"]) == (False, "no_claim")
    assert ledger(store_engine, late["assignment_id"])["outcome"] == "no_claim"


def test_completing_own_expired_swept_assignment_is_accepted(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1, 2))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    lapse(store_engine, held["assignment_id"])
    assert sweep(store_engine) == 1
    assert entry(store_engine, held["queue_entry_id"])["status"] == "pending"

    response = act(client, alice, held["assignment_id"], "complete", outcome="no_answer")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["outcome"] == "no_answer"
    assert ledger(store_engine, held["assignment_id"])["status"] == "completed"
    back = entry(store_engine, held["queue_entry_id"])
    assert back["status"] == "completed"  # no longer offered to anyone
    row = score(store_engine, 1)
    assert (row["total_attempts"], row["current_score"], row["last_outcome"]) == (
        1,
        1,
        "no_answer",
    )
    # The next claim goes on to user 2, not back to user 1.
    bob = new_agent(store_engine, "bob")
    assert next_user(client, bob)["user_id"] == 2


def test_completing_own_lapsed_unswept_assignment_is_accepted(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    lapse(store_engine, held["assignment_id"])  # lapsed, not yet swept
    response = act(client, alice, held["assignment_id"], "complete", outcome="call_back")
    assert response.status_code == 200, response.text
    assert ledger(store_engine, held["assignment_id"])["status"] == "completed"
    assert entry(store_engine, held["queue_entry_id"])["status"] == "completed"
    assert score(store_engine, 1)["successful_calls"] == 1


# -- extend ------------------------------------------------------------------------------------


def test_extend_sets_a_new_lease_from_the_database_clock(
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    client = make_client(lease_seconds=120)
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    # Shorten the lease so an extension visibly moves it.
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE assignments SET lease_expires_at = now() + interval '5 seconds'"
                " WHERE id = CAST(:i AS uuid)"
            ),
            {"i": held["assignment_id"]},
        )
    lease = timedelta(seconds=120)
    before = db_now(store_engine)
    response = act(client, alice, held["assignment_id"], "extend")
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    body = response.json()
    row = ledger(store_engine, held["assignment_id"])
    assert_between(row["lease_expires_at"], before + lease, after + lease)
    assert datetime.fromisoformat(body["lease_expires_at"]) == row["lease_expires_at"]
    assert body["status"] == "active"
    assert body["assignment_id"] == held["assignment_id"]
    assert body["user"]["phone_number"] == own_phone(body["user_id"])  # still the holder
    assert row["status"] == "active"
    assert entry(store_engine, held["queue_entry_id"])["status"] == "assigned"


def test_extend_uses_the_default_lease(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    before = db_now(store_engine)
    response = act(client, alice, held["assignment_id"], "extend")
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    lease = timedelta(seconds=900)
    row = ledger(store_engine, held["assignment_id"])
    assert_between(row["lease_expires_at"], before + lease, after + lease)


def test_extend_after_expiry_is_409(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    lapse(store_engine, held["assignment_id"])
    lapsed = ledger(store_engine, held["assignment_id"])
    response = act(client, alice, held["assignment_id"], "extend")  # before any sweep
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "Conflict"
    assert ledger(store_engine, held["assignment_id"]) == lapsed
    sweep(store_engine)
    assert act(client, alice, held["assignment_id"], "extend").status_code == 409
    assert ledger(store_engine, held["assignment_id"])["status"] == "expired"


# -- release -----------------------------------------------------------------------------------


def test_release_with_requeue_puts_the_entry_back(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1, 2))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    before = db_now(store_engine)
    response = act(
        client, alice, held["assignment_id"], "release", requeue=True, reason="wrong language"
    )
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "released"
    assert response.json()["user"] is None

    row = ledger(store_engine, held["assignment_id"])
    assert row["status"] == "released"
    assert row["release_reason"] == "wrong language"
    assert row["outcome"] is None
    assert_between(row["finished_at"], before, after)
    back = entry(store_engine, held["queue_entry_id"])
    assert back["status"] == "pending"
    assert back["assigned_to_agent"] is None
    assert back["queue_position"] == 1
    s = score(store_engine, 1)
    assert s["next_call_after"] is None
    assert s["total_attempts"] == 0
    # Served again, first, to the next agent who asks.
    bob = new_agent(store_engine, "bob")
    assert next_user(client, bob)["queue_entry_id"] == held["queue_entry_id"]


def test_release_without_body_requeues(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    response = client.post(f"/api/assignments/{held['assignment_id']}/release", headers=alice.auth)
    assert response.status_code == 200, response.text
    assert entry(store_engine, held["queue_entry_id"])["status"] == "pending"
    assert score(store_engine, 1)["next_call_after"] is None


def test_release_without_requeue_skips_and_sets_the_cooldown(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1, 2))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    before = db_now(store_engine)
    response = act(client, alice, held["assignment_id"], "release", requeue=False, reason=None)
    after = db_now(store_engine)
    assert response.status_code == 200, response.text
    assert ledger(store_engine, held["assignment_id"])["status"] == "released"
    skipped = entry(store_engine, held["queue_entry_id"])
    assert skipped["status"] == "skipped"
    assert skipped["assigned_to_agent"] is None
    cooldown = timedelta(minutes=60)
    s = score(store_engine, 1)
    assert_between(s["next_call_after"], before + cooldown, after + cooldown)
    assert s["total_attempts"] == 0 and s["last_outcome"] is None
    # The skipped user is not served again; the next one is.
    assert next_user(client, alice)["user_id"] == 2


def test_skip_cooldown_follows_the_setting(
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    client = make_client(skip_cooldown_minutes=15)
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    before = db_now(store_engine)
    assert act(client, alice, held["assignment_id"], "release", requeue=False).status_code == 200
    after = db_now(store_engine)
    cooldown = timedelta(minutes=15)
    assert_between(score(store_engine, 1)["next_call_after"], before + cooldown, after + cooldown)


def test_skip_cooldown_zero_leaves_next_call_after_alone(
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    client = make_client(skip_cooldown_minutes=0)
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    before = score(store_engine, 1)
    response = act(client, alice, held["assignment_id"], "release", requeue=False)
    assert response.status_code == 200, response.text
    assert entry(store_engine, held["queue_entry_id"])["status"] == "skipped"
    after = score(store_engine, 1)
    assert after["next_call_after"] is None
    assert after == before


def test_skip_in_direct_mode_keeps_the_user_away(
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    replica: Replica,
) -> None:
    """Without the cooldown a skipped lead would come straight back in direct mode."""
    client = make_client(migration_mode="legacy-only")
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": UNSIGNED}])
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    assert held["source"] == "direct"
    assert act(client, alice, held["assignment_id"], "release", requeue=False).status_code == 200
    assert score(store_engine, 1)["next_call_after"] is not None
    assert client.post(NEXT, headers=alice.auth).status_code == 204


def test_release_of_a_finished_assignment_is_409(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    held = next_user(client, alice)
    assert act(client, alice, held["assignment_id"], "release").status_code == 200
    released = ledger(store_engine, held["assignment_id"])
    for action, body in (
        ("release", {"requeue": False}),
        ("extend", {}),
        ("complete", {"outcome": "no_answer"}),
    ):
        response = act(client, alice, held["assignment_id"], action, **body)
        assert response.status_code == 409, (action, response.text)
    assert ledger(store_engine, held["assignment_id"]) == released
    assert entry(store_engine, held["queue_entry_id"])["status"] == "pending"
    assert score(store_engine, 1)["next_call_after"] is None


# -- supervisor's forced release ---------------------------------------------------------------


def test_forced_release_requeues_even_when_asked_not_to(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1, 2))
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    held = next_user(client, alice)
    response = client.post(
        f"/api/admin/assignments/{held['assignment_id']}/release",
        json={"requeue": False, "reason": "agent went home"},
        headers=boss.auth,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "released"
    assert response.json()["user"] is None
    row = ledger(store_engine, held["assignment_id"])
    assert row["status"] == "released"
    assert row["agent_id"] == alice.id  # still Alice's hand-out in the ledger
    assert "boss" in row["release_reason"] and "agent went home" in row["release_reason"]
    back = entry(store_engine, held["queue_entry_id"])
    assert (back["status"], back["assigned_to_agent"], back["queue_position"]) == (
        "pending",
        None,
        1,
    )
    assert score(store_engine, 1)["next_call_after"] is None  # no skip cooldown
    # Alice is free, and the user is served again first.
    assert client.get("/api/assignments/current", headers=alice.auth).status_code == 204
    assert next_user(client, alice)["queue_entry_id"] == held["queue_entry_id"]


def test_forced_release_without_body_and_of_finished_assignments(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    held = next_user(client, alice)
    path = f"/api/admin/assignments/{held['assignment_id']}/release"
    first = client.post(path, headers=boss.auth)
    assert first.status_code == 200, first.text
    assert entry(store_engine, held["queue_entry_id"])["status"] == "pending"
    again = client.post(path, headers=boss.auth)
    assert again.status_code == 409, again.text
    # Alice's own actions on the released assignment: 409 as well.
    assert act(
        client, alice, held["assignment_id"], "complete", outcome="no_answer"
    ).status_code == (409)


def test_forced_release_service_requeues_whatever_requeue_says(
    client: TestClient,
    services: Services,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    """AssignmentService.release(forced=True) re-queues even with requeue=False, sets no skip
    cooldown, and may act on another agent's assignment."""
    book(client, store_engine, replica, cron_headers, (1,))
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    held = next_user(client, alice)
    row = services.assignments.release(
        AgentIdentity(boss.id, boss.name, "supervisor"),
        uuid.UUID(held["assignment_id"]),
        requeue=False,
        reason=None,
        forced=True,
    )
    assert row.status == "released"
    assert row.agent_id == alice.id
    assert entry(store_engine, held["queue_entry_id"])["status"] == "pending"
    assert score(store_engine, 1)["next_call_after"] is None


def test_do_not_contact_after_a_forced_release_still_deactivates(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    """The supervisor took the user back mid-call; the person had asked never to be called."""
    book(client, store_engine, replica, cron_headers, (1, 2))
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    held = next_user(client, alice)
    forced = client.post(
        f"/api/admin/assignments/{held['assignment_id']}/release", headers=boss.auth
    )
    assert forced.status_code == 200, forced.text

    late = act(client, alice, held["assignment_id"], "complete", outcome="do_not_contact")
    assert late.status_code == 409, late.text
    row = score(store_engine, 1)
    assert (row["is_active"], row["last_outcome"]) == (False, "do_not_contact")
    assert ledger(store_engine, held["assignment_id"])["status"] == "released"
    assert ledger(store_engine, held["assignment_id"])["outcome"] == "do_not_contact"
    # A non-deactivating outcome after the release changes nothing.
    assert (
        act(client, alice, held["assignment_id"], "complete", outcome="no_answer").status_code
        == 409
    )
    assert score(store_engine, 1)["total_attempts"] == 0
