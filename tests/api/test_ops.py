"""Liveness, readiness and the shape of errors on unknown routes (SPEC 4.3, 4)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests import pg

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def empty_database_url(pg_server: str) -> Iterator[str]:
    """A database that exists but was never migrated."""
    name = f"cq_test_unmigrated_{os.getpid()}"
    yield pg.recreate_database(pg_server, name)
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_healthz_answers_without_touching_any_database(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(database_url=UNREACHABLE, replica_database_url=UNREACHABLE)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_is_ready_on_a_migrated_database(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "database": "ok",
        "schema": "current",
        "replica": "ok",
        "suppression_key": "ok",
    }


def test_readyz_says_the_schema_is_behind_on_an_unmigrated_database(
    make_client: Callable[..., TestClient], empty_database_url: str
) -> None:
    client = make_client(database_url=empty_database_url)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "database": "ok",
        "schema": "behind",
        "replica": "ok",
        "suppression_key": "unknown",
    }


def test_readyz_says_the_schema_is_behind_at_an_older_revision(
    make_client: Callable[..., TestClient], empty_database_url: str
) -> None:
    engine = create_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0000_older')"))
    engine.dispose()
    client = make_client(database_url=empty_database_url)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["schema"] == "behind"


def test_readyz_is_not_ready_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(database_url=UNREACHABLE)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "database": "error",
        "schema": "unknown",
        "replica": "ok",
        "suppression_key": "unknown",
    }


def test_readyz_stays_ready_when_only_the_replica_is_unreachable(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(replica_database_url=UNREACHABLE)

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "database": "ok",
        "schema": "current",
        "replica": "error",
        "suppression_key": "ok",
    }


def test_an_unknown_route_is_a_404_in_the_error_shape(client: TestClient) -> None:
    response = client.get("/api/no-such-thing")

    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "NotFound"
    assert isinstance(body["detail"], str) and body["detail"]
    assert "no-such-thing" not in response.text
