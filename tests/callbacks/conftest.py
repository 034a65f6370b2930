"""Callbacks through the API (SPEC 7.2), on the tests' PostgreSQL and replica.

Time passes on the database's clock only: a test makes a callback due (or overdue) by moving its
``due_at`` (and the score row's ``next_call_after``, which the booking set to the same moment)
into the past, as the clock would have."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.factories import Replica, add_scores, new_agent

UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"


@dataclass
class Desk:
    """A client, a store, and named agents' headers."""

    client: TestClient
    store: Engine
    replica: Replica
    agents: dict[str, dict[str, str]]
    ids: dict[str, int]

    def next_user(self, name: str, queue: str = UNSIGNED) -> Any:
        return self.client.post(f"/api/queues/{queue}/next-user", headers=self.agents[name])

    def complete(self, name: str, assignment_id: str, outcome: str, **body: Any) -> Any:
        return self.client.post(
            f"/api/assignments/{assignment_id}/complete",
            headers=self.agents[name],
            json={"outcome": outcome, **body},
        )

    def callback_at(self, minutes: int = 60) -> str:
        with self.store.connect() as conn:
            value = conn.execute(
                text("SELECT now() + make_interval(mins => :m)"), {"m": minutes}
            ).scalar_one()
        return str(value.isoformat())

    def book(self, name: str, queue: str = UNSIGNED, minutes: int = 60) -> dict[str, Any]:
        """The agent takes the next user and books a callback for them; returns the completion."""
        got = self.next_user(name, queue)
        assert got.status_code == 200, got.text
        done = self.complete(
            name, got.json()["assignment_id"], "call_back", callback_at=self.callback_at(minutes)
        )
        assert done.status_code == 200, done.text
        assert done.json()["callback"] is not None, done.json()
        return dict(done.json())

    def due(self, callback_id: str, minutes_ago: float = 1) -> None:
        """Make the callback due ``minutes_ago`` minutes ago, as the clock would have."""
        with self.store.begin() as conn:
            conn.execute(
                text(
                    "UPDATE callbacks SET due_at = now() - make_interval(secs => :s) WHERE id = :id"
                ),
                {"s": minutes_ago * 60, "id": callback_id},
            )
            conn.execute(
                text(
                    "UPDATE user_call_scores s SET next_call_after = c.due_at"
                    " FROM callbacks c WHERE c.id = :id AND s.user_id = c.user_id"
                ),
                {"id": callback_id},
            )

    def callback(self, callback_id: str) -> Any:
        with self.store.connect() as conn:
            return conn.execute(
                text("SELECT * FROM callbacks WHERE id = :id"), {"id": callback_id}
            ).one()

    def populate(self) -> None:
        answer = self.client.post("/api/admin/populate", headers=self.agents["boss"])
        assert answer.status_code == 200, answer.text


@pytest.fixture
def desk(
    make_client: Callable[..., TestClient], store_engine: Engine, replica_engine: Engine
) -> Callable[..., Desk]:
    def make(
        users: int = 4,
        agents: tuple[str, ...] = ("ann", "bob"),
        outstanding: int = 0,
        **settings: Any,
    ) -> Desk:
        client = make_client(**settings)
        replica = Replica(replica_engine)
        rows = []
        for i in range(users):
            replica.unsigned(100 + i)
            rows.append({"user_id": 100 + i, "current_queue_type": UNSIGNED, "current_score": i})
        for i in range(outstanding):
            replica.outstanding(200 + i)
            rows.append({"user_id": 200 + i, "current_queue_type": OUTSTANDING, "current_score": i})
        add_scores(store_engine, rows)
        heads: dict[str, dict[str, str]] = {}
        ids: dict[str, int] = {}
        for name in agents:
            made = new_agent(store_engine, name)
            heads[name], ids[name] = made.auth, made.id
        boss = new_agent(store_engine, "boss", "supervisor")
        heads["boss"], ids["boss"] = boss.auth, boss.id
        desk = Desk(client, store_engine, replica, heads, ids)
        desk.populate()
        return desk

    return make
