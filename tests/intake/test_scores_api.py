"""``PUT /api/scores`` (SPEC 7.1, 8.1): the upstream scorer's upsert, row by row, as given,
beside the service's own outcome updates."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from app.config import Settings
from app.intake.rows import ScoreRow, Stored, create_rows, next_scores
from tests.factories import Agent, Replica, add_scores, new_agent

SCORES = "/api/scores"
POPULATE = "/api/cron/populate-separated-queues"
UNSIGNED, OUTSTANDING = "unsigned_users", "outstanding_requests"


@pytest.fixture
def scorer(store_engine: Engine) -> Agent:
    return new_agent(store_engine, "pipeline", "scorer")


def rows_of(store: Engine, *columns: str) -> dict[int, tuple[Any, ...]]:
    with store.connect() as conn:
        found = conn.execute(text(f"SELECT user_id, {', '.join(columns)} FROM user_call_scores"))
        return {r[0]: tuple(r[1:]) for r in found}


def put(client: TestClient, who: Agent, *rows: dict[str, Any]) -> Any:
    return client.put(SCORES, headers=who.auth, json={"scores": list(rows)})


# -- the rule, on its own -------------------------------------------------------------------------


def stored(current: int) -> Stored:
    return Stored(current, 1, 2, 3)


@pytest.mark.parametrize(
    "given,before,after",
    [
        # As given, lower or higher, whatever outcomes came before (SPEC 8.1).
        (ScoreRow(1, 5), stored(40), (5, 1, 2, 3)),
        (ScoreRow(1, 90), stored(40), (90, 1, 2, 3)),
        # Components are the scorer's alone: as given, or left as they are.
        (ScoreRow(1, 5, 0, 50, None), stored(5), (5, 0, 50, 3)),
        (ScoreRow(1, 5, None, None, -4), stored(5), (5, 1, 2, -4)),
    ],
)
def test_the_rule(given: ScoreRow, before: Stored, after: tuple[int, ...]) -> None:
    assert next_scores(given, before) == after


def test_after_a_call_the_scores_are_written_as_given_and_the_same_body_is_unchanged(
    client: TestClient,
    scorer: Agent,
    replica: Replica,
    store_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    """SPEC 8.1: a call's outcome raised the score; the scorer's next write sets it as given
    (lower, here), and sending the same body again reports it unchanged. The outcome's effect on
    scheduling, next_call_after, stands."""
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": UNSIGNED, "current_score": 10}])
    assert client.get(POPULATE, headers=cron_headers).status_code == 200
    agent = new_agent(store_engine, "caller")
    held = client.post(f"/api/queues/{UNSIGNED}/next-user", headers=agent.auth).json()
    done = client.post(
        f"/api/assignments/{held['assignment_id']}/complete",
        headers=agent.auth,
        json={"outcome": "not_interested"},
    )
    assert done.json()["score"]["current_score"] == 110
    body = {"user_id": 1, "current_score": 3, "base_score": 2}

    first = put(client, scorer, body)
    second = put(client, scorer, body)

    assert first.json() == {"created": 0, "updated": 1, "unchanged": 0, "errors": []}
    assert second.json() == {"created": 0, "updated": 0, "unchanged": 1, "errors": []}
    assert rows_of(store_engine, "current_score", "base_score", "next_call_after IS NOT NULL") == {
        1: (3, 2, True)
    }


# -- counts, creation, classification ------------------------------------------------------------


def test_created_updated_unchanged_and_the_same_body_twice(
    client: TestClient, scorer: Agent, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    replica.outstanding(2)
    replica.user(3, enabled=False)
    add_scores(store_engine, [{"user_id": 4, "current_queue_type": UNSIGNED, "current_score": 9}])
    body = [
        {"user_id": 1, "current_score": 5},
        {"user_id": 2, "current_score": 0, "base_score": 0, "time_penalty_score": 3},
        {"user_id": 3, "current_score": 1},
        {"user_id": 5, "current_score": 2},  # unknown to the replica
        {"user_id": 4, "current_score": 12, "outcome_penalty_score": 12},
    ]

    first = put(client, scorer, *body)

    assert first.status_code == 200, first.text
    assert first.json() == {"created": 4, "updated": 1, "unchanged": 0, "errors": []}
    assert rows_of(
        store_engine,
        "current_queue_type",
        "current_score",
        "base_score",
        "outcome_penalty_score",
        "time_penalty_score",
        "is_active",
    ) == {
        1: (UNSIGNED, 5, 0, 0, 0, True),
        2: (OUTSTANDING, 0, 0, 0, 3, True),
        3: (None, 1, 0, 0, 0, True),
        5: (None, 2, 0, 0, 0, True),
        4: (UNSIGNED, 12, 0, 12, 0, True),
    }
    again = put(client, scorer, *body)
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 5, "errors": []}


def test_new_rows_are_classified_in_one_replica_statement(
    client: TestClient, scorer: Agent, replica: Replica
) -> None:
    replica.unsigned(7)
    statements: list[str] = []
    event.listen(
        client.app.state.services.replica.engine,  # type: ignore[attr-defined]
        "before_cursor_execute",
        lambda conn, cursor, statement, *a: statements.append(statement),
    )
    for size in (10, 10_000):
        rows = [{"user_id": 7 * size + n, "current_score": n % 200} for n in range(size)]
        assert put(client, scorer, *rows).json()["created"] == size
    # The process's background replica check (a SELECT 1 every REPLICA_CHECK_SECONDS) shares
    # the engine and may fall inside a request of 10,000 rows: it is not the request's.
    classifying = [s for s in statements if s.strip() != "SELECT 1"]
    assert len(classifying) == 2  # one per request, whatever its size


def test_only_the_score_columns_are_written(
    client: TestClient, scorer: Agent, store_engine: Engine
) -> None:
    later = datetime.now(UTC) + timedelta(days=3)
    add_scores(
        store_engine,
        [
            {
                "user_id": 1,
                "current_queue_type": OUTSTANDING,
                "is_active": False,
                "next_call_after": later,
            }
        ],
    )
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE user_call_scores SET total_attempts = 4,"
                " successful_calls = 1, last_outcome = 'call_back', last_call_at = now()"
            )
        )
        before = dict(conn.execute(text("SELECT * FROM user_call_scores")).one()._mapping)

    answer = put(client, scorer, {"user_id": 1, "current_score": 9, "base_score": 6})

    assert answer.json()["updated"] == 1
    with store_engine.connect() as conn:
        after = dict(conn.execute(text("SELECT * FROM user_call_scores")).one()._mapping)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"current_score", "base_score", "updated_at"}
    assert (after["current_score"], after["base_score"]) == (9, 6)


# -- row errors and malformed bodies ---------------------------------------------------------------


def test_bad_rows_are_reported_and_the_good_ones_applied(
    client: TestClient, scorer: Agent, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    answer = put(
        client,
        scorer,
        {"user_id": 1, "current_score": 5},
        {"user_id": 2, "current_score": 201},
        {"user_id": 3, "current_score": -1},
        {"user_id": 1, "current_score": 6},
        {"user_id": "4", "current_score": 1},
        {"user_id": 5.5, "current_score": 1},
        {"user_id": True, "current_score": 1},
        {"user_id": 6, "current_score": 1, "private_note_xyz": "Jane 07700 900123"},
        {"user_id": 7},
        {"user_id": 8, "current_score": 2.0},
        {"user_id": 9, "current_score": 3, "base_score": 2**31},
        {"current_score": 3},
        {"user_id": 0, "current_score": 3},
        {"user_id": 2**63, "current_score": 3},
        {"user_id": 10, "current_score": 0, "base_score": None},
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (2, 0, 0)
    bad_id = "user_id must be an integer from 1 to 9223372036854775807"
    bad_score = "current_score must be an integer from 0 to 200"
    duplicate = "duplicate user_id: an earlier row gives the same user"
    assert body["errors"] == [
        {"index": 1, "user_id": 2, "error": bad_score},
        {"index": 2, "user_id": 3, "error": bad_score},
        {"index": 3, "user_id": 1, "error": duplicate},
        {"index": 4, "user_id": None, "error": bad_id},
        {"index": 5, "user_id": None, "error": bad_id},
        {"index": 6, "user_id": None, "error": bad_id},
        {
            "index": 7,
            "user_id": 6,
            "error": "unknown field (allowed: user_id, current_score, base_score,"
            " outcome_penalty_score, time_penalty_score)",
        },
        {"index": 8, "user_id": 7, "error": "current_score is required"},
        {"index": 9, "user_id": 8, "error": bad_score},
        {
            "index": 10,
            "user_id": 9,
            "error": "base_score must be an integer from -2147483648 to 2147483647",
        },
        {"index": 11, "user_id": None, "error": "user_id is required"},
        {"index": 12, "user_id": None, "error": bad_id},
        {"index": 13, "user_id": None, "error": bad_id},
    ]
    assert "private_note_xyz" not in answer.text and "Jane" not in answer.text
    assert rows_of(store_engine, "current_score", "current_queue_type") == {
        1: (5, UNSIGNED),
        10: (0, None),
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="not-an-object"),
        pytest.param({}, id="no-scores"),
        pytest.param({"scores": "all of them"}, id="scores-not-a-list"),
        pytest.param({"scores": []}, id="no-rows"),
        pytest.param({"scores": [1, {"user_id": 1, "current_score": 1}]}, id="row-not-an-object"),
        pytest.param(
            {"scores": [{"user_id": 1, "current_score": 1}], "source": "x"}, id="unknown-key"
        ),
        pytest.param(
            {"scores": [{"user_id": n, "current_score": 1} for n in range(1, 10_002)]},
            id="10001-rows",
        ),
    ],
)
def test_a_malformed_or_oversized_body_is_422_and_writes_nothing(
    client: TestClient, scorer: Agent, store_engine: Engine, body: Any
) -> None:
    answer = client.put(SCORES, headers=scorer.auth, json=body)

    assert answer.status_code == 422, answer.text
    assert set(answer.json()) == {"error", "detail", "fields"}
    assert answer.json()["error"] == "ValidationError"
    assert rows_of(store_engine, "current_score") == {}


def test_a_huge_number_is_a_row_error(client: TestClient, scorer: Agent) -> None:
    """JSON's 1e400 is a float (infinity) to the parser: not an integer, so a row error."""
    answer = client.put(
        SCORES,
        headers={**scorer.auth, "Content-Type": "application/json"},
        content=b'{"scores": [{"user_id": 1e400, "current_score": 1},'
        b' {"user_id": 2, "current_score": 1e400}]}',
    )
    assert answer.status_code == 200
    assert [e["index"] for e in answer.json()["errors"]] == [0, 1]


