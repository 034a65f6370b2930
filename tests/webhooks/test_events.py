"""Every event type arrives at a real receiver, signed (verified with ``standardwebhooks``), with
the fields SPEC 8.4 lists and nothing personal; an event exists iff its change committed."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from standardwebhooks import Webhook

from app.webhooks.delivery import EVENT_TYPES, Deliverer
from tests.callbacks.conftest import UNSIGNED, Desk
from tests.factories import Agent, Replica, add_scores, lapse, new_agent
from tests.webhooks.receiver import Receiver

NOTES = "Mr Jones, 07700 900123, asked us to ring after six"
ASSIGNMENT_FIELDS = {"assignment_id", "user_id", "agent_id", "queue_type", "source"}


def desk(client: TestClient, store: Engine, replica: Replica, users: int) -> Desk:
    rows = []
    for i in range(users):
        replica.unsigned(100 + i)
        rows.append({"user_id": 100 + i, "current_queue_type": UNSIGNED, "current_score": i})
    add_scores(store, rows)
    heads, ids = {}, {}
    for name, role in (("ann", "agent"), ("bob", "agent"), ("boss", "supervisor")):
        made = new_agent(store, name, role)
        heads[name], ids[name] = made.auth, made.id
    return Desk(client, store, replica, heads, ids)


def received(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every body the receiver got, each verified against the endpoint's secret."""
    hook = Webhook(secret)
    out = []
    for r in receiver.received:
        hook.verify(r.body, r.headers)  # raises on a bad signature or timestamp
        body = json.loads(r.body)
        assert r.headers["webhook-id"], r.headers
        out.append({**body, "_id": r.headers["webhook-id"]})
    return out


def test_every_event_type_arrives_signed_with_its_fields(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    admin: Agent,
    endpoint: dict[str, Any],
    receiver: Receiver,
    deliverer: Deliverer,
    cron_headers: dict[str, str],
) -> None:
    d = desk(client, store_engine, replica, users=6)
    d.populate()  # population.finished
    # ann: a call that books a callback (assignment.started, .completed, callback.booked)
    first = d.next_user("ann").json()
    booked = d.complete(
        "ann", first["assignment_id"], "call_back", callback_at=d.callback_at(60), notes=NOTES
    ).json()
    # bob: a call given back (assignment.released)
    second = d.next_user("bob").json()
    r = client.post(
        f"/api/assignments/{second['assignment_id']}/release",
        json={"requeue": True},
        headers=d.agents["bob"],
    )
    assert r.status_code == 200, r.text
    # ann: a call whose lease lapses, swept by bob's next request (assignment.expired)
    third = d.next_user("ann").json()
    lapse(store_engine, third["assignment_id"])
    fourth = d.next_user("bob").json()
    # bob: the person asks not to be called (assignment.completed, user.suppressed)
    r = d.complete("bob", fourth["assignment_id"], "do_not_contact", notes=NOTES)
    assert r.status_code == 200, r.text
    # the booked callback cancelled by a supervisor (callback.cancelled)
    r = client.post(
        f"/api/admin/callbacks/{booked['callback']['id']}/cancel",
        json={"reason": NOTES},
        headers=d.agents["boss"],
    )
    assert r.status_code == 200, r.text
    # another callback, an hour overdue (callback.overdue)
    late = d.book("ann", minutes=60)
    d.due(late["callback"]["id"], minutes_ago=60)
    assert deliverer.report_overdue() == 1
    assert deliverer.report_overdue() == 0  # once per due time
    # an erasure (user.erased) and a discovery run (discovery.finished)
    r = client.post(f"/api/admin/users/{first['user_id']}/erase", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert client.get("/api/cron/discover", headers=cron_headers).status_code == 200

    deliverer.drain()
    events = received(receiver, endpoint["secret"])
    types = {e["type"] for e in events}
    assert types == set(EVENT_TYPES), set(EVENT_TYPES) - types
    # Each body: the four members; one per event id; the endpoint's sequence 1..N.
    for e in events:
        assert set(e) - {"_id"} == {"type", "timestamp", "seq", "data"}, e
        assert "+" in e["timestamp"] or e["timestamp"].endswith("Z"), e["timestamp"]
    assert len({e["_id"] for e in events}) == len(events)
    assert sorted(e["seq"] for e in events) == list(range(1, len(events) + 1))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(events, key=lambda e: e["seq"]):
        by_type.setdefault(e["type"], []).append(e["data"])
    for kind in ("assignment.started", "assignment.released", "assignment.expired"):
        for data in by_type[kind]:
            assert set(data) >= ASSIGNMENT_FIELDS, (kind, data)
    completed = {x["assignment_id"]: x for x in by_type["assignment.completed"]}
    assert completed[first["assignment_id"]]["outcome"] == "call_back"
    assert completed[first["assignment_id"]]["callback_at"] is not None
    assert completed[fourth["assignment_id"]]["outcome"] == "do_not_contact"
    assert ASSIGNMENT_FIELDS | {"outcome", "callback_at"} <= set(completed[first["assignment_id"]])
    assert [x["assignment_id"] for x in by_type["assignment.expired"]] == [third["assignment_id"]]
    assert by_type["user.suppressed"][0]["user_id"] == fourth["user_id"]
    assert by_type["user.erased"] == [
        {"user_id": first["user_id"], "erased_at": by_type["user.erased"][0]["erased_at"]}
    ]
    assert by_type["callback.overdue"][0]["callback_id"] == late["callback"]["id"]
    assert by_type["population.finished"][0]["status"] == "succeeded"
    assert by_type["discovery.finished"][0]["status"] == "succeeded"
    # Thin payloads: nothing of the notes, the reason, the number or a name.
    everything = json.dumps(events)
    for personal in (NOTES, "07700", "Jones", "ann", "bob"):
        assert personal not in everything


def test_an_event_exists_only_if_its_change_committed(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    endpoint: dict[str, Any],
) -> None:
    d = desk(client, store_engine, replica, users=2)
    d.populate()
    got = d.next_user("ann").json()

    def events() -> list[str]:
        with store_engine.connect() as conn:
            return list(
                conn.execute(text("SELECT type FROM webhook_events ORDER BY position")).scalars()
            )

    before = events()
    assert before[-1] == "assignment.started"
    # The same completion cq_complete makes, rolled back: no event.
    with store_engine.connect() as conn:
        conn.execute(
            text(
                "UPDATE assignments SET status = 'completed', outcome = 'no_answer',"
                " finished_at = now() WHERE id = :id"
            ),
            {"id": got["assignment_id"]},
        )
        conn.rollback()
    assert events() == before
    # Completed for real: the event.
    assert d.complete("ann", got["assignment_id"], "no_answer").status_code == 200
    assert events() == [*before, "assignment.completed"]


def test_nothing_is_written_without_a_subscriber(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    r = client.post(
        "/api/admin/webhooks",
        json={"url": receiver.url, "event_types": ["user.erased"]},
        headers=admin.auth,
    )
    assert r.status_code == 201
    d = desk(client, store_engine, replica, users=1)
    d.populate()
    late = d.book("ann", minutes=60)
    d.due(late["callback"]["id"], minutes_ago=60)
    # Nobody asked for callback.overdue: nothing is looked for, no callback row is touched.
    assert deliverer.report_overdue() == 0
    assert d.callback(late["callback"]["id"]).overdue_reported_for is None
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM webhook_events")).scalar_one() == 0
