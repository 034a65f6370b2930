"""The webhook tests' receiver, an admin, and a sender on a clock the test moves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.webhooks.delivery import EVENT_TYPES, Deliverer
from tests.factories import Agent, new_agent
from tests.webhooks.receiver import Receiver

WEBHOOKS = "/api/admin/webhooks"


@dataclass
class Clock:
    """The real time, moved on by the test (the schedule's hours pass in a moment)."""

    ahead: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def advance(self, by: timedelta) -> None:
        self.ahead += by


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as r:
        yield r


@pytest.fixture
def admin(store_engine: Engine) -> Agent:
    return new_agent(store_engine, "integrations", "admin")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_deliverer(store_engine: Engine, clock: Clock) -> Iterator[Callable[..., Deliverer]]:
    made: list[Deliverer] = []

    def make(**overrides: Any) -> Deliverer:
        options: dict[str, Any] = {
            "timeout_seconds": 2.0,
            "private_allowed": True,
            "grace_minutes": 30,
            "clock": clock,
        }
        options.update(overrides)
        deliverer = Deliverer(store_engine, **options)
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        deliverer.close()


@pytest.fixture
def deliverer(make_deliverer: Callable[..., Deliverer]) -> Deliverer:
    return make_deliverer()


@pytest.fixture
def endpoint(client: TestClient, admin: Agent, receiver: Receiver) -> dict[str, Any]:
    """An endpoint on the receiver subscribed to every event type, with its secret."""
    r = client.post(
        WEBHOOKS,
        json={"url": receiver.url, "event_types": list(EVENT_TYPES), "description": "crm"},
        headers=admin.auth,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def later(minutes: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()