def test_a_body_that_is_not_json_is_422(client: TestClient, scorer: Agent) -> None:
    answer = client.put(
        SCORES, headers={**scorer.auth, "Content-Type": "application/json"}, content=b"{scores"
    )
    assert answer.status_code == 422


def test_ten_thousand_rows_are_accepted(
    client: TestClient, scorer: Agent, store_engine: Engine
) -> None:
    rows = [{"user_id": n, "current_score": n % 201} for n in range(1, 10_001)]
    assert put(client, scorer, *rows).json()["created"] == 10_000
    assert len(rows_of(store_engine, "current_score")) == 10_000


def test_a_full_batch_with_every_component_fits_the_routes_own_cap(
    client: TestClient, scorer: Agent, store_engine: Engine, settings: Settings
) -> None:
    """10,000 rows with every score component and large ids are well over the default
    MAX_BODY_BYTES (1 MiB): the scores route has a cap of its own (SCORES_MAX_BODY_BYTES), so the
    contract's largest valid body is accepted, and a body over that cap is still a 413."""
    base = 9_000_000_000_000
    rows = [
        {
            "user_id": base + n,
            "current_score": n % 201,
            "base_score": n % 150,
            "outcome_penalty_score": n % 30,
            "time_penalty_score": n % 20,
        }
        for n in range(10_000)
    ]
    body = json.dumps({"scores": rows}, indent=2).encode()
    assert len(body) > 1024 * 1024
    answer = client.put(
        SCORES, headers={**scorer.auth, "Content-Type": "application/json"}, content=body
    )
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["created"] == 10_000
    assert len(rows_of(store_engine, "current_score")) == 10_000

    huge = client.put(
        SCORES,
        headers={**scorer.auth, "Content-Type": "application/json"},
        content=b" " * (settings.scores_max_body_bytes + 1),
    )
    assert huge.status_code == 413
    # Every other route keeps the default cap.
    other = client.put(
        "/api/admin/flags",
        headers={**scorer.auth, "Content-Type": "application/json"},
        content=b" " * (1024 * 1024 + 1),
    )
    assert other.status_code == 413


