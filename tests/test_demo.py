"""The demo book of ``callqueue serve --demo``: realistic, fictional, deterministic, and a book the
population can actually work (on a PostgreSQL replica and on MariaDB)."""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.demo.book import LEGACY_IDS, LEGACY_OUTSTANDING, LEGACY_UNSIGNED, build_book
from app.demo.seed import DemoCounts, seed_demo
from app.errors import Conflict
from app.intake.csv_import import import_scores
from app.replica.classification import BASE_ID_DOCUMENT_REASON, EXCLUDED_REQUIREMENT_TYPES
from app.replica.reader import Replica
from app.replica.schema import replica_metadata
from app.services import Services

# National form, and the international one some suppressed pairs' second holder uses.
FICTION_PHONE = re.compile(r"^(07700 |\+44 7700 )900\d{3}$")
NOW = datetime(2025, 6, 2, 8, 30, tzinfo=UTC)


@pytest.fixture
def seeded(store_engine: Engine, replica_engine: Engine) -> DemoCounts:
    return seed_demo(store_engine, replica_engine)


def column(engine: Engine, sql: str) -> list[object]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).scalars())


def scored_types(store_engine: Engine) -> dict[int, str | None]:
    with store_engine.connect() as conn:
        rows = conn.execute(text("SELECT user_id, current_queue_type FROM user_call_scores"))
        return {int(uid): qtype for uid, qtype in rows}


def test_the_book_is_large_and_covers_every_case(
    seeded: DemoCounts, store_engine: Engine, replica_engine: Engine
) -> None:
    assert seeded.users == column(replica_engine, "SELECT count(*) FROM users")[0]
    assert seeded.users >= 5000
    assert seeded.claims == column(replica_engine, "SELECT count(*) FROM claims")[0]
    assert (
        seeded.requirements == column(replica_engine, "SELECT count(*) FROM claim_requirements")[0]
    )
    assert seeded.scores == column(store_engine, "SELECT count(*) FROM user_call_scores")[0]
    assert min(seeded.unsigned_users, seeded.outstanding_requests, seeded.no_queue) >= 1000

    types = set(column(replica_engine, "SELECT DISTINCT type FROM claim_requirements"))
    assert types >= EXCLUDED_REQUIREMENT_TYPES
    assert {"proof_of_address", "bank_statement", "payslip", "id_document"} <= types
    id_reasons = set(
        column(
            replica_engine,
            "SELECT DISTINCT claim_requirement_reason FROM claim_requirements"
            " WHERE type = 'id_document'",
        )
    )
    assert BASE_ID_DOCUMENT_REASON in id_reasons
    assert len(id_reasons - {BASE_ID_DOCUMENT_REASON}) >= 3

    claim_statuses = set(column(replica_engine, "SELECT DISTINCT status FROM claims"))
    assert {"cancelled", "CANCELLED", "Pending", "completed"} <= claim_statuses
    requirement_statuses = set(
        column(replica_engine, "SELECT DISTINCT status FROM claim_requirements")
    )
    assert {"pending", "Pending", "PENDING", "completed", "COMPLETED"} <= requirement_statuses
    assert column(replica_engine, "SELECT count(*) FROM users WHERE NOT is_enabled")[0] > 100


def test_contact_details_are_fiction(seeded: DemoCounts, replica_engine: Engine) -> None:
    phones = column(replica_engine, "SELECT phone_number FROM users")
    present = [p for p in phones if p is not None]
    assert all(isinstance(p, str) and FICTION_PHONE.match(p) for p in present)
    assert len(phones) - len(present) < len(phones) * 0.01, "only a handful lack a number"
    emails = [e for e in column(replica_engine, "SELECT email_address FROM users") if e]
    assert all(str(e).endswith(("@example.com", "@example.org")) for e in emails)
    names = column(replica_engine, "SELECT first_name || ' ' || last_name FROM users")
    assert len(set(names)) > 500


def test_score_rows_mostly_match_the_replica(
    seeded: DemoCounts, store_engine: Engine, replica_engine: Engine
) -> None:
    stored = scored_types(store_engine)
    replica_ids = {int(u) for u in column(replica_engine, "SELECT id FROM users")}
    assert set(stored) <= replica_ids, "every lead is a user the replica knows"

    verdicts = Replica(replica_engine).classify(sorted(stored))
    truth = Counter(str(v.queue_type) if v.queue_type else None for v in verdicts.values())
    assert truth == Counter(
        {
            "unsigned_users": seeded.unsigned_users,
            "outstanding_requests": seeded.outstanding_requests,
            None: seeded.no_queue,
        }
    )
    stale = sum(
        1
        for uid, qtype in stored.items()
        if qtype != (str(verdicts[uid].queue_type) if verdicts[uid].queue_type else None)
    )
    assert stale == seeded.stale
    assert 0.05 <= stale / len(stored) <= 0.10
    assert sum(1 for t in stored.values() if t is None) > 1000


