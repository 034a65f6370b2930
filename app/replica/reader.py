"""Batched, time-bounded reads from the claims platform's replica.

A population of N users costs one replica statement per batch of ``replica_batch_size`` users,
never one per user. Every statement is bounded (PostgreSQL ``statement_timeout``, MySQL socket
read timeout), and any driver failure surfaces as ReplicaUnavailable so callers report it as such
instead of mistaking it for an empty result.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CompoundSelect,
    Connection,
    Engine,
    Integer,
    Text,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    literal_column,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app import metrics
from app.config import Settings
from app.db import keepalive_args, log_slow_statements, server_options, set_tcp_keepalive
from app.deadlines import Deadline
from app.errors import ConfigError, ReplicaUnavailable
from app.replica.classification import (
    ReplicaClaim,
    ReplicaRequirement,
    ReplicaUser,
    UserFacts,
    Verdict,
    classify,
)
from app.replica.schema import claim_requirements, claims, users
from app.statements import Statement
from app.timestamps import utc


def create_replica_engine(settings: Settings) -> Engine:
    url = settings.replica_url
    if not url:
        raise ConfigError("REPLICA_DATABASE_URL (or DATABASE_URL) is not set")
    timeout_ms = settings.replica_statement_timeout_ms
    dead_peer = settings.dead_peer_timeout_seconds
    connect_args: dict[str, Any]
    mysql = url.startswith("mysql")
    if mysql:
        seconds = max(1, round(timeout_ms / 1000))
        connect_args = {"connect_timeout": 5, "read_timeout": seconds, "write_timeout": seconds}
    elif settings.replica_pooled:
        # Read through the store's transaction pooler (REPLICA_DATABASE_URL unset): no startup
        # options and no prepared statements there; every read stays bounded by its deadline.
        connect_args = {
            "connect_timeout": 5,
            "application_name": "callqueue-replica",
            "prepare_threshold": None,
            **keepalive_args(dead_peer),
        }
    else:
        connect_args = {
            "connect_timeout": 5,
            "application_name": "callqueue-replica",
            "options": server_options(
                dead_peer,
                statement_timeout=timeout_ms,
                default_transaction_read_only="on",
            ),
            **keepalive_args(dead_peer),
        }
    # Autocommit: every read sees the replica's latest state and no transaction is left open there.
    # Sized like the store's pool: every claim reads the replica, and an overflow connection
    # opened and closed per request costs more than the read. No pre-ping: Replica.read
    # retries once on a connection found dead, which costs nothing when it is alive.
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=600,
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
        connect_args=connect_args,
    )
    log_slow_statements(engine, settings.slow_statement_ms)
    if mysql:
        _mysql_keepalives(engine, dead_peer)
    return engine


def _mysql_keepalives(engine: Engine, dead_peer_seconds: int) -> None:
    """pymysql has no keepalive options: the replica's TCP socket is opened here, with the same
    options libpq sets, and handed to pymysql's public ``Connection.connect(sock)``
    (SQLAlchemy's ``do_connect`` event). ``read_timeout`` already bounds each read; these cover
    a connection that sits idle in the pool while its peer vanishes, and data sent and never
    acknowledged. A unix socket has no peer host to lose: left to pymysql."""

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        if cparams.get("unix_socket"):
            return None
        host, port = cparams.get("host", "localhost"), int(cparams.get("port", 3306))
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, port), cparams.get("connect_timeout", 10))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_tcp_keepalive(sock, dead_peer_seconds)
        except OSError as exc:
            # What pymysql raises when it opens the socket itself (CR_CONN_HOST_ERROR): a DBAPI
            # error, so SQLAlchemy wraps it and callers see the replica fail, not a bug.
            if sock is not None:
                sock.close()
            message = f"Can't connect to MySQL server on {host!r} ({exc})"
            raise dialect.loaded_dbapi.OperationalError(2003, message) from exc
        try:
            conn = dialect.loaded_dbapi.connect(*cargs, **cparams, defer_connect=True)
            conn.connect(sock)  # wraps its own socket errors in OperationalError
        except BaseException:
            sock.close()
            raise
        return conn


CONTACT_COLUMNS = (
    users.c.first_name,
    users.c.last_name,
    users.c.phone_number,
    users.c.email_address,
)


@dataclass(frozen=True, slots=True)
class Contact:
    first_name: str | None
    last_name: str | None
    phone_number: str | None
    email_address: str | None

    @property
    def callable(self) -> bool:
        return bool(self.phone_number and self.phone_number.strip())


@dataclass(frozen=True)
class _FactQueries:
    """The fact statement, built once per dialect: one round trip per batch.

    Users, their claims and their claims' requirements come back as one ``UNION ALL`` of three
    branches, told apart by the first column, so a claim-time check or an outcome costs the
    replica one statement, not three. Columns: kind, user id, row id, a reference (signature
    file or claim id), the user's ``is_enabled``, four text columns (claim status; requirement
    type, status, reason; the contact details when asked for) and ``created_at``.

    On PostgreSQL the batch's ids travel as one array parameter (``= ANY(:ids)``): an
    expanding ``IN`` list of 2,000 ids costs SQLAlchemy 2,000 bound parameters to render,
    psycopg a re-parse of the query and the server a plan over 2,000 parameters, every batch.
    MySQL has no arrays, so it keeps the expanding ``IN``.

    One user's facts (a claim's check, an outcome's reclassification: the dashboards' hot path)
    have statements of their own with a plain ``= :user_id``, which the driver runs directly
    (``app.statements``).
    """

    facts: Statement
    facts_with_contacts: Statement
    user_facts: Statement
    user_facts_with_contacts: Statement

    @classmethod
    def build(cls, postgres: bool) -> _FactQueries:
        ids: Any = bindparam("ids", type_=ARRAY(BigInteger)) if postgres else None
        user_id = bindparam("user_id", type_=BigInteger)

        def batch(column: Any) -> Any:
            return column == any_(ids) if postgres else column.in_(bindparam("ids", expanding=True))

        def one(column: Any) -> Any:
            return column == user_id

        def none(type_: Any) -> Any:
            return cast(null(), type_)

        # MySQL has no CAST AS BOOLEAN; its booleans are integers anyway.
        flag = Boolean if postgres else Integer

        def build(with_contacts: bool, matches: Callable[[Any], Any]) -> CompoundSelect:
            # Every text column is cast, in every branch: on MySQL a UNION column may not mix
            # the tables' collations with the connection's.
            contact = (
                [cast(c, Text) for c in CONTACT_COLUMNS]
                if with_contacts
                else [none(Text), none(Text), none(Text), none(Text)]
            )
            return union_all(
                select(
                    literal_column(str(_USER), Integer),
                    users.c.id,
                    users.c.id,
                    users.c.current_signature_file_id,
                    users.c.is_enabled,
                    *contact,
                    users.c.created_at,
                ).where(matches(users.c.id)),
                select(
                    literal_column(str(_CLAIM), Integer),
                    claims.c.user_id,
                    claims.c.id,
                    none(BigInteger),
                    none(flag),
                    cast(claims.c.status, Text),
                    none(Text),
                    none(Text),
                    none(Text),
                    claims.c.created_at,
                ).where(matches(claims.c.user_id)),
                select(
                    literal_column(str(_REQUIREMENT), Integer),
                    claims.c.user_id,
                    claim_requirements.c.id,
                    claim_requirements.c.claim_id,
                    none(flag),
                    cast(claim_requirements.c.type, Text),
                    cast(claim_requirements.c.status, Text),
                    cast(claim_requirements.c.claim_requirement_reason, Text),
                    none(Text),
                    claim_requirements.c.created_at,
                )
                .join(claims, claims.c.id == claim_requirements.c.claim_id)
                .where(matches(claims.c.user_id)),
            )

        return cls(
            facts=Statement(build(False, batch)),
            facts_with_contacts=Statement(build(True, batch)),
            user_facts=Statement(build(False, one)),
            user_facts_with_contacts=Statement(build(True, one)),
        )


_USER, _CLAIM, _REQUIREMENT = 1, 2, 3
_QUERIES = {postgres: _FactQueries.build(postgres) for postgres in (True, False)}
_CONTACT = Statement(select(*CONTACT_COLUMNS).where(users.c.id == bindparam("user_id")))


T = TypeVar("T")


def _unavailable(exc: DBAPIError, operation: str) -> ReplicaUnavailable:
    metrics.REPLICA_ERRORS.labels(operation).inc()
    return ReplicaUnavailable(f"the claims replica did not answer ({type(exc.orig).__name__})")


class Replica:
    def __init__(
        self, engine: Engine, batch_size: int = 2000, deadline_seconds: float | None = None
    ) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.deadline_seconds = deadline_seconds
        self._queries = _QUERIES[engine.dialect.name == "postgresql"]

    def read(self, operation: str, work: Callable[[Connection], T]) -> T:
        """One bounded replica read. A pooled connection found dead at once (the replica
        restarted while it sat idle) is retried on a fresh one; a read that ran into the
        deadline is not, so a caller never waits on the replica longer than one attempt."""
        for attempt in (1, 2):
            deadline = Deadline(self.deadline_seconds)
            try:
                with self.engine.connect() as conn, deadline.watch(conn):
                    return work(conn)
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated and not deadline.fired:
                    continue
                raise _unavailable(exc, operation) from exc
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        try:
            self.read("ping", lambda conn: conn.execute(text("SELECT 1")).scalar())
            return True
        except (ReplicaUnavailable, SQLAlchemyError):
            return False

    def fetch_facts(self, user_ids: Sequence[int]) -> dict[int, UserFacts]:
        """Facts for every id asked for; users the replica lacks get ``UserFacts(user=None)``."""
        facts: dict[int, UserFacts] = {}
        for start in range(0, len(user_ids), self.batch_size):
            facts.update(self._fetch_batch(user_ids[start : start + self.batch_size]))
        return facts

    def classify(self, user_ids: Sequence[int]) -> dict[int, Verdict]:
        return {uid: classify(f) for uid, f in self.fetch_facts(user_ids).items()}

    def fetch_claim_facts(self, user_id: int) -> tuple[UserFacts, Contact | None]:
        """One user's facts and contact details in the same single statement."""
        contacts: dict[int, Contact] = {}
        facts = self._fetch_batch([user_id], contacts)
        return facts[user_id], contacts.get(user_id)

    def _fetch_batch(
        self, user_ids: Sequence[int], contacts: dict[int, Contact] | None = None
    ) -> dict[int, UserFacts]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        q, with_contacts = self._queries, contacts is not None
        statement: Statement
        params: dict[str, Any]
        if len(ids) == 1:
            statement = q.user_facts_with_contacts if with_contacts else q.user_facts
            params = {"user_id": ids[0]}
        else:  # SQLAlchemy runs these (an array or an expanding IN): see app.statements
            statement = q.facts_with_contacts if with_contacts else q.facts
            params = {"ids": ids}

        def work(conn: Connection) -> tuple[dict[int, UserFacts], dict[int, Contact]]:
            facts = {uid: UserFacts(user=None) for uid in ids}
            found: dict[int, Contact] = {}
            for kind, uid, rid, ref, enabled, t1, t2, t3, t4, created in statement.all(
                conn, params
            ):
                if kind == _CLAIM:
                    facts[uid].claims.append(ReplicaClaim(rid, t1, utc(created)))
                elif kind == _REQUIREMENT:
                    facts[uid].requirements.append(
                        ReplicaRequirement(rid, ref, t1, t2, t3, utc(created))
                    )
                else:
                    facts[uid].user = ReplicaUser(uid, bool(enabled), ref, utc(created))
                    if contacts is not None:
                        found[uid] = Contact(t1, t2, t3, t4)
            return facts, found

        facts, found = self.read("facts", work)
        if contacts is not None:
            contacts.update(found)
        return facts

    def fetch_contacts(self, user_id: int) -> Contact | None:
        """Names, phone and email: read at claim time only, for the agent holding the user."""
        row = self.read("contacts", lambda conn: _CONTACT.one_or_none(conn, {"user_id": user_id}))
        return Contact(*row) if row else None
