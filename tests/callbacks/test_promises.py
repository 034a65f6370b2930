"""A promised call is kept whatever happens to the person meanwhile (SPEC 8.1).

* Callbacks follow their person: reclassified (here by discovery, which finds new documents
  owed), the open callback moves to the person's new queue in the same transaction, and
  next-user on that queue serves it; reclassified to no queue, it is cancelled ('no_queue').
* A callback is never cancelled because of an attempt cap: at the weekly cap it stays scheduled
  (and shows as overdue), and is served once the cap allows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import text

from app.queues.transitions import Reclassification, reclassify
from tests.callbacks.conftest import OUTSTANDING, UNSIGNED, Desk
from tests.conftest import CRON_SECRET


def owe_a_document(desk: Desk, user_id: int) -> None:
    """The person signs and is asked for a document, now: they belong in outstanding_requests."""
    with desk.replica.engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET current_signature_file_id = 7 WHERE id = :u"), {"u": user_id}
        )
        claim_id = conn.execute(
            text("SELECT id FROM claims WHERE user_id = :u"), {"u": user_id}
        ).scalar_one()
    desk.replica.requirement(claim_id, "payslip", created_at=datetime.now(UTC))


def test_a_reclassified_persons_callback_moves_with_them_and_is_served_there(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=2)
    booked = d.book("ann")
    callback_id, user_id = booked["callback"]["id"], booked["user_id"]
    owe_a_document(d, user_id)

    found = d.client.get("/api/cron/discover", headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert found.status_code == 200 and found.json()["reclassified"] == 1, found.text

    moved = d.callback(callback_id)
    assert (moved.status, moved.queue_type) == ("scheduled", OUTSTANDING)
    with d.store.connect() as conn:
        assert (
            conn.execute(
                text("SELECT current_queue_type FROM user_call_scores WHERE user_id = :u"),
                {"u": user_id},
            ).scalar_one()
            == OUTSTANDING
        )
    d.due(callback_id)
    served = d.next_user("ann", OUTSTANDING)
    assert served.status_code == 200, served.text
    assert (served.json()["source"], served.json()["user_id"]) == ("callback", user_id)
    assert served.json()["callback_id"] == callback_id


def test_a_person_reclassified_to_no_queue_has_their_callback_cancelled(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=2)
    booked = d.book("ann")
    callback_id, user_id = booked["callback"]["id"], booked["user_id"]

    with d.store.begin() as conn:
        moved = reclassify(
            conn, UNSIGNED, [Reclassification(user_id, None, "no open claim")], source="test"
        )
    assert moved == 1

    cancelled = d.callback(callback_id)
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "no_queue")
    assert cancelled.finished_at is not None


def complete_attempts(desk: Desk, user_id: int, agent: str, count: int, hours_ago: int) -> None:
    """``count`` completed calls of the person in the ledger, ``hours_ago`` hours back."""
    with desk.store.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,"
                " status, outcome, assigned_at, lease_expires_at, finished_at)"
                " SELECT :agent, :user, 'unsigned_users', 'direct', 0, 'completed', 'no_answer',"
                " now() - make_interval(hours => :h), now() - make_interval(hours => :h),"
                " now() - make_interval(hours => :h) + make_interval(secs => g)"
                " FROM generate_series(1, :n) AS g"
            ),
            {"agent": desk.ids[agent], "user": user_id, "h": hours_ago, "n": count},
        )


def test_a_due_callback_at_the_weekly_cap_waits_and_is_served_once_the_cap_allows(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=2, max_attempts_per_week=4)
    booked = d.book("ann")  # one completed attempt
    callback_id, user_id = booked["callback"]["id"], booked["user_id"]
    complete_attempts(d, user_id, "ann", 3, hours_ago=48)  # four in the week: at the cap
    d.due(callback_id, minutes_ago=60)

    got = d.next_user("ann")
    # The cap holds: the person is not called; the queue's other lead is.
    assert got.status_code == 200, got.text
    assert got.json()["user_id"] != user_id and got.json()["source"] == "queue"
    waiting = d.callback(callback_id)
    assert (waiting.status, waiting.cancel_reason) == ("scheduled", None)
    stats = d.client.post(
        "/api/cron/populate-separated-queues", headers={"Authorization": f"Bearer {CRON_SECRET}"}
    ).json()
    assert stats["queues"][UNSIGNED]["callbacks"]["overdue"] == 1

    done = d.complete("ann", got.json()["assignment_id"], "no_answer")
    assert done.status_code == 200, done.text
    with d.store.begin() as conn:  # a week goes by for the three old attempts
        conn.execute(
            text(
                "UPDATE assignments SET finished_at = finished_at - interval '7 days',"
                " assigned_at = assigned_at - interval '7 days'"
                " WHERE user_id = :u AND finished_at < now() - interval '1 day'"
            ),
            {"u": user_id},
        )
    served = d.next_user("ann")
    assert served.status_code == 200, served.text
    assert (served.json()["source"], served.json()["user_id"]) == ("callback", user_id)
