"""Writing the demo book (app/demo/book.py) into a replica and a store, and the callbacks a
demo day starts with."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, insert, select, text

from app.demo.book import (
    CLAIM_COLUMNS,
    DEFAULT_SEED,
    DISCOVERY_RAN_AGO,
    INSERT_BATCH,
    REQUIREMENT_COLUMNS,
    SCORE_COLUMNS,
    USER_COLUMNS,
    build_book,
)
from app.errors import Conflict
from app.replica import schema
from app.rules.suppression import SuppressionList, add_numbers
from app.vocabulary import QueueType


@dataclass(frozen=True, slots=True)
class DemoCounts:
    users: int
    claims: int
    requirements: int
    scores: int
    # Score rows by the replica's classification of their user (the truth, not the stored type).
    unsigned_users: int
    outstanding_requests: int
    no_queue: int
    # Score rows whose stored current_queue_type disagrees with the classification.
    stale: int
    inactive: int
    # Users with no score row: recent sign-ups (of which ``unscored_queued`` belong in a queue,
    # the rows the first discovery creates) and migrated users (``LEGACY_IDS``).
    unscored: int
    unscored_queued: int
    legacy: int
    # Numbers put on the suppression list, and the users holding them (two per number).
    suppressed_numbers: int = 0
    suppressed_users: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def seed_demo(
    store_engine: Engine,
    replica_engine: Engine,
    *,
    users: int = 6000,
    seed: int = DEFAULT_SEED,
    now: datetime | None = None,
    suppression: SuppressionList | None = None,
) -> DemoCounts:
    """Write the demo book into an empty replica and an empty ``user_call_scores``, and, given
    the process's ``suppression`` list, the book's shared numbers onto it.

    Creates the replica tables when they are missing. When the store and the replica are the
    same database (the embedded default), everything goes in one transaction; otherwise the
    replica is committed first, then the scores.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    book = build_book(users=users, seed=seed, now=now)
    with _connections(store_engine, replica_engine) as (store, replica):
        schema.replica_metadata.create_all(replica, checkfirst=True)
        if replica.execute(select(func.count()).select_from(schema.users)).scalar_one():
            raise Conflict("the replica already holds users: the demo seeds only an empty one")
        if store.execute(text("SELECT EXISTS (SELECT 1 FROM user_call_scores)")).scalar_one():
            raise Conflict("user_call_scores is not empty: the demo seeds only an empty database")
        _write(replica, schema.users, USER_COLUMNS, book.users)
        _write(replica, schema.claims, CLAIM_COLUMNS, book.claims)
        _write(replica, schema.claim_requirements, REQUIREMENT_COLUMNS, book.requirements)
        _copy(store, "user_call_scores", SCORE_COLUMNS, book.scores)
        suppressed = 0
        if suppression is not None:
            suppression.check_key(store)
            keys = [suppression.phone_key(phone) for phone in book.suppressed_phones]
            suppressed = add_numbers(store, [k for k in keys if k], "demo", None)
        # Discovery has been running: it last looked 15 minutes ago.
        store.execute(
            text(
                "INSERT INTO discovery_state (id, watermark) VALUES (1, :at)"
                " ON CONFLICT (id) DO UPDATE SET watermark = EXCLUDED.watermark"
            ),
            {"at": now - DISCOVERY_RAN_AGO},
        )
    return DemoCounts(
        users=len(book.users),
        claims=len(book.claims),
        requirements=len(book.requirements),
        scores=len(book.scores),
        unsigned_users=book.truth[str(QueueType.UNSIGNED_USERS)],
        outstanding_requests=book.truth[str(QueueType.OUTSTANDING_REQUESTS)],
        no_queue=book.truth[None],
        stale=book.stale,
        inactive=book.inactive,
        suppressed_numbers=suppressed,
        suppressed_users=2 * suppressed,
        unscored=len(book.unscored),
        unscored_queued=sum(1 for _, queue_type in book.unscored if queue_type is not None),
        legacy=len(book.legacy),
    )


@contextmanager
def _connections(
    store_engine: Engine, replica_engine: Engine
) -> Iterator[tuple[Connection, Connection]]:
    same = store_engine.url.render_as_string(hide_password=False) == (
        replica_engine.url.render_as_string(hide_password=False)
    )
    with store_engine.connect() as store:
        if same:
            with store.begin():
                yield store, store
            return
        with replica_engine.connect() as replica:
            with replica.begin():
                yield store, replica
            store.commit()


def _write(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    if conn.dialect.name == "postgresql":
        _copy(conn, table.name, columns, rows)
        return
    for start in range(0, len(rows), INSERT_BATCH):
        chunk = rows[start : start + INSERT_BATCH]
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in chunk])


def _copy(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    raw = conn.connection.driver_connection
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with raw.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


# Callbacks the demo books (SPEC 7.2), so the console and the API show them at once:
# (owner, minutes from now until due, how many). Due a few minutes ago: served first to their
# owner; due 40 minutes ago: past the personal window, anyone's, and overdue; later today: waiting.
DEMO_CALLBACKS = (
    ("demo-agent-1", -3, 2),
    ("demo-agent-2", -3, 1),
    ("demo-agent-2", -40, 2),
    ("demo-agent-1", 90, 2),
    ("demo-agent-2", 180, 1),
)


def seed_demo_callbacks(store_engine: Engine) -> int:
    """Book the demo's callbacks for active queued people nobody has called, owned by the demo
    agents (which must exist), as completions would have: the callback and the score row's
    ``next_call_after``. Does nothing when any callback exists. Returns how many it booked."""
    wanted = sum(n for _, _, n in DEMO_CALLBACKS)
    with store_engine.begin() as conn:
        if conn.execute(text("SELECT EXISTS (SELECT 1 FROM callbacks)")).scalar_one():
            return 0
        owners: dict[str, int] = dict(
            conn.execute(
                text("SELECT name, id FROM agents WHERE name = ANY(:names)"),
                {"names": [name for name, _, _ in DEMO_CALLBACKS]},
            ).all()
        )
        people = conn.execute(
            text(
                "SELECT user_id, current_queue_type FROM user_call_scores"
                " WHERE is_active AND current_queue_type IS NOT NULL AND total_attempts = 0"
                " ORDER BY user_id LIMIT :n"
            ),
            {"n": wanted},
        ).all()
        plan = [(owner, minutes) for owner, minutes, n in DEMO_CALLBACKS for _ in range(n)]
        booked = 0
        for (owner, minutes), person in zip(plan, people, strict=False):
            if owner not in owners:
                continue
            conn.execute(
                text(
                    "WITH booked AS ("
                    " INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id)"
                    " VALUES (:user, :queue, now() + make_interval(mins => :minutes), :owner)"
                    " RETURNING user_id, due_at)"
                    " UPDATE user_call_scores s SET next_call_after = b.due_at,"
                    " last_outcome = 'call_back', updated_at = now()"
                    " FROM booked b WHERE s.user_id = b.user_id"
                ),
                {
                    "user": person.user_id,
                    "queue": person.current_queue_type,
                    "minutes": minutes,
                    "owner": owners[owner],
                },
            )
            booked += 1
    return booked
