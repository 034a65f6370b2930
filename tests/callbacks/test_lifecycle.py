"""A callback's life after it is booked (SPEC 7.2, with 3.3 and 3.4), through the API, checked
field by field on the callbacks row, the assignment that served it and the person's score row.

Time passes on the database's clock only: a test makes a callback due by moving its ``due_at``
(``Desk.due``), and a lease run out by moving ``lease_expires_at`` into the past."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from tests.callbacks.conftest import OUTSTANDING, UNSIGNED, Desk
from tests.factories import lapse, new_agent, own_phone

# -- helpers ------------------------------------------------------------------------------------


def one(d: Desk, sql: str, **params: Any) -> Any:
    with d.store.connect() as conn:
        return conn.execute(text(sql), params).one()


def rows(d: Desk, sql: str, **params: Any) -> list[Any]:
    with d.store.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def db_now(d: Desk) -> datetime:
    return one(d, "SELECT clock_timestamp() AS at").at  # type: ignore[no-any-return]


def assignment(d: Desk, assignment_id: str) -> Any:
    return one(d, "SELECT * FROM assignments WHERE id = :id", id=assignment_id)


def score(d: Desk, user_id: int) -> Any:
    return one(d, "SELECT * FROM user_call_scores WHERE user_id = :u", u=user_id)


def open_callbacks(d: Desk, user_id: int) -> list[Any]:
    return rows(
        d,
        "SELECT * FROM callbacks WHERE user_id = :u AND status IN ('scheduled', 'assigned')",
        u=user_id,
    )


def release(d: Desk, name: str, assignment_id: str, *, requeue: bool) -> Any:
    return d.client.post(
        f"/api/assignments/{assignment_id}/release",
        headers=d.agents[name],
        json={"requeue": requeue, "reason": "test"},
    )


def serve(d: Desk, name: str, callback_id: str, queue: str = UNSIGNED) -> dict[str, Any]:
    """The agent's next user is that callback."""
    got = d.next_user(name, queue)
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["source"], body["callback_id"]) == ("callback", callback_id), body
    return dict(body)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def booked_and_due(d: Desk, name: str = "ann", minutes_ago: float = 1) -> tuple[str, Any]:
    """The agent books a callback for the first user (100) and it falls due; returns its id and
    its row as it is then."""
    callback_id = d.book(name)["callback"]["id"]
    d.due(callback_id, minutes_ago=minutes_ago)
    return callback_id, d.callback(callback_id)


def set_flags(d: Desk, **flags: Any) -> None:
    answer = d.client.put("/api/admin/flags", headers=d.agents["boss"], json=flags)
    assert answer.status_code == 200, answer.text


# -- completing ---------------------------------------------------------------------------------


def test_completing_a_callback_without_a_new_time_completes_it(desk: Callable[..., Desk]) -> None:
    d = desk(users=3)
    callback_id, before = booked_and_due(d)
    served = serve(d, "ann", callback_id)
    assert ts(served["callback_due_at"]) == before.due_at

    row = d.callback(callback_id)
    handed = assignment(d, served["assignment_id"])
    assert (row.status, row.assignment_id, row.first_handed_out_at) == (
        "assigned",
        handed.id,
        handed.assigned_at,
    )
    assert row.finished_at is None

    done = d.complete("ann", served["assignment_id"], "no_answer")
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["callback"] is None  # nothing new booked
    assert (body["status"], body["source"], body["callback_id"]) == (
        "completed",
        "callback",
        callback_id,
    )

    row = d.callback(callback_id)
    handed = assignment(d, served["assignment_id"])
    assert row.status == "completed"
    assert row.due_at == before.due_at
    assert row.owner_agent_id == d.ids["ann"]
    assert row.assignment_id == handed.id
    assert row.first_handed_out_at == handed.assigned_at
    assert row.finished_at is not None and row.finished_at >= handed.assigned_at
    assert row.cancel_reason is None
    assert (handed.status, handed.outcome, handed.source) == ("completed", "no_answer", "callback")
    assert (handed.callback_id, handed.callback_due_at) == (row.id, before.due_at)
    assert handed.queue_entry_id is None and handed.agent_id == d.ids["ann"]
    # One transaction: the callback is completed right after its hand-out.
    assert handed.finished_at is not None
    assert handed.finished_at <= row.finished_at < handed.finished_at + timedelta(seconds=1)
    s = score(d, 100)
    assert s.last_outcome == "no_answer" and s.total_attempts == 2
    assert s.next_call_after - s.last_call_at == timedelta(hours=4)  # SPEC 3.4: no_answer
    assert open_callbacks(d, 100) == []
    # Kept: it is never served again.
    got = d.next_user("bob")
    assert got.json()["source"] == "queue" and got.json()["user_id"] != 100


