"""A request never holds a pooled connection while it waits for another.

Authentication reads the agent on a pooled connection; a route that then opens its own connection
must not still hold the first, or a few concurrent requests starve the pool (each holds one and
waits for a second) until the pool's timeout. With a pool of one connection this is visible in a
single request: it would wait the pool's timeout and answer 503.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.factories import new_agent


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