def test_scores_times_and_activity_are_spread(seeded: DemoCounts, store_engine: Engine) -> None:
    with store_engine.connect() as conn:
        scores = list(conn.execute(text("SELECT current_score FROM user_call_scores")).scalars())
        figures = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE next_call_after > now()) AS waiting,"
                " count(*) FILTER (WHERE NOT is_active) AS inactive,"
                " count(*) FILTER (WHERE created_at > now() - interval '2 hours') AS cooling,"
                " min(created_at) < now() - interval '150 days' AS months_old"
                " FROM user_call_scores"
            )
        ).one()
    assert min(scores) == 0 and max(scores) == 200
    assert statistics.median(scores) <= 10, "skewed low: most leads are fresh or barely tried"
    assert figures.waiting > 100
    assert figures.inactive == seeded.inactive > 50
    assert figures.cooling > 10
    assert figures.months_old is True


def test_a_population_after_seeding_fills_both_queues(
    seeded: DemoCounts, services: Services, store_engine: Engine
) -> None:
    report = services.population().run(trigger="test").as_dict()

    assert report["success"] is True
    for name in ("unsigned_users", "outstanding_requests"):
        assert report["queues"][name]["populated"] == 100
    assert (
        report["queues"]["unsigned_users"]["invalid"]
        + (report["queues"]["outstanding_requests"]["invalid"])
        > 0
    ), "the stale share gives the population something to reclassify"
    with store_engine.connect() as conn:
        pending = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM unsigned_users_queue WHERE status = 'pending'),"
                " (SELECT count(*) FROM outstanding_requests_queue WHERE status = 'pending')"
            )
        ).one()
    assert tuple(pending) == (100, 100)