def test_agents_may_not_and_supervisors_may(
    client: TestClient, store_engine: Engine, replica: Replica
) -> None:
    agent = new_agent(store_engine, "caller")
    supervisor = new_agent(store_engine, "boss", "supervisor")
    row = {"user_id": 1, "current_score": 3}

    refused = put(client, agent, row)
    assert refused.status_code == 403
    assert refused.json()["error"] == "Forbidden"
    assert rows_of(store_engine, "current_score") == {}
    assert put(client, supervisor, row).json()["created"] == 1


def test_new_rows_wait_for_a_replica_that_does_not_answer(
    make_client: Callable[..., TestClient], scorer: Agent, store_engine: Engine
) -> None:
    client = make_client(replica_database_url="postgresql://postgres@127.0.0.1:1/replica")
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": UNSIGNED}])

    refused = put(
        client, scorer, {"user_id": 1, "current_score": 4}, {"user_id": 2, "current_score": 4}
    )
    assert refused.status_code == 503
    assert refused.json()["error"] == "ReplicaUnavailable"
    assert rows_of(store_engine, "current_score") == {1: (0,)}
    # Existing rows need no classification: they go in whatever the replica does.
    assert put(client, scorer, {"user_id": 1, "current_score": 4}).json()["updated"] == 1


# -- a scorer's write and an outcome on the same user, at the same time -------------------------


