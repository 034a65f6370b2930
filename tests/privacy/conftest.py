"""A person with a full history, made through the service's own routes: a completed call with
notes that booked a callback, a supervisor's change to that callback, the callback handed out
again and held (a live assignment), a move between queues, a refused hand-out, and their number
on the do-not-call list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, text

from tests.factories import Agent, Replica, add_scores, make_due, new_agent, own_phone

POPULATE = "/api/cron/populate-separated-queues"
PERSON = 4242
OTHERS = (4243, 4244)
NOTES = "Her daughter answers; she is in hospital until Friday (ward 7)"
RELEASE_REASON = "wrong person answered, try the mobile"
CHANGE_REASON = "Mrs Smith asked for the same agent"
CRM_URL = "https://crm.example.test/callqueue-events"


@dataclass
class History:
    person: int
    first: Agent  # who completed the call and booked the callback
    holder: Agent  # who holds the live assignment at the end
    admin: Agent
    supervisor: Agent
    live_assignment: str
    completed_assignment: str
    callback_id: str


@pytest.fixture
def history(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> History:
    for uid in (PERSON, *OTHERS):
        replica.unsigned(uid)
    add_scores(
        store_engine,
        [
            # Lower scores are served first: the person is the first lead handed out.
            {"user_id": PERSON, "current_queue_type": "unsigned_users", "current_score": 0},
            *(
                {"user_id": u, "current_queue_type": "unsigned_users", "current_score": 50}
                for u in OTHERS
            ),
        ],
    )
    assert client.get(POPULATE, headers=cron_headers).status_code == 200
    first = new_agent(store_engine, "first")
    holder = new_agent(store_engine, "holder")
    supervisor = new_agent(store_engine, "boss", "supervisor")
    admin = new_agent(store_engine, "dpo", "admin")
    # The CRM hears of every hand-out and callback: the outbox holds events about the person.
    crm = client.post(
        "/api/admin/webhooks",
        json={"url": CRM_URL, "event_types": ["assignment.started", "callback.booked"]},
        headers=admin.auth,
    )
    assert crm.status_code == 201, crm.text

    claimed = client.post("/api/queues/unsigned_users/next-user", headers=first.auth).json()
    assert claimed["user_id"] == PERSON
    callback_at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    done = client.post(
        f"/api/assignments/{claimed['assignment_id']}/complete",
        json={"outcome": "call_back", "callback_at": callback_at, "notes": NOTES},
        headers=first.auth,
    )
    assert done.status_code == 200, done.text
    callback_id = done.json()["callback"]["id"]
    moved = client.post(
        f"/api/admin/callbacks/{callback_id}/reassign",
        json={"agent_id": holder.id, "reason": CHANGE_REASON},
        headers=supervisor.auth,
    )
    assert moved.status_code == 200, moved.text

    # The callback falls due and its new owner is handed it, gives it back with a reason, and
    # takes it again: a live assignment at the end.
    make_due(store_engine, PERSON)
    served = client.post("/api/queues/unsigned_users/next-user", headers=holder.auth).json()
    assert (served["user_id"], served["source"]) == (PERSON, "callback")
    back = client.post(
        f"/api/assignments/{served['assignment_id']}/release",
        json={"requeue": True, "reason": RELEASE_REASON},
        headers=holder.auth,
    )
    assert back.status_code == 200, back.text
    live = client.post("/api/queues/unsigned_users/next-user", headers=holder.auth).json()
    assert (live["user_id"], live["source"]) == (PERSON, "callback")

    with store_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO queue_transitions (user_id, from_queue_type, to_queue_type, reason,"
                " source) VALUES (:u, 'outstanding_requests', 'unsigned_users',"
                " 'signature removed on claim 77: ' || :note, 'discovery')"
            ),
            {"u": PERSON, "note": "dispute"},
        )
        conn.execute(
            text(
                "INSERT INTO entry_invalidations (queue_type, source, entry_id, user_id, reason)"
                " VALUES ('unsigned_users', 'queue', gen_random_uuid(), :u, 'suppressed'),"
                " ('unsigned_users', 'queue', gen_random_uuid(), :u,"
                " 'reclassified: claim 77 closed by the client')"
            ),
            {"u": PERSON},
        )
    listed = client.post(
        "/api/admin/suppression", json={"phones": [own_phone(PERSON)]}, headers=supervisor.auth
    )
    assert listed.status_code == 200, listed.text
    return History(
        PERSON,
        first,
        holder,
        admin,
        supervisor,
        live["assignment_id"],
        claimed["assignment_id"],
        callback_id,
    )


def user_id_tables(conn: Connection) -> list[str]:
    """The tables (not views) with a user_id column, by name."""
    return list(
        conn.execute(
            text(
                "SELECT c.table_name FROM information_schema.columns c"
                " JOIN information_schema.tables t"
                "   ON (t.table_schema, t.table_name) = (c.table_schema, c.table_name)"
                " WHERE c.table_schema = current_schema() AND c.column_name = 'user_id'"
                "   AND t.table_type = 'BASE TABLE'"
                " ORDER BY c.table_name"
            )
        ).scalars()
    )


def rows_of(store: Engine, person: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table with a user_id column that names the person."""
    with store.connect() as conn:
        return {
            table: [
                dict(r)
                for r in conn.execute(
                    text(f'SELECT * FROM "{table}" WHERE user_id = :u'), {"u": person}
                ).mappings()
            ]
            for table in user_id_tables(conn)
        }
