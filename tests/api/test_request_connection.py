"""A request never holds a pooled connection while it waits for another.

Authentication reads the agent on a pooled connection; a route that then opens its own connection
must not still hold the first, or a few concurrent requests starve the pool (each holds one and
waits for a second) until the pool's timeout. With a pool of one connection this is visible in a
single request: it would wait the pool's timeout and answer 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from tests.api.test_agents_api import book, claim
from tests.factories import Replica, lapse, new_agent


def test_every_dashboard_route_works_on_a_pool_of_one_connection(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    client = make_client(db_pool_size=1, db_max_overflow=0)
    agent = new_agent(store_engine, "pool-of-one")
    boss = new_agent(store_engine, "pool-of-one-boss", "supervisor")
    # Routes that authenticate on the request's connection and then open their own.
    for method, path, who in [
        ("GET", "/api/queues/stats", agent),
        ("GET", "/api/assignments", boss),
        ("GET", "/api/admin/calling-rules", boss),
        ("POST", "/api/queues/unsigned_users/next-user", agent),
        ("GET", "/api/admin/flags", boss),
        ("GET", "/api/population-runs", boss),
    ]:
        answer = client.request(method, path, headers=who.auth)
        assert answer.status_code in (200, 204), (path, answer.status_code, answer.text)


def test_next_user_and_complete_take_one_store_connection_each(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    """The two hottest routes authenticate on the connection their step then uses
    (``Dashboard.run``): one store checkout per request, on the request's worker thread."""
    book(client, store_engine, replica, cron_headers, unsigned=(1,))
    agent = new_agent(store_engine, "one-checkout")
    pool = client.app.state.services.engine.pool  # type: ignore[attr-defined]
    checkouts: list[str] = []

    def on_checkout(*_: Any) -> None:
        checkouts.append(threading.current_thread().name)

    event.listen(pool, "checkout", on_checkout)
    try:
        held = claim(client, agent)
        on_claim = list(checkouts)
        checkouts.clear()
        done = client.post(
            f"/api/assignments/{held['assignment_id']}/complete",
            json={"outcome": "no_answer"},
            headers=agent.auth,
        )
        assert done.status_code == 200, done.text
        on_complete = list(checkouts)
    finally:
        event.remove(pool, "checkout", on_checkout)
    for taken in (on_claim, on_complete):
        assert [name.startswith("requests") for name in taken] == [True], taken


def test_completing_the_held_assignment_reads_its_head_with_the_agent(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    """complete's authentication brings the head of the assignment the agent holds (``Holding``),
    so completing it takes two store statements: the authentication and ``cq_complete``. An
    assignment the agent no longer holds (here: one a sweep expired) is looked up, and its late
    outcome still counts."""
    book(client, store_engine, replica, cron_headers, unsigned=(1, 2))
    agent = new_agent(store_engine, "head-with-agent")
    engine = client.app.state.services.engine  # type: ignore[attr-defined]
    statements: list[str] = []

    def on_statement(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if threading.current_thread().name.startswith("requests"):
            statements.append(sql)

    def complete(assignment_id: str) -> list[str]:
        statements.clear()
        event.listen(engine, "before_cursor_execute", on_statement)
        try:
            done = client.post(
                f"/api/assignments/{assignment_id}/complete",
                json={"outcome": "no_answer"},
                headers=agent.auth,
            )
        finally:
            event.remove(engine, "before_cursor_execute", on_statement)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "completed"
        return statements

    held = claim(client, agent)
    first = complete(held["assignment_id"])
    assert len(first) == 2, first
    assert "JOIN agents ag" in first[0] and "LEFT JOIN LATERAL" in first[0], first
    assert first[1].startswith("SELECT * FROM cq_complete("), first

    lapsed = claim(client, agent)
    lapse(store_engine, lapsed["assignment_id"])
    with store_engine.begin() as conn:
        assert conn.execute(text("SELECT cq_sweep(10)")).scalar_one() == {"unsigned_users": 1}
    late = complete(lapsed["assignment_id"])
    assert len(late) == 3, late
    assert "LEFT JOIN LATERAL" in late[0], late
    assert late[1].startswith("SELECT agent_id, user_id, queue_type"), late
    assert late[2].startswith("SELECT * FROM cq_complete("), late


def test_a_late_outcome_while_holding_another_assignment_lands_on_its_own_user(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    """The head that comes with the authentication is the held assignment's: completing another
    one (here the agent's earlier assignment, which a sweep expired) must use that one's head, or
    the outcome would land on the person the agent is calling now."""
    book(client, store_engine, replica, cron_headers, unsigned=(1, 2))
    agent = new_agent(store_engine, "late-while-holding")
    earlier = claim(client, agent)
    lapse(store_engine, earlier["assignment_id"])
    with store_engine.begin() as conn:
        assert conn.execute(text("SELECT cq_sweep(10)")).scalar_one() == {"unsigned_users": 1}
        # The earlier person is not due again yet: the next claim passes them by, so nobody has
        # had them since and their late outcome still counts.
        conn.execute(
            text(
                "UPDATE user_call_scores SET next_call_after = now() + interval '1 hour'"
                " WHERE user_id = :u"
            ),
            {"u": earlier["user_id"]},
        )
    now = claim(client, agent)
    assert now["user_id"] != earlier["user_id"]

    done = client.post(
        f"/api/assignments/{earlier['assignment_id']}/complete",
        json={"outcome": "no_answer"},
        headers=agent.auth,
    )
    assert done.status_code == 200, done.text
    assert done.json()["user_id"] == earlier["user_id"]
    with store_engine.connect() as conn:
        rows = {
            str(r.id): (r.status, r.outcome)
            for r in conn.execute(
                text("SELECT id, status, outcome FROM assignments WHERE agent_id = :a"),
                {"a": agent.id},
            )
        }
        attempts = dict(
            conn.execute(
                text("SELECT user_id, total_attempts FROM user_call_scores WHERE user_id IN (1, 2)")
            ).all()
        )
        # The entry of the person being called now is still theirs.
        held_entry = conn.execute(
            text("SELECT status FROM unsigned_users_queue WHERE id = :id"),
            {"id": now["queue_entry_id"]},
        ).scalar_one()
    assert rows == {
        earlier["assignment_id"]: ("completed", "no_answer"),
        now["assignment_id"]: ("active", None),
    }
    assert attempts[earlier["user_id"]] == 1 and attempts[now["user_id"]] == 0
    assert held_entry == "assigned"
    current = client.get("/api/assignments/current", headers=agent.auth)
    assert current.status_code == 200 and current.json()["assignment_id"] == now["assignment_id"]