def wait_for_lock_waiters(store: Engine, n: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with store.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{n} lock waiters expected")


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    return thread, out


@pytest.mark.parametrize("first", ["outcome", "upsert"])
def test_a_concurrent_outcome_and_score_upsert_both_survive(
    client: TestClient,
    scorer: Agent,
    replica: Replica,
    store_engine: Engine,
    cron_headers: dict[str, str],
    first: str,
) -> None:
    """The score row is held by a third transaction while an agent completes a call with
    ``not_interested`` (+100) and the scorer sets ``current_score`` 3 and ``base_score`` 2; both
    queue on the row in the order given, then the row is let go."""
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": UNSIGNED, "current_score": 10}])
    assert client.get(POPULATE, headers=cron_headers).status_code == 200
    agent = new_agent(store_engine, "caller")
    assignment = client.post(f"/api/queues/{UNSIGNED}/next-user", headers=agent.auth).json()

    def outcome() -> Any:
        return client.post(
            f"/api/assignments/{assignment['assignment_id']}/complete",
            headers=agent.auth,
            json={"outcome": "not_interested"},
        )

    def upsert() -> Any:
        return put(client, scorer, {"user_id": 1, "current_score": 3, "base_score": 2})

    works = {"outcome": outcome, "upsert": upsert}
    order = [first, "upsert" if first == "outcome" else "outcome"]
    with store_engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM user_call_scores WHERE user_id = 1 FOR UPDATE"))
        started = []
        for n, name in enumerate(order, start=1):
            started.append(in_thread(works[name]))
            wait_for_lock_waiters(store_engine, n)
        holder.rollback()
    for thread, _ in started:
        thread.join(timeout=30)
    answers = dict(zip(order, (out[0] for _, out in started), strict=True))
    assert answers["outcome"].status_code == 200, answers["outcome"].text
    assert answers["upsert"].status_code == 200, answers["upsert"].text

    row = rows_of(
        store_engine,
        "current_score",
        "base_score",
        "total_attempts",
        "last_outcome",
        "next_call_after IS NOT NULL",
    )[1]
    if first == "upsert":
        # The scorer's 3 is the base; the outcome's +100 lands on top of it.
        assert row == (103, 2, 1, "not_interested", True)
        assert answers["outcome"].json()["score"]["current_score"] == 103
    else:
        # The outcome made it 110; the scorer's write, applied after it, sets 3 as given
        # (SPEC 8.1); the outcome's counters and next_call_after stand.
        assert row == (3, 2, 1, "not_interested", True)
        assert answers["upsert"].json() == {
            "created": 0,
            "updated": 1,
            "unchanged": 0,
            "errors": [],
        }


def test_rows_created_meanwhile_by_another_writer_are_not_lost(store_engine: Engine) -> None:
    """New rows go in with COPY; when another writer created one of them between the check and
    the write, the COPY's savepoint is rolled back and the others are inserted one by one."""
    add_scores(store_engine, [{"user_id": 2, "current_score": 77}])
    with store_engine.begin() as conn:
        created = create_rows(conn, [1, 2, 3], [UNSIGNED, None, OUTSTANDING])
        assert created == {1, 3}
    assert rows_of(store_engine, "current_score", "current_queue_type") == {
        1: (0, UNSIGNED),
        2: (77, None),
        3: (0, OUTSTANDING),
    }
    with store_engine.begin() as conn:
        assert create_rows(conn, [4, 5], [None, UNSIGNED]) == {4, 5}
    assert len(rows_of(store_engine, "current_score")) == 5