def test_completing_a_callback_with_a_new_time_books_the_next_in_the_persons_queue(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, before = booked_and_due(d)
    served = serve(d, "ann", callback_id)
    # Since the booking the person signed and now owes a document: the completion's replica
    # verdict moves them, and the next callback is booked in the queue they belong to now.
    d.replica.requirement(d.replica.claim(100))
    with d.replica.engine.begin() as conn:
        conn.execute(text("UPDATE users SET current_signature_file_id = 7 WHERE id = 100"))
    again = d.callback_at(120)
    done = d.complete("ann", served["assignment_id"], "call_back", callback_at=again)
    assert done.status_code == 200, done.text
    body = done.json()
    new_id = body["callback"]["id"]
    assert new_id != callback_id
    assert ts(body["callback"]["due_at"]) == ts(again)
    assert body["score"]["current_queue_type"] == OUTSTANDING
    assert ts(body["score"]["next_call_after"]) == ts(again)

    old = d.callback(callback_id)
    assert (old.status, old.cancel_reason, old.assignment_id) == (
        "completed",
        None,
        assignment(d, served["assignment_id"]).id,
    )
    assert old.due_at == before.due_at and old.finished_at is not None

    new = d.callback(new_id)
    assert new.status == "scheduled"
    assert new.user_id == 100
    assert new.queue_type == OUTSTANDING
    assert new.due_at == ts(again)
    assert new.owner_agent_id == d.ids["ann"]
    assert str(new.booked_by_assignment_id) == served["assignment_id"]
    assert new.assignment_id is None and new.first_handed_out_at is None
    assert new.finished_at is None and new.cancel_reason is None
    assert [c.id for c in open_callbacks(d, 100)] == [new.id]
    s = score(d, 100)
    assert (s.next_call_after, s.current_queue_type, s.total_attempts) == (
        ts(again),
        OUTSTANDING,
        2,
    )
    transition = one(
        d,
        "SELECT from_queue_type, to_queue_type, source FROM queue_transitions WHERE user_id = 100",
    )
    assert tuple(transition) == (UNSIGNED, OUTSTANDING, "outcome")

    # Due, it is served on the outstanding queue, not the unsigned one.
    d.due(new_id)
    got = d.next_user("ann", UNSIGNED)
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    d.complete("ann", got.json()["assignment_id"], "no_answer")
    serve(d, "ann", new_id, OUTSTANDING)


# -- releasing ----------------------------------------------------------------------------------


def test_release_with_requeue_puts_it_back_due_and_it_is_served_again(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, before = booked_and_due(d)
    first = serve(d, "ann", callback_id)
    nca = score(d, 100).next_call_after

    answer = release(d, "ann", first["assignment_id"], requeue=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "released"

    handed = assignment(d, first["assignment_id"])
    assert (handed.status, handed.release_reason) == ("released", "test")
    assert handed.finished_at is not None
    row = d.callback(callback_id)
    assert row.status == "scheduled"
    assert row.due_at == before.due_at  # still due, at the same time
    assert row.owner_agent_id == d.ids["ann"]
    assert row.assignment_id == handed.id  # the last hand-out
    assert row.first_handed_out_at == handed.assigned_at
    assert row.finished_at is None and row.cancel_reason is None
    assert score(d, 100).next_call_after == nca  # a re-queue is no skip: no cooldown

    # Within ann's personal window, bob gets the queue; ann gets her callback again.
    got = d.next_user("bob")
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    second = serve(d, "ann", callback_id)
    assert second["assignment_id"] != first["assignment_id"]
    row = d.callback(callback_id)
    assert row.status == "assigned"
    assert str(row.assignment_id) == second["assignment_id"]
    assert row.first_handed_out_at == handed.assigned_at  # the first hand-out stays the first
    assert ts(second["callback_due_at"]) == before.due_at


def test_a_skip_moves_the_due_time_by_the_cooldown(desk: Callable[..., Desk]) -> None:
    d = desk(users=3)
    callback_id, before = booked_and_due(d)
    served = serve(d, "ann", callback_id)

    t0 = db_now(d)
    answer = release(d, "ann", served["assignment_id"], requeue=False)
    t1 = db_now(d)
    assert answer.status_code == 200, answer.text

    handed = assignment(d, served["assignment_id"])
    assert handed.status == "released"
    row = d.callback(callback_id)
    assert row.status == "scheduled"
    cooldown = timedelta(minutes=60)  # SKIP_COOLDOWN_MINUTES' default
    assert t0 + cooldown <= row.due_at <= t1 + cooldown
    assert row.due_at > before.due_at
    assert row.owner_agent_id == d.ids["ann"]
    assert row.assignment_id == handed.id
    assert row.first_handed_out_at == handed.assigned_at
    assert row.finished_at is None and row.cancel_reason is None
    assert t0 + cooldown <= score(d, 100).next_call_after <= t1 + cooldown

    # Not due any more: ann gets the queue, and so would anyone past her personal window.
    got = d.next_user("ann")
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    assert d.callback(callback_id).status == "scheduled"


def test_a_skip_without_a_cooldown_leaves_the_callback_due(desk: Callable[..., Desk]) -> None:
    d = desk(users=3, skip_cooldown_minutes=0)
    callback_id, before = booked_and_due(d)
    served = serve(d, "ann", callback_id)
    assert release(d, "ann", served["assignment_id"], requeue=False).status_code == 200
    row = d.callback(callback_id)
    assert (row.status, row.due_at) == ("scheduled", before.due_at)
    serve(d, "ann", callback_id)


# -- a lease running out ------------------------------------------------------------------------


def test_an_expired_lease_puts_it_back_and_anyone_takes_it_after_the_window(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=4, agents=("ann", "bob", "cy"))
    callback_id, before = booked_and_due(d)
    first = serve(d, "ann", callback_id)
    lapse(d.store, first["assignment_id"])

    # The next claim (bob's) sweeps: the hand-out expires and the callback is due again, still
    # ann's for her personal window, so bob gets the queue.
    got = d.next_user("bob")
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    expired = assignment(d, first["assignment_id"])
    assert expired.status == "expired" and expired.finished_at is not None
    row = d.callback(callback_id)
    assert row.status == "scheduled"
    assert row.due_at == before.due_at
    assert row.owner_agent_id == d.ids["ann"]
    assert row.assignment_id == expired.id
    assert row.first_handed_out_at == expired.assigned_at
    assert row.finished_at is None and row.cancel_reason is None

    # Past the personal window anyone takes it: cy, who is nobody's owner.
    d.due(callback_id, minutes_ago=31)
    taken = serve(d, "cy", callback_id)
    row = d.callback(callback_id)
    assert row.status == "assigned" and str(row.assignment_id) == taken["assignment_id"]
    assert row.owner_agent_id == d.ids["ann"]  # the owner stays who booked it
    assert row.first_handed_out_at == expired.assigned_at

    # ann's outcome comes too late: cy has had the person since.
    late = d.complete("ann", first["assignment_id"], "no_answer")
    assert late.status_code == 409, late.text
    assert d.callback(callback_id).status == "assigned"
    done = d.complete("cy", taken["assignment_id"], "no_answer")
    assert done.status_code == 200, done.text
    row = d.callback(callback_id)
    assert (row.status, str(row.assignment_id)) == ("completed", taken["assignment_id"])
    assert score(d, 100).total_attempts == 2  # the booking call and cy's; ann's late one not


def test_a_late_outcome_with_nobody_since_still_completes_the_callback(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, _ = booked_and_due(d)
    first = serve(d, "ann", callback_id)
    lapse(d.store, first["assignment_id"])
    got = d.next_user("bob")  # sweeps
    assert got.json()["user_id"] == 101
    assert d.callback(callback_id).status == "scheduled"

    done = d.complete("ann", first["assignment_id"], "no_answer")
    assert done.status_code == 200, done.text
    row = d.callback(callback_id)
    assert (row.status, str(row.assignment_id)) == ("completed", first["assignment_id"])
    assert row.finished_at is not None
    assert assignment(d, first["assignment_id"]).status == "completed"
    assert open_callbacks(d, 100) == []


# -- rebooking ----------------------------------------------------------------------------------


def test_a_new_booking_replaces_the_open_one_as_rebooked(desk: Callable[..., Desk]) -> None:
    """The service never hands out a person with an open callback except through it, so an
    assignment and an open callback of the same person meet only when the callback was made
    another way (here: written into the table, as a booking of another process would be). The
    completion's booking then replaces it, and the database keeps one open per person."""
    d = desk(users=2)
    got = d.next_user("ann")
    assert got.json()["user_id"] == 100
    with d.store.begin() as conn:
        old_id = conn.execute(
            text(
                "INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id)"
                " VALUES (100, 'unsigned_users', now() + interval '3 hours', :bob) RETURNING id"
            ),
            {"bob": d.ids["bob"]},
        ).scalar_one()
    again = d.callback_at(60)
    done = d.complete("ann", got.json()["assignment_id"], "call_back", callback_at=again)
    assert done.status_code == 200, done.text
    new_id = done.json()["callback"]["id"]

    old = d.callback(str(old_id))
    assert (old.status, old.cancel_reason) == ("cancelled", "rebooked")
    assert old.finished_at is not None and old.assignment_id is None
    assert old.owner_agent_id == d.ids["bob"]
    new = d.callback(new_id)
    assert (new.status, new.owner_agent_id, new.due_at) == ("scheduled", d.ids["ann"], ts(again))
    assert [c.id for c in open_callbacks(d, 100)] == [new.id]


# -- the person moving or going -----------------------------------------------------------------


def test_a_callback_follows_the_person_the_replica_moved_at_claim_time(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, before = booked_and_due(d)
    # The replica now places user 100 in outstanding_requests; the score row does not know yet.
    d.replica.requirement(d.replica.claim(100))
    with d.replica.engine.begin() as conn:
        conn.execute(text("UPDATE users SET current_signature_file_id = 7 WHERE id = 100"))

    got = d.next_user("ann", UNSIGNED)
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    row = d.callback(callback_id)
    assert (row.status, row.queue_type, row.due_at) == ("scheduled", OUTSTANDING, before.due_at)
    assert row.assignment_id is None and row.finished_at is None and row.cancel_reason is None
    assert score(d, 100).current_queue_type == OUTSTANDING
    moved = one(
        d,
        "SELECT from_queue_type, to_queue_type, source, agent_id FROM queue_transitions"
        " WHERE user_id = 100",
    )
    assert tuple(moved) == (UNSIGNED, OUTSTANDING, "claim", d.ids["ann"])
    d.complete("ann", got.json()["assignment_id"], "no_answer")
    served = serve(d, "ann", callback_id, OUTSTANDING)
    assert served["queue_type"] == OUTSTANDING


def test_a_callback_of_a_person_who_belongs_nowhere_is_cancelled(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, _ = booked_and_due(d)
    with d.replica.engine.begin() as conn:
        conn.execute(text("UPDATE users SET is_enabled = false WHERE id = 100"))
    got = d.next_user("ann")
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    row = d.callback(callback_id)
    assert (row.status, row.cancel_reason) == ("cancelled", "no_queue")
    assert row.finished_at is not None and row.assignment_id is None
    assert score(d, 100).current_queue_type is None
    assert rows(d, "SELECT 1 FROM assignments WHERE user_id = 100 AND source = 'callback'") == []


def test_do_not_contact_on_the_callback_call_completes_it_and_deactivates(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, _ = booked_and_due(d)
    served = serve(d, "ann", callback_id)
    done = d.complete("ann", served["assignment_id"], "do_not_contact")
    assert done.status_code == 200, done.text
    assert done.json()["callback"] is None
    row = d.callback(callback_id)
    # The promised call was made: the callback is kept (completed), and nothing stays open.
    assert (row.status, row.cancel_reason) == ("completed", None)
    assert str(row.assignment_id) == served["assignment_id"]
    s = score(d, 100)
    assert (s.is_active, s.next_call_after, s.last_outcome) == (False, None, "do_not_contact")
    assert open_callbacks(d, 100) == []


def test_a_late_do_not_contact_cancels_the_callback_someone_else_now_serves(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=4, agents=("ann", "bob", "cy"))
    callback_id, _ = booked_and_due(d, minutes_ago=31)
    first = serve(d, "ann", callback_id)
    lapse(d.store, first["assignment_id"])
    taken = serve(d, "cy", callback_id)  # cy's claim sweeps ann's lapsed hand-out first

    late = d.complete("ann", first["assignment_id"], "do_not_contact")
    assert late.status_code == 409, late.text  # cy has had the person since
    row = d.callback(callback_id)
    assert (row.status, row.cancel_reason) == ("cancelled", "do_not_contact")
    assert row.finished_at is not None
    assert str(row.assignment_id) == taken["assignment_id"]
    s = score(d, 100)
    assert (s.is_active, s.last_outcome) == (False, "do_not_contact")
    # cy's call ends normally; the cancelled callback stays cancelled, the person inactive.
    done = d.complete("cy", taken["assignment_id"], "no_answer")
    assert done.status_code == 200, done.text
    assert d.callback(callback_id).status == "cancelled"
    assert score(d, 100).is_active is False


def test_a_person_deactivated_on_the_score_row_has_the_callback_cancelled_at_claim(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, before = booked_and_due(d)
    with d.store.begin() as conn:
        conn.execute(text("UPDATE user_call_scores SET is_active = false WHERE user_id = 100"))
    got = d.next_user("ann")
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    row = d.callback(callback_id)
    assert (row.status, row.cancel_reason) == ("cancelled", "inactive")
    assert row.due_at == before.due_at and row.owner_agent_id == d.ids["ann"]
    assert row.assignment_id is None and row.first_handed_out_at is None
    assert row.finished_at is not None
    mark = one(
        d,
        "SELECT source, entry_id, reason, agent_id FROM entry_invalidations WHERE user_id = 100",
    )
    assert tuple(mark) == ("callback", None, "inactive", d.ids["ann"])
    assert rows(d, "SELECT 1 FROM assignments WHERE user_id = 100 AND source = 'callback'") == []


# -- supervisors --------------------------------------------------------------------------------


def changes(d: Desk, callback_id: str) -> list[Any]:
    return rows(
        d,
        "SELECT action, agent_id, old_owner_agent_id, new_owner_agent_id, reason, changed_at"
        " FROM callback_changes WHERE callback_id = :id ORDER BY id",
        id=callback_id,
    )


def cancel(d: Desk, callback_id: str, who: str = "boss", **body: Any) -> Any:
    return d.client.post(
        f"/api/admin/callbacks/{callback_id}/cancel",
        headers=d.agents[who],
        json=body or None,
    )


def reassign(d: Desk, callback_id: str, who: str = "boss", **body: Any) -> Any:
    return d.client.post(
        f"/api/admin/callbacks/{callback_id}/reassign", headers=d.agents[who], json=body
    )


UNKNOWN = "00000000-0000-4000-8000-000000000000"


def test_a_supervisor_cancels_a_scheduled_callback_audited(desk: Callable[..., Desk]) -> None:
    d = desk(users=3)
    callback_id = d.book("ann")["callback"]["id"]
    before = d.callback(callback_id)

    answer = cancel(d, callback_id, reason="asked by email not to be rung back")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    row = d.callback(callback_id)
    assert (body["id"], body["status"], body["cancel_reason"]) == (
        callback_id,
        "cancelled",
        "supervisor",
    )
    assert body["agent_id"] == d.ids["ann"] and body["user_id"] == 100
    assert ts(body["finished_at"]) == row.finished_at
    assert ts(body["due_at"]) == before.due_at
    assert (row.status, row.cancel_reason, row.owner_agent_id) == (
        "cancelled",
        "supervisor",
        d.ids["ann"],
    )
    assert row.assignment_id is None and row.first_handed_out_at is None
    [audit] = changes(d, callback_id)
    assert tuple(audit)[:5] == (
        "cancel",
        d.ids["boss"],
        d.ids["ann"],
        None,
        "asked by email not to be rung back",
    )
    # Cancelled, it is never served, even once due.
    d.due(callback_id)
    got = d.next_user("ann")
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101

    assert cancel(d, callback_id).status_code == 409
    assert reassign(d, callback_id, agent_id=d.ids["bob"]).status_code == 409
    assert len(changes(d, callback_id)) == 1  # refusals are not audited


def test_cancelling_a_callback_being_served_leaves_the_call_with_its_agent(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=3)
    callback_id, _ = booked_and_due(d)
    served = serve(d, "ann", callback_id)
    answer = cancel(d, callback_id)  # no body: no reason in the audit
    assert answer.status_code == 200, answer.text
    assert changes(d, callback_id)[0].reason is None
    assert assignment(d, served["assignment_id"]).status == "active"
    done = d.complete("ann", served["assignment_id"], "no_answer")
    assert done.status_code == 200, done.text
    row = d.callback(callback_id)
    assert (row.status, row.cancel_reason) == ("cancelled", "supervisor")


def test_a_supervisor_reassigns_a_callback_audited(desk: Callable[..., Desk]) -> None:
    d = desk(users=4, agents=("ann", "bob", "cy"))
    callback_id = d.book("ann")["callback"]["id"]

    answer = reassign(d, callback_id, agent_id=d.ids["bob"], reason="ann is on leave")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["id"], body["agent_id"], body["status"]) == (
        callback_id,
        d.ids["bob"],
        "scheduled",
    )
    row = d.callback(callback_id)
    assert (row.owner_agent_id, row.status, row.cancel_reason, row.finished_at) == (
        d.ids["bob"],
        "scheduled",
        None,
        None,
    )
    [audit] = changes(d, callback_id)
    assert tuple(audit)[:5] == (
        "reassign",
        d.ids["boss"],
        d.ids["ann"],
        d.ids["bob"],
        "ann is on leave",
    )
    mine = d.client.get("/api/callbacks/mine", headers=d.agents["bob"]).json()["items"]
    assert [c["id"] for c in mine] == [callback_id]
    assert d.client.get("/api/callbacks/mine", headers=d.agents["ann"]).json()["items"] == []

    # Due within the personal window: bob's now, not ann's.
    d.due(callback_id)
    got = d.next_user("ann")
    assert got.json()["source"] == "queue"
    serve(d, "bob", callback_id)

    # Reassigning again records the chain of owners.
    assert reassign(d, callback_id, agent_id=d.ids["cy"]).status_code == 200
    second = changes(d, callback_id)[1]
    assert tuple(second)[:5] == ("reassign", d.ids["boss"], d.ids["bob"], d.ids["cy"], None)


def test_reassign_and_cancel_refusals(desk: Callable[..., Desk]) -> None:
    d = desk(users=3)
    callback_id = d.book("ann")["callback"]["id"]
    scorer = new_agent(d.store, "feeder", "scorer")
    gone = new_agent(d.store, "gone")
    with d.store.begin() as conn:
        conn.execute(text("UPDATE agents SET is_active = false WHERE id = :a"), {"a": gone.id})

    for target in (987654, gone.id, scorer.id):
        answer = reassign(d, callback_id, agent_id=target)
        assert answer.status_code == 422, (target, answer.text)
        assert answer.json()["error"] == "ValidationError"
    assert reassign(d, callback_id).status_code == 422  # no agent_id
    assert reassign(d, callback_id, agent_id="2").status_code == 422  # not an integer

    assert reassign(d, UNKNOWN, agent_id=d.ids["bob"]).status_code == 404
    assert cancel(d, UNKNOWN).status_code == 404
    assert cancel(d, "not-a-uuid").status_code == 422

    # Agents (and the scorer) may do neither.
    assert cancel(d, callback_id, who="ann").status_code == 403
    assert reassign(d, callback_id, who="bob", agent_id=d.ids["bob"]).status_code == 403
    d.agents["feeder"] = scorer.auth
    assert cancel(d, callback_id, who="feeder").status_code == 403

    assert changes(d, callback_id) == []
    row = d.callback(callback_id)
    assert (row.status, row.owner_agent_id) == ("scheduled", d.ids["ann"])

    # Completed: 409 for both.
    d.due(callback_id)
    served = serve(d, "ann", callback_id)
    d.complete("ann", served["assignment_id"], "no_answer")
    assert cancel(d, callback_id).status_code == 409
    assert reassign(d, callback_id, agent_id=d.ids["bob"]).status_code == 409
    assert changes(d, callback_id) == []


# -- what agents and supervisors see ------------------------------------------------------------


def test_mine_lists_only_the_agents_open_callbacks_without_contact_details(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=5)
    first = d.book("ann", minutes=90)["callback"]["id"]  # user 100
    second = d.book("ann", minutes=30)["callback"]["id"]  # user 101, sooner
    d.book("bob")  # user 102: bob's
    done = d.book("ann")["callback"]["id"]  # user 103: to be completed
    d.due(done)
    served = serve(d, "ann", done)
    d.complete("ann", served["assignment_id"], "no_answer")
    d.due(first)
    serve(d, "ann", first)  # being served: still open, 'assigned'

    answer = d.client.get("/api/callbacks/mine", headers=d.agents["ann"])
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    # Soonest due first: first was made due (now), second is in 30 minutes.
    assert [(c["id"], c["user_id"], c["status"]) for c in items] == [
        (first, 100, "assigned"),
        (second, 101, "scheduled"),
    ]
    for item in items:
        assert {"id", "user_id", "queue_type", "due_at", "status"} <= set(item)
        assert item["queue_type"] == UNSIGNED and item["agent_id"] == d.ids["ann"]
        assert ts(item["due_at"]) == d.callback(item["id"]).due_at
        assert not {"phone_number", "email_address", "first_name", "last_name", "user"} & set(item)
    raw = answer.text
    for uid in (100, 101):
        assert own_phone(uid) not in raw and f"User{uid}" not in raw and "@" not in raw
    bobs = d.client.get("/api/callbacks/mine", headers=d.agents["bob"]).json()["items"]
    assert [c["user_id"] for c in bobs] == [102]
    assert d.client.get("/api/callbacks/mine").status_code == 401


def test_the_supervisors_listing_filters(desk: Callable[..., Desk]) -> None:
    d = desk(users=6)
    a1 = d.book("ann", minutes=60)["callback"]["id"]  # user 100
    a2 = d.book("ann", minutes=180)["callback"]["id"]  # user 101
    b1 = d.book("bob", minutes=120)["callback"]["id"]  # user 102
    b2 = d.book("bob", minutes=240)["callback"]["id"]  # user 103
    d.due(a1)
    served = serve(d, "ann", a1)  # a1: assigned, then completed
    d.complete("ann", served["assignment_id"], "no_answer")
    assert cancel(d, b2).status_code == 200  # b2: cancelled
    d.due(b1)
    serve(d, "bob", b1)  # b1: assigned

    def listing(**params: Any) -> tuple[list[str], int]:
        answer = d.client.get("/api/callbacks", headers=d.agents["boss"], params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        for item in body["items"]:
            assert "phone_number" not in item and "user" not in item
        return [c["id"] for c in body["items"]], body["total"]

    assert listing() == ([b1, a2], 2)  # the open ones, soonest due first
    assert listing(status="scheduled") == ([a2], 1)
    assert listing(status="assigned") == ([b1], 1)
    assert listing(status="completed") == ([a1], 1)
    assert listing(status="cancelled") == ([b2], 1)
    assert listing(agent_id=d.ids["ann"]) == ([a2], 1)
    assert listing(agent_id=d.ids["bob"], status="cancelled") == ([b2], 1)
    assert listing(agent_id=d.ids["boss"]) == ([], 0)
    in_two_hours = d.callback_at(120)
    assert listing(due_before=in_two_hours) == ([b1], 1)  # a2 is due in three hours
    assert listing(due_before=in_two_hours, status="completed") == ([a1], 1)
    assert listing(limit=1) == ([b1], 2)
    assert listing(limit=1, offset=1) == ([a2], 2)

    assert d.client.get("/api/callbacks", headers=d.agents["ann"]).status_code == 403
    bad = d.client.get("/api/callbacks", headers=d.agents["boss"], params={"status": "open"})
    assert bad.status_code == 422
    bad = d.client.get("/api/callbacks", headers=d.agents["boss"], params={"due_before": "soon"})
    assert bad.status_code == 422
