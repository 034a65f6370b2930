"""Real PostgreSQL for every test: a fresh store database migrated by Alembic, and a separate
replica database holding the claims platform's tables. Tests that need committed data across
connections get it: each test starts from truncated tables instead of a rolled-back transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from app.config import Settings, load_settings
from app.health import alembic_config
from app.main import create_app
from app.models import metadata
from app.replica.schema import replica_metadata
from app.services import Services
from tests import pg
from tests.factories import Replica

CRON_SECRET = "test-cron-secret-0123456789abcdef-XYZ"
SUPPRESSION_KEY = "test-suppression-key-0123456789abcdef-XYZ"
MYSQL_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test"


@pytest.fixture(scope="session")
def pg_server() -> str:
    return pg.server_url()


@pytest.fixture(scope="session")
def store_url(pg_server: str) -> Iterator[str]:
    name = f"cq_test_store_{os.getpid()}"
    url = pg.recreate_database(pg_server, name)
    command.upgrade(alembic_config(url), "head")
    yield url
    pg.drop_database(pg_server, name)  # each run's databases go with it


@pytest.fixture(scope="session")
def replica_url(pg_server: str) -> Iterator[str]:
    name = f"cq_test_replica_{os.getpid()}"
    url = pg.recreate_database(pg_server, name)
    engine = create_engine(url)
    replica_metadata.create_all(engine)
    engine.dispose()
    yield url
    pg.drop_database(pg_server, name)


@pytest.fixture(scope="session")
def store_engine(store_url: str) -> Iterator[Engine]:
    # Small: concurrency tests open their own pools, and the server allows 100 connections.
    engine = create_engine(store_url, pool_size=5, max_overflow=10)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def replica_engine(replica_url: str) -> Iterator[Engine]:
    engine = create_engine(replica_url)
    yield engine
    engine.dispose()


OWNED_TABLES = [t.name for t in metadata.sorted_tables]
REPLICA_TABLES = [t.name for t in replica_metadata.sorted_tables]


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    """Start every database-backed test from empty tables."""
    # Every test that reaches the store (store_url is beneath all of its fixtures).
    if "store_url" not in request.fixturenames:
        return
    store: Engine = request.getfixturevalue("store_engine")
    replica: Engine = request.getfixturevalue("replica_engine")
    with store.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(OWNED_TABLES)} RESTART IDENTITY CASCADE"))
    with replica.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(REPLICA_TABLES)}"))


TEST_ORIGIN = "https://testserver"


@pytest.fixture
def make_settings(store_url: str, replica_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": store_url,
            "replica_database_url": replica_url,
            "cron_secret": CRON_SECRET,
            "suppression_key": SUPPRESSION_KEY,
            "app_env": "test",
            "cooling_period_minutes": 0,
            "scheduler_enabled": False,
            # The webhook tests run their own sender (tests/webhooks/).
            "webhook_sender_enabled": False,
            # The fronts tests move the queues' fronts themselves (tests/queues/test_fronts.py).
            "queue_front_seconds": 0,
            # Tests run at any hour; the calling-hours tests set their own rules.
            "calling_hours": "always",
            # The test client's own origin: cookies are Secure outside development, and the
            # CSRF check compares a browser's Origin with this.
            "public_url": TEST_ORIGIN,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_services(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def make(**overrides: Any) -> Services:
        services = Services.build(make_settings(**overrides))
        built.append(services)
        return services

    yield make
    for services in built:
        services.dispose()


@pytest.fixture
def services(make_services: Callable[..., Services], settings: Settings) -> Services:
    return make_services()


@pytest.fixture
def replica(replica_engine: Engine) -> Replica:
    return Replica(replica_engine)


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        client = TestClient(
            create_app(settings),
            base_url=settings.public_url or TEST_ORIGIN,
            raise_server_exceptions=False,
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client()


@pytest.fixture
def cron_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {CRON_SECRET}"}


@pytest.fixture
def fault_trigger(store_engine: Engine) -> Iterator[Callable[[str], None]]:
    """Make every INSERT into a table fail inside the database, as a broken disk would: a fault
    injected from outside the application, dropped after the test."""
    installed: list[str] = []

    def install(table: str) -> None:
        with store_engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION cq_test_injected_fault() RETURNS trigger"
                    " LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER cq_test_fault BEFORE INSERT ON {table}"
                    " FOR EACH ROW EXECUTE FUNCTION cq_test_injected_fault()"
                )
            )
        installed.append(table)

    yield install
    with store_engine.begin() as conn:
        for table in installed:
            conn.execute(text(f"DROP TRIGGER IF EXISTS cq_test_fault ON {table}"))
        conn.execute(text("DROP FUNCTION IF EXISTS cq_test_injected_fault()"))
