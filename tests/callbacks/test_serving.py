"""Which callback comes first, and that a callback is the only way back (SPEC 7.2)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text

from tests.callbacks.conftest import OUTSTANDING, UNSIGNED, Desk


def test_a_booked_callback_waits_and_then_comes_before_the_queue(desk: Callable[..., Desk]) -> None:
    d = desk(users=4)
    done = d.book("ann")  # user 100
    booked = done["callback"]
    row = d.callback(booked["id"])
    assert (row.user_id, row.queue_type, row.status, row.owner_agent_id) == (
        100,
        UNSIGNED,
        "scheduled",
        d.ids["ann"],
    )
    assert done["score"]["next_call_after"] == booked["due_at"]

    # Not yet due: the queue goes on without user 100, and a refresh leaves them out too.
    d.populate()
    got = d.next_user("ann")
    assert got.json()["user_id"] == 101 and got.json()["source"] == "queue"
    assert d.complete("ann", got.json()["assignment_id"], "no_answer").status_code == 200

    d.due(booked["id"])
    got = d.next_user("ann")
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["source"], body["user_id"], body["callback_id"]) == ("callback", 100, booked["id"])
    assert body["queue_entry_id"] is None
    assert body["callback_due_at"] is not None
    assert body["user"]["phone_number"]  # the contact details, as for any hand-out
    assert d.callback(booked["id"]).status == "assigned"


def test_own_callbacks_first_then_anyones_after_the_personal_window(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=6, agents=("ann", "bob", "cy"))
    mine = d.book("ann")["callback"]["id"]  # user 100, ann's
    bobs = d.book("bob")["callback"]["id"]  # user 101, bob's
    d.due(mine, minutes_ago=1)
    d.due(bobs, minutes_ago=5)  # older, but within bob's personal window (30 min)

    # cy is nobody's owner: bob's is still personal, so cy gets the queue.
    got = d.next_user("cy")
    assert got.json()["source"] == "queue", got.json()
    d.complete("cy", got.json()["assignment_id"], "no_answer")

    # ann's own comes first for ann, though bob's is older.
    got = d.next_user("ann")
    assert (got.json()["source"], got.json()["callback_id"]) == ("callback", mine)
    d.complete("ann", got.json()["assignment_id"], "no_answer")

    # Past bob's personal window, anyone may take it, before any queue entry.
    d.due(bobs, minutes_ago=31)
    got = d.next_user("cy")
    assert (got.json()["source"], got.json()["callback_id"]) == ("callback", bobs)


def test_a_not_yet_due_callback_is_never_served(desk: Callable[..., Desk]) -> None:
    d = desk(users=1)
    booked = d.book("ann", minutes=10)["callback"]["id"]
    # The only person left has a callback in ten minutes: nobody is served, in any mode.
    assert d.next_user("ann").status_code == 204
    assert d.next_user("bob").status_code == 204
    flags = d.client.put(
        "/api/admin/flags", headers=d.agents["boss"], json={"MIGRATION_MODE": "legacy-only"}
    )
    assert flags.status_code == 200
    with d.store.begin() as conn:  # even if next_call_after were to say otherwise
        conn.execute(text("UPDATE user_call_scores SET next_call_after = NULL"))
    assert d.next_user("bob").status_code == 204
    assert d.callback(booked).status == "scheduled"


def test_a_deactivated_owners_callback_goes_to_anyone_at_once(desk: Callable[..., Desk]) -> None:
    d = desk(users=3)
    booked = d.book("ann")["callback"]["id"]
    d.due(booked, minutes_ago=1)
    with d.store.begin() as conn:
        conn.execute(text("UPDATE agents SET is_active = false WHERE id = :a"), {"a": d.ids["ann"]})
    got = d.next_user("bob")
    assert (got.json()["source"], got.json()["callback_id"]) == ("callback", booked)


def test_callbacks_are_served_in_direct_mode_too(desk: Callable[..., Desk]) -> None:
    d = desk(users=3)
    booked = d.book("ann")["callback"]["id"]
    d.due(booked)
    flags = d.client.put(
        "/api/admin/flags", headers=d.agents["boss"], json={"MIGRATION_MODE": "legacy-only"}
    )
    assert flags.status_code == 200
    got = d.next_user("ann")
    assert (got.json()["source"], got.json()["callback_id"]) == ("callback", booked)


def test_a_person_who_moved_queue_is_served_from_their_queue_now(
    desk: Callable[..., Desk],
) -> None:
    d = desk(users=2)
    booked = d.book("ann")["callback"]["id"]  # user 100, unsigned
    d.due(booked)
    # The person signed, and now owes documents: the replica and the score row say so.
    d.replica.requirement(d.replica.claim(100))
    with d.replica.engine.begin() as conn:
        conn.execute(text("UPDATE users SET current_signature_file_id = 7 WHERE id = 100"))
    with d.store.begin() as conn:
        conn.execute(
            text("UPDATE user_call_scores SET current_queue_type = :q WHERE user_id = 100"),
            {"q": OUTSTANDING},
        )
    got = d.next_user("ann", UNSIGNED)
    assert got.json()["source"] == "queue" and got.json()["user_id"] == 101
    d.complete("ann", got.json()["assignment_id"], "no_answer")
    assert d.callback(booked).queue_type == OUTSTANDING
    got = d.next_user("ann", OUTSTANDING)
    assert got.status_code == 200, got.text
    assert (got.json()["source"], got.json()["callback_id"]) == ("callback", booked)


def test_a_deactivated_person_has_the_callback_cancelled(desk: Callable[..., Desk]) -> None:
    d = desk(users=2)
    booked = d.book("ann")["callback"]["id"]
    d.due(booked)
    with d.store.begin() as conn:
        conn.execute(text("UPDATE user_call_scores SET is_active = false WHERE user_id = 100"))
    got = d.next_user("ann")
    assert got.json()["user_id"] == 101
    row = d.callback(booked)
    assert (row.status, row.cancel_reason) == ("cancelled", "inactive")
