"""The replica on both engines the claims platform runs: PostgreSQL and MySQL/MariaDB.

``replica_db`` is parametrized, so every test using it runs once per engine, each time from empty
replica tables. MariaDB comes from REPLICA_TEST_MYSQL_URL (an admin connection allowed to create
databases); when it is unreachable the MySQL half is skipped, or fails under
CALLQUEUE_REQUIRE_MYSQL=1 so CI cannot silently lose that coverage.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.replica.schema import replica_metadata
from tests.factories import Replica as ReplicaRows

MYSQL_ADMIN_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test"
# Per test run, as the PostgreSQL databases are: several runs share the machine's MariaDB.
MYSQL_DATABASE = f"cq_test_replica_mysql_{os.getpid()}"
REPLICA_TABLES = [t.name for t in replica_metadata.sorted_tables]


@pytest.fixture(scope="session")
def mysql_replica_engine() -> Iterator[Engine]:
    admin_url = os.environ.get("REPLICA_TEST_MYSQL_URL", MYSQL_ADMIN_DEFAULT)
    admin = create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`"))
            conn.execute(text(f"CREATE DATABASE `{MYSQL_DATABASE}` CHARACTER SET utf8mb4"))
    except SQLAlchemyError as exc:
        reason = (
            f"MariaDB/MySQL replica unreachable at REPLICA_TEST_MYSQL_URL"
            f" ({make_url(admin_url).render_as_string(hide_password=True)}):"
            f" {type(getattr(exc, 'orig', None) or exc).__name__}"
        )
        if os.environ.get("CALLQUEUE_REQUIRE_MYSQL") == "1":
            pytest.fail(reason + " and CALLQUEUE_REQUIRE_MYSQL=1", pytrace=False)
        pytest.skip(reason)
    finally:
        admin.dispose()
    url = make_url(admin_url).set(database=MYSQL_DATABASE)
    engine = create_engine(url)
    replica_metadata.create_all(engine)
    yield engine
    engine.dispose()
    admin = create_engine(admin_url, connect_args={"connect_timeout": 3})
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`"))
    admin.dispose()


@pytest.fixture(
    params=[
        "postgresql",
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def replica_db(request: pytest.FixtureRequest) -> Engine:
    """A replica engine with empty tables, once for PostgreSQL and once for MariaDB."""
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("replica_engine")
    else:
        engine = request.getfixturevalue("mysql_replica_engine")
    with engine.begin() as conn:
        for table in REPLICA_TABLES:
            conn.execute(text(f"TRUNCATE TABLE {table}"))
    return engine


@pytest.fixture
def rows(replica_db: Engine) -> ReplicaRows:
    """Row builder writing to the parametrized replica."""
    return ReplicaRows(replica_db)