def test_the_first_discovery_creates_the_rows_of_recent_sign_ups(
    seeded: DemoCounts, services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """Half the sign-ups of the last two hours have no score row; discovery last ran 15
    minutes ago, so its first run here is incremental and finds exactly them."""
    replica_ids = {int(u) for u in column(replica_engine, "SELECT id FROM users")}
    unscored = replica_ids - set(scored_types(store_engine))
    assert len(unscored) == seeded.unscored + seeded.legacy
    assert seeded.unscored >= 50 and 0 < seeded.unscored_queued < seeded.unscored

    report = services.discovery().run(trigger="test")

    assert report.success, report.error
    assert report.created == seeded.unscored_queued
    assert report.scanned_users < seeded.users // 10  # the window, not the whole replica
    after = scored_types(store_engine)
    created = set(after) - (replica_ids - unscored)
    assert len(created) == seeded.unscored_queued
    assert all(after[uid] is not None for uid in created)
    assert not created & set(LEGACY_IDS), "the migrated users are beyond discovery's reach"
    with store_engine.connect() as conn:
        new_rows = conn.execute(
            text(
                "SELECT DISTINCT (current_score, is_active, total_attempts)::text"
                " FROM user_call_scores WHERE user_id = ANY(:ids)"
            ),
            {"ids": sorted(created)},
        ).scalars()
        assert list(new_rows) == ["(0,t,0)"]


def test_the_readme_csv_puts_the_migrated_users_at_the_head_of_the_queues(
    seeded: DemoCounts, services: Services, store_engine: Engine, tmp_path: Path
) -> None:
    """The README's walk-through ("Feeding callqueue"), with COOLING_PERIOD_MINUTES=0 as it
    says: discovery at start, the CSV of migrated users, a population, and there they are."""
    assert services.discovery().run(trigger="test").success
    feed = tmp_path / "scores.csv"
    feed.write_text(
        "user_id,current_score,base_score\n"
        "900001,0,0\n900002,0,0\n900003,0,2\n900011,0,0\n900012,0,0\n900013,0,1\n"
    )

    summary = import_scores(services.engine, services.replica, feed)

    assert summary.complete and summary.counts.created == 6
    assert services.population().run(trigger="test").success
    with store_engine.connect() as conn:
        heads = {
            table: conn.execute(
                text(
                    f"SELECT user_id FROM {table} WHERE status = 'pending'"
                    " ORDER BY queue_position LIMIT 3"
                )
            )
            .scalars()
            .all()
            for table in ("unsigned_users_queue", "outstanding_requests_queue")
        }
    # Score 0 first, the freshest leads first among equals (the ones just imported, created in
    # one transaction), then the lowest user id.
    assert heads["unsigned_users_queue"] == [900001, 900002, 900003]
    assert heads["outstanding_requests_queue"] == [900011, 900012, 900013]
    assert {900001, 900002, 900003} <= set(LEGACY_UNSIGNED)
    assert {900011, 900012, 900013} <= set(LEGACY_OUTSTANDING)


def test_seeding_twice_is_refused(
    seeded: DemoCounts, store_engine: Engine, replica_engine: Engine
) -> None:
    with pytest.raises(Conflict):
        seed_demo(store_engine, replica_engine, users=10)
    assert column(store_engine, "SELECT count(*) FROM user_call_scores")[0] == seeded.scores


def test_the_book_is_deterministic() -> None:
    first = build_book(users=300, seed=7, now=NOW)
    again = build_book(users=300, seed=7, now=NOW)
    other = build_book(users=300, seed=8, now=NOW)
    assert (first.users, first.claims, first.requirements, first.scores) == (
        again.users,
        again.claims,
        again.requirements,
        again.scores,
    )
    assert first.users != other.users


MYSQL_ADMIN_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test"
MYSQL_DATABASE = f"cq_test_demo_mysql_{os.getpid()}"


@pytest.fixture
def mysql_replica() -> Iterator[Engine]:
    admin_url = os.environ.get("REPLICA_TEST_MYSQL_URL", MYSQL_ADMIN_DEFAULT)
    admin = create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`"))
            conn.execute(text(f"CREATE DATABASE `{MYSQL_DATABASE}` CHARACTER SET utf8mb4"))
    except SQLAlchemyError as exc:
        reason = f"MariaDB/MySQL unreachable ({type(getattr(exc, 'orig', None) or exc).__name__})"
        if os.environ.get("CALLQUEUE_REQUIRE_MYSQL") == "1":
            pytest.fail(reason + " and CALLQUEUE_REQUIRE_MYSQL=1", pytrace=False)
        pytest.skip(reason)
    engine = create_engine(make_url(admin_url).set(database=MYSQL_DATABASE))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`"))
    admin.dispose()


@pytest.mark.mysql
def test_the_book_seeds_a_mariadb_replica(store_engine: Engine, mysql_replica: Engine) -> None:
    """The claims platform's replica is usually MySQL: the demo writes it there too (creating
    its tables), and classifies there exactly as on PostgreSQL."""
    counts = seed_demo(store_engine, mysql_replica, users=1500)

    assert replica_metadata.tables.keys() <= set(
        column(
            mysql_replica,
            "SELECT table_name FROM information_schema.tables"
            f" WHERE table_schema = '{MYSQL_DATABASE}'",
        )
    )
    assert column(mysql_replica, "SELECT count(*) FROM users")[0] == counts.users
    assert counts.users == 1500 + counts.legacy
    stored = scored_types(store_engine)
    verdicts = Replica(mysql_replica).classify(sorted(stored))
    truth = Counter(str(v.queue_type) if v.queue_type else None for v in verdicts.values())
    assert truth == Counter(
        {
            "unsigned_users": counts.unsigned_users,
            "outstanding_requests": counts.outstanding_requests,
            None: counts.no_queue,
        }
    )


def test_suppressed_numbers_are_each_shared_by_two_queued_users(
    store_engine: Engine, replica_engine: Engine
) -> None:
    """Ten numbers of the fiction range on the suppression list, each held by exactly two users
    who would otherwise be called, written once nationally and once internationally."""
    from app.rules.suppression import SuppressionList

    hashing = SuppressionList(b"demo-test-key")
    counts = seed_demo(store_engine, replica_engine, suppression=hashing)
    assert (counts.suppressed_numbers, counts.suppressed_users) == (10, 20)

    with replica_engine.connect() as conn:
        holders = conn.execute(
            text(
                "SELECT id, phone_number FROM users"
                " WHERE replace(replace(phone_number, '+44 ', '0'), ' ', '') LIKE '0770090099_'"
                " ORDER BY phone_number, id"
            )
        ).all()
    by_number: dict[str, list[str]] = {}
    for _, phone in holders:
        by_number.setdefault(str(hashing.phone_key(phone)), []).append(phone)
    assert len(by_number) == 10
    assert all(
        sorted(forms) == sorted([f"07700 {forms[0][-6:]}", f"+44 7700 {forms[0][-6:]}"])
        for forms in by_number.values()
    )
    with store_engine.connect() as conn:
        listed = dict(conn.execute(text("SELECT phone_hash, source FROM suppressed_numbers")).all())
        scores = dict(
            conn.execute(
                text("SELECT user_id, is_active FROM user_call_scores WHERE user_id = ANY(:ids)"),
                {"ids": [uid for uid, _ in holders]},
            ).all()
        )
    assert listed == {key: "demo" for key in by_number}
    assert scores == {uid: True for uid, _ in holders}, "every holder has an active score row"
    # Chosen among users the replica puts in a queue and whose score row is active.
    verdicts = Replica(replica_engine).classify([uid for uid, _ in holders])
    assert all(v.queue_type is not None for v in verdicts.values())
