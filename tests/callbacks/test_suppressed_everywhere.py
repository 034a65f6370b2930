"""A suppressed number shared by two people blocks both on every hand-out path (SPEC 7.3): a due
callback, a queue entry and direct mode, through real hand-outs, not a check called alone."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.factories import Replica, add_scores, new_agent

NEXT = "/api/queues/unsigned_users/next-user"


def test_a_shared_suppressed_number_is_never_handed_out_on_any_path(
    make_client: Callable[..., TestClient], store_engine: Engine, replica_engine: Engine
) -> None:
    client = make_client()
    replica = Replica(replica_engine)
    replica.unsigned(1, phone="07700 900555")
    replica.unsigned(2, phone="+44 (0)7700 900-555")  # the same number, written otherwise
    replica.unsigned(3, phone="07700 900556")
    replica.unsigned(4, phone="07700 900557")
    add_scores(
        store_engine,
        [
            {"user_id": u, "current_queue_type": "unsigned_users", "current_score": u}
            for u in (1, 2, 3, 4)
        ],
    )
    agent = new_agent(store_engine, "ann").auth
    boss = new_agent(store_engine, "boss", "supervisor").auth
    assert client.post("/api/admin/populate", headers=boss).status_code == 200

    # Before the number is suppressed, person 1 asks to be called back.
    first = client.post(NEXT, headers=agent).json()
    assert first["user_id"] == 1
    with store_engine.connect() as conn:
        soon = conn.execute(text("SELECT now() + interval '1 hour'")).scalar_one()
    booked = client.post(
        f"/api/assignments/{first['assignment_id']}/complete",
        headers=agent,
        json={"outcome": "call_back", "callback_at": soon.isoformat()},
    ).json()["callback"]["id"]

    # Person 2 (same number) asks never to be called: the number goes on the list.
    added = client.post("/api/admin/suppression", headers=boss, json={"phones": ["07700900555"]})
    assert added.status_code == 200, added.text
    with store_engine.begin() as conn:
        conn.execute(
            text("UPDATE callbacks SET due_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": booked},
        )
        conn.execute(
            text(
                "UPDATE user_call_scores SET next_call_after = now() - interval '1 minute'"
                " WHERE user_id = 1"
            )
        )

    # One request meets both paths: the due callback (person 1) is cancelled, person 2's
    # entry is refused, and person 3 is the one handed out.
    got = client.post(NEXT, headers=agent)
    assert got.status_code == 200, got.text
    assert (got.json()["user_id"], got.json()["source"]) == (3, "queue")
    with store_engine.connect() as conn:
        callback = conn.execute(
            text("SELECT status, cancel_reason FROM callbacks WHERE id = :id"), {"id": booked}
        ).one()
        entry = conn.execute(
            text("SELECT status, invalid_reason FROM unsigned_users_queue WHERE user_id = 2")
        ).one()
    assert tuple(callback) == ("cancelled", "suppressed")
    assert tuple(entry) == ("invalid", "suppressed")
    client.post(
        f"/api/assignments/{got.json()['assignment_id']}/complete",
        headers=agent,
        json={"outcome": "no_answer"},
    )

    # Direct mode walks the scores: persons 1 and 2 come first, and both are refused.
    flags = client.put("/api/admin/flags", headers=boss, json={"MIGRATION_MODE": "legacy-only"})
    assert flags.status_code == 200
    got = client.post(NEXT, headers=agent)
    assert got.status_code == 200, got.text
    assert (got.json()["user_id"], got.json()["source"]) == (4, "direct")

    with store_engine.connect() as conn:
        handed_out = conn.execute(
            text("SELECT user_id, source FROM assignments ORDER BY assigned_at")
        ).all()
        refused = conn.execute(
            text(
                "SELECT source, user_id FROM entry_invalidations WHERE reason = 'suppressed'"
                " ORDER BY created_at, user_id"
            )
        ).all()
    # Person 1 only before the number was listed; person 2 never.
    assert [tuple(r) for r in handed_out] == [(1, "queue"), (3, "queue"), (4, "direct")]
    assert [tuple(r) for r in refused] == [
        ("callback", 1),
        ("queue", 2),
        ("direct", 1),
        ("direct", 2),
    ]
