"""The scheduler's routes (SPEC 4.1): the population report on GET, the health check on POST."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.factories import Replica, add_scores

PATH = "/api/cron/populate-separated-queues"
UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"
QUEUE_KEYS = {
    "status",
    "eligible",
    "invalid",
    "populated",
    "removed",
    "kept_assigned",
    "duration_ms",
    "error",
}
HEALTH_QUEUE_KEYS = {
    "pending",
    "assigned",
    "total",
    "oldest_pending_at",
    "last_populated_at",
    "callbacks",
}
NO_CALLBACKS = {"scheduled": 0, "due": 0, "overdue": 0, "assigned": 0, "late": 0}
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def ts(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no offset"
    return parsed


def book(replica: Replica, store: Engine) -> None:
    """Two unsigned leads, one outstanding, and one filed as outstanding who is owed nothing."""
    replica.unsigned(1)
    replica.unsigned(2)
    replica.outstanding(11, "proof_of_address")
    replica.user(12, signed=True)
    replica.claim(12)
    add_scores(
        store,
        [
            {"user_id": 1, "current_queue_type": UNSIGNED},
            {"user_id": 2, "current_queue_type": UNSIGNED, "current_score": 3},
            {"user_id": 11, "current_queue_type": OUTSTANDING},
            {"user_id": 12, "current_queue_type": OUTSTANDING},
        ],
    )


def table_count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-secret-0123456789abcdef-XYZ", "Basic {secret}"],
    ids=["missing", "wrong-bearer", "wrong-scheme"],
)
def test_without_the_cron_secret_the_answer_is_401(
    method: str,
    authorization: str | None,
    client: TestClient,
    cron_headers: dict[str, str],
    store_engine: Engine,
) -> None:
    secret = cron_headers["Authorization"].removeprefix("Bearer ")
    headers = {"Authorization": authorization.format(secret=secret)} if authorization else {}

    response = client.request(method, PATH, headers=headers)

    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "Unauthorized"
    assert isinstance(body["detail"], str) and body["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert secret not in response.text
    assert "wrong-secret" not in response.text
    assert table_count(store_engine, "SELECT count(*) FROM population_runs") == 0


# -- query validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"), [("queue=nope", "queue"), ("dry_run=maybe", "dry_run")]
)
def test_a_bad_query_parameter_is_a_422_naming_the_field(
    query: str, field: str, client: TestClient, cron_headers: dict[str, str], store_engine: Engine
) -> None:
    response = client.get(f"{PATH}?{query}", headers=cron_headers)

    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error", "detail", "fields"}
    assert body["error"] == "ValidationError"
    assert isinstance(body["detail"], str) and body["detail"]
    assert len(body["fields"]) == 1
    assert set(body["fields"][0]) == {"loc", "msg"}
    assert body["fields"][0]["loc"] == ["query", field]
    assert isinstance(body["fields"][0]["msg"], str) and body["fields"][0]["msg"]
    assert query.split("=")[1] not in response.text  # the input is never echoed
    assert table_count(store_engine, "SELECT count(*) FROM population_runs") == 0


# -- the population report ----------------------------------------------------------------------


def test_get_runs_both_queues_and_reports_every_figure(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)
    client = make_client(population_interval_minutes=45)

    response = client.get(PATH, headers=cron_headers)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "success",
        "run_id",
        "started_at",
        "finished_at",
        "duration_ms",
        "next_run_at",
        "queues",
    }
    assert body["success"] is True
    started, finished = ts(body["started_at"]), ts(body["finished_at"])
    assert started <= finished
    assert ts(body["next_run_at"]) - started == timedelta(minutes=45)
    assert isinstance(body["duration_ms"], int) and body["duration_ms"] >= 0
    assert set(body["queues"]) == {UNSIGNED, OUTSTANDING}
    for figures in body["queues"].values():
        assert set(figures) == QUEUE_KEYS
        assert all(isinstance(figures[k], int) for k in QUEUE_KEYS - {"status", "error"})
    strip = {"duration_ms": 0}
    assert body["queues"][UNSIGNED] | strip == {
        "status": "succeeded",
        "eligible": 2,
        "invalid": 0,
        "populated": 2,
        "removed": 0,
        "kept_assigned": 0,
        "duration_ms": 0,
        "error": None,
    }
    assert body["queues"][OUTSTANDING] | strip == {
        "status": "succeeded",
        "eligible": 2,
        "invalid": 1,
        "populated": 1,
        "removed": 0,
        "kept_assigned": 0,
        "duration_ms": 0,
        "error": None,
    }
    with store_engine.connect() as conn:
        run = conn.execute(
            text("SELECT status, dry_run, started_at FROM population_runs WHERE id = :id"),
            {"id": body["run_id"]},
        ).one()
    assert (run.status, run.dry_run) == ("succeeded", False)
    assert run.started_at == started

    again = client.get(PATH, headers=cron_headers).json()
    assert (again["queues"][UNSIGNED]["removed"], again["queues"][UNSIGNED]["populated"]) == (2, 2)


def test_default_schedule_interval_is_an_hour(
    client: TestClient, cron_headers: dict[str, str]
) -> None:
    body = client.get(PATH, headers=cron_headers).json()
    assert ts(body["next_run_at"]) - ts(body["started_at"]) == timedelta(minutes=60)


def test_one_queue_only_reports_the_other_skipped(
    client: TestClient, cron_headers: dict[str, str], replica: Replica, store_engine: Engine
) -> None:
    book(replica, store_engine)

    response = client.get(f"{PATH}?queue=unsigned_users", headers=cron_headers)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["queues"][UNSIGNED]["status"] == "succeeded"
    assert body["queues"][UNSIGNED]["populated"] == 2
    assert body["queues"][OUTSTANDING] == {
        "status": "skipped",
        "eligible": 0,
        "invalid": 0,
        "populated": 0,
        "removed": 0,
        "kept_assigned": 0,
        "duration_ms": 0,
        "error": None,
    }
    assert table_count(store_engine, "SELECT count(*) FROM unsigned_users_queue") == 2
    assert table_count(store_engine, "SELECT count(*) FROM outstanding_requests_queue") == 0
    # The skipped queue's lead was not walked, so not reclassified either.
    assert (
        table_count(
            store_engine,
            "SELECT count(*) FROM user_call_scores"
            " WHERE user_id = 12 AND current_queue_type = 'outstanding_requests'",
        )
        == 1
    )


def test_dry_run_reports_the_figures_and_writes_nothing(
    client: TestClient, cron_headers: dict[str, str], replica: Replica, store_engine: Engine
) -> None:
    book(replica, store_engine)
    replica.unsigned(21)  # a lead with no queue type, which a real run's re-check would move
    add_scores(store_engine, [{"user_id": 21}])
    with store_engine.connect() as conn:
        scores_before = conn.execute(text("SELECT * FROM user_call_scores ORDER BY user_id")).all()

    response = client.get(f"{PATH}?dry_run=true", headers=cron_headers)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    populated = {q: body["queues"][q]["populated"] for q in (UNSIGNED, OUTSTANDING)}
    assert populated == {UNSIGNED: 2, OUTSTANDING: 1}
    assert body["queues"][OUTSTANDING]["invalid"] == 1
    for table in (
        "unsigned_users_queue",
        "outstanding_requests_queue",
        "queue_transitions",
        "assignments",
    ):
        assert table_count(store_engine, f"SELECT count(*) FROM {table}") == 0, table
    with store_engine.connect() as conn:
        assert (
            conn.execute(text("SELECT * FROM user_call_scores ORDER BY user_id")).all()
            == scores_before
        )
        run = conn.execute(text("SELECT id, status, dry_run FROM population_runs")).one()
    assert (str(run.id), run.status, run.dry_run) == (body["run_id"], "succeeded", True)


def test_with_separated_queues_off_both_queues_are_skipped(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)
    client = make_client(use_separated_queues=False)

    body = client.get(PATH, headers=cron_headers).json()

    assert body["success"] is True
    assert {q["status"] for q in body["queues"].values()} == {"skipped"}
    assert table_count(store_engine, "SELECT count(*) FROM unsigned_users_queue") == 0
    assert table_count(store_engine, "SELECT count(*) FROM queue_transitions") == 0


# -- the health check ---------------------------------------------------------------------------


def health(client: TestClient, cron_headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = client.post(PATH, headers=cron_headers)
    body = response.json()
    assert set(body) == {
        "status",
        "checked_at",
        "issues",
        "database",
        "replica",
        "flags",
        "queues",
        "last_run",
    }
    ts(body["checked_at"])
    assert all(isinstance(issue, str) for issue in body["issues"])
    return response.status_code, body


def test_health_is_unhealthy_before_any_population(
    client: TestClient, cron_headers: dict[str, str]
) -> None:
    status, body = health(client, cron_headers)

    assert status == 503
    assert body["status"] == "unhealthy"
    assert (body["database"], body["replica"]) == ("ok", "ok")
    assert body["last_run"] is None
    assert any(UNSIGNED in i and "never" in i for i in body["issues"])
    assert any(OUTSTANDING in i and "never" in i for i in body["issues"])
    for q in body["queues"].values():
        assert q == {
            "pending": 0,
            "assigned": 0,
            "total": 0,
            "oldest_pending_at": None,
            "last_populated_at": None,
            "callbacks": NO_CALLBACKS,
        }


def test_health_is_healthy_after_a_successful_population(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)
    client = make_client(queue_low_watermark=1)
    run = client.get(PATH, headers=cron_headers).json()

    status, body = health(client, cron_headers)

    assert (status, body["status"], body["issues"]) == (200, "healthy", [])
    assert (body["database"], body["replica"]) == ("ok", "ok")
    assert body["flags"] == {
        "USE_SEPARATED_QUEUES": True,
        "USE_NEW_QUEUE_SERVICES": True,
        "MIGRATION_MODE": "new-only",
        "ENABLE_QUEUE_VALIDATION": True,
        "serving_mode": "queues",
    }
    unsigned, outstanding = body["queues"][UNSIGNED], body["queues"][OUTSTANDING]
    assert set(unsigned) == HEALTH_QUEUE_KEYS
    assert (unsigned["pending"], unsigned["assigned"], unsigned["total"]) == (2, 0, 2)
    assert (outstanding["pending"], outstanding["assigned"], outstanding["total"]) == (1, 0, 1)
    assert ts(unsigned["oldest_pending_at"]) == ts(run["started_at"])
    assert ts(unsigned["last_populated_at"]) <= ts(run["finished_at"])
    assert body["last_run"]["run_id"] == run["run_id"]
    assert body["last_run"]["status"] == "succeeded"


def test_health_is_degraded_when_a_queue_is_below_the_watermark(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)  # 2 unsigned pending, 1 outstanding pending
    client = make_client(queue_low_watermark=2)
    client.get(PATH, headers=cron_headers)

    status, body = health(client, cron_headers)

    assert (status, body["status"]) == (200, "degraded")
    assert len(body["issues"]) == 1
    assert OUTSTANDING in body["issues"][0]
    assert "1" in body["issues"][0] and "2" in body["issues"][0]


def test_health_is_unhealthy_after_the_last_population_of_a_queue_failed(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
    fault_trigger: Callable[[str], None],
) -> None:
    book(replica, store_engine)
    client = make_client(queue_low_watermark=1)
    assert client.get(PATH, headers=cron_headers).status_code == 200
    fault_trigger("outstanding_requests_queue")
    failed = client.get(PATH, headers=cron_headers)
    assert failed.status_code == 500

    status, body = health(client, cron_headers)

    assert (status, body["status"]) == (503, "unhealthy")
    assert len(body["issues"]) == 1
    assert OUTSTANDING in body["issues"][0] and "failed" in body["issues"][0]
    assert body["last_run"]["status"] == "failed"
    assert body["queues"][OUTSTANDING]["pending"] == 1  # the old snapshot still serves


@pytest.mark.parametrize(
    ("age_minutes", "expected"), [(119, (200, "healthy")), (121, (503, "unhealthy"))]
)
def test_health_is_unhealthy_when_the_last_success_is_older_than_twice_the_interval(
    age_minutes: int,
    expected: tuple[int, str],
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)
    client = make_client(queue_low_watermark=1)
    client.get(PATH, headers=cron_headers)
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE population_run_queues SET finished_at = now() - make_interval(mins => :age)"
            ),
            {"age": age_minutes},
        )

    status, body = health(client, cron_headers)

    assert (status, body["status"]) == expected
    if expected[1] == "unhealthy":
        assert len(body["issues"]) == 2
        assert {q for q in (UNSIGNED, OUTSTANDING) for i in body["issues"] if q in i} == {
            UNSIGNED,
            OUTSTANDING,
        }
    else:
        assert body["issues"] == []


def test_health_is_degraded_when_the_replica_is_unreachable(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)
    assert make_client().get(PATH, headers=cron_headers).status_code == 200
    client = make_client(replica_database_url=UNREACHABLE, queue_low_watermark=1)

    status, body = health(client, cron_headers)

    assert (status, body["status"]) == (200, "degraded")
    assert (body["database"], body["replica"]) == ("ok", "error")
    assert len(body["issues"]) == 1
    assert "replica" in body["issues"][0]
    assert "nowhere" not in str(body)  # no connection details leak


def test_health_is_unhealthy_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient], cron_headers: dict[str, str]
) -> None:
    client = make_client(database_url=UNREACHABLE)

    status, body = health(client, cron_headers)

    assert (status, body["status"]) == (503, "unhealthy")
    assert (body["database"], body["replica"]) == ("error", "ok")
    assert len(body["issues"]) == 1
    assert "database" in body["issues"][0]
    assert "nowhere" not in str(body)


def test_health_expects_no_population_while_separated_queues_are_off(
    make_client: Callable[..., TestClient], cron_headers: dict[str, str]
) -> None:
    client = make_client(use_separated_queues=False)

    status, body = health(client, cron_headers)

    assert status == 200
    assert body["status"] != "unhealthy"
    assert not [i for i in body["issues"] if "populat" in i]
    assert body["flags"]["USE_SEPARATED_QUEUES"] is False
    assert body["flags"]["serving_mode"] == "direct"


def test_dry_runs_do_not_count_as_successes_for_health(
    make_client: Callable[..., TestClient],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    book(replica, store_engine)
    client = make_client(queue_low_watermark=0)
    assert client.get(f"{PATH}?dry_run=true", headers=cron_headers).status_code == 200

    status, body = health(client, cron_headers)

    assert (status, body["status"]) == (503, "unhealthy")
    assert body["last_run"] is None
    assert all(q["last_populated_at"] is None for q in body["queues"].values())
    assert len(body["issues"]) == 2
    assert all("never" in i for i in body["issues"])
