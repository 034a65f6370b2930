"""The agents' and supervisors' routes (SPEC 4.2, 4.3): status codes, error bodies, feature flags
at run time, the ledger and the current assignment."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth.people import deactivate_agent
from tests.conftest import CRON_SECRET
from tests.factories import Agent, Replica, add_scores, lapse, new_agent, own_phone

UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"
POPULATE = "/api/cron/populate-separated-queues"
FLAGS = "/api/admin/flags"
FLAG_NAMES = {
    "USE_SEPARATED_QUEUES",
    "USE_NEW_QUEUE_SERVICES",
    "MIGRATION_MODE",
    "ENABLE_QUEUE_VALIDATION",
}
DEFAULT_FLAGS = {
    "USE_SEPARATED_QUEUES": True,
    "USE_NEW_QUEUE_SERVICES": True,
    "MIGRATION_MODE": "new-only",
    "ENABLE_QUEUE_VALIDATION": True,
    "serving_mode": "queues",
}
PERSONAL = ("phone_number", "email_address", "first_name", "last_name", "notes", "user")


def book(
    client: TestClient,
    store: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    unsigned: tuple[int, ...] = (1, 2),
    outstanding: tuple[int, ...] = (),
) -> None:
    for uid in unsigned:
        replica.unsigned(uid)
    for uid in outstanding:
        replica.outstanding(uid)
    add_scores(
        store,
        [{"user_id": u, "current_queue_type": UNSIGNED} for u in unsigned]
        + [{"user_id": u, "current_queue_type": OUTSTANDING} for u in outstanding],
    )
    pop = client.get(POPULATE, headers=cron_headers)
    assert pop.status_code == 200, pop.text


def claim(client: TestClient, agent: Agent, queue: str = UNSIGNED) -> dict[str, Any]:
    got = client.post(f"/api/queues/{queue}/next-user", headers=agent.auth)
    assert got.status_code == 200, got.text
    return dict(got.json())


def fetch_all(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def ledger_row(engine: Engine, assignment_id: str) -> dict[str, Any]:
    [row] = fetch_all(
        engine, "SELECT * FROM assignments WHERE id = CAST(:i AS uuid)", i=assignment_id
    )
    return row


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Everything an action could write."""
    return {
        table: fetch_all(engine, f"SELECT * FROM {table} ORDER BY 1")
        for table in (
            "assignments",
            "user_call_scores",
            "unsigned_users_queue",
            "outstanding_requests_queue",
            "queue_transitions",
            "feature_flags",
            "feature_flag_changes",
        )
    }


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    if status == 422:
        assert set(body) == {"error", "detail", "fields"}
        assert body["fields"]
        for f in body["fields"]:
            assert set(f) == {"loc", "msg"}
            assert isinstance(f["loc"], list) and isinstance(f["msg"], str)
    else:
        assert set(body) == {"error", "detail"}, body
    return body


# -- 401 ---------------------------------------------------------------------------------------

SOME_ID = str(uuid.uuid4())
AGENT_ROUTES = [
    ("POST", f"/api/queues/{UNSIGNED}/next-user", None),
    ("POST", f"/api/queues/{OUTSTANDING}/next-user", None),
    ("GET", "/api/assignments/current", None),
    ("POST", f"/api/assignments/{SOME_ID}/extend", None),
    ("POST", f"/api/assignments/{SOME_ID}/release", {"requeue": True}),
    ("POST", f"/api/assignments/{SOME_ID}/complete", {"outcome": "no_answer"}),
]
SUPERVISOR_ROUTES = [
    ("GET", FLAGS, None),
    ("PUT", FLAGS, {"MIGRATION_MODE": "dual"}),
    ("GET", "/api/assignments", None),
    ("POST", f"/api/admin/assignments/{SOME_ID}/release", None),
]


def _call(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


def test_missing_unknown_or_malformed_token_is_401(
    client: TestClient, store_engine: Engine
) -> None:
    new_agent(store_engine, "alice")
    bad_headers = [
        {},
        {"Authorization": "Bearer cq_not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "cq_no_scheme"},
        {"Authorization": f"Bearer {CRON_SECRET}"},  # the cron secret is not an agent token
    ]
    for method, path, body in AGENT_ROUTES + SUPERVISOR_ROUTES:
        for headers in bad_headers:
            response = _call(client, method, path, body, headers)
            assert_error(response, 401, "Unauthorized")
            assert response.headers.get("www-authenticate") == "Bearer", (method, path)
            assert "cq_not-a-real-token" not in response.text
    assert fetch_all(store_engine, "SELECT * FROM feature_flags") == []


def test_deactivated_agent_is_401(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    held = claim(client, alice)
    assert client.get(FLAGS, headers=boss.auth).status_code == 200
    with store_engine.begin() as conn:
        deactivate_agent(conn, "alice")
        deactivate_agent(conn, "boss")
    before = snapshot(store_engine)
    for method, path, body in AGENT_ROUTES:
        assert_error(_call(client, method, path, body, alice.auth), 401, "Unauthorized")
    for action, body in (("extend", None), ("release", None), ("complete", {"outcome": "hung_up"})):
        response = client.post(
            f"/api/assignments/{held['assignment_id']}/{action}", json=body, headers=alice.auth
        )
        assert_error(response, 401, "Unauthorized")
    for method, path, body in SUPERVISOR_ROUTES:
        assert_error(_call(client, method, path, body, boss.auth), 401, "Unauthorized")
    assert snapshot(store_engine) == before


# -- 403 ---------------------------------------------------------------------------------------


def test_agents_get_403_on_supervisor_routes(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice = new_agent(store_engine, "alice")
    held = claim(client, alice)
    before = snapshot(store_engine)
    routes = [
        *SUPERVISOR_ROUTES,
        ("PUT", FLAGS, {"USE_SEPARATED_QUEUES": False}),
        ("GET", f"/api/assignments?agent_id={alice.id}", None),
        # Even on her own assignment, an agent cannot use the forced release.
        ("POST", f"/api/admin/assignments/{held['assignment_id']}/release", None),
    ]
    for method, path, body in routes:
        assert_error(_call(client, method, path, body, alice.auth), 403, "Forbidden")
    assert snapshot(store_engine) == before
    assert ledger_row(store_engine, held["assignment_id"])["status"] == "active"


def test_supervisors_may_work_calls_too(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    boss = new_agent(store_engine, "boss", "supervisor")
    held = claim(client, boss)
    done = client.post(
        f"/api/assignments/{held['assignment_id']}/complete",
        json={"outcome": "no_answer"},
        headers=boss.auth,
    )
    assert done.status_code == 200, done.text


# -- 404 ---------------------------------------------------------------------------------------


def test_unknown_queue_type_is_404(client: TestClient, store_engine: Engine) -> None:
    alice = new_agent(store_engine, "alice")
    for queue in ("legacy", "UNSIGNED_USERS", "unsigned-users", "unsigned_users_queue", "all"):
        response = client.post(f"/api/queues/{queue}/next-user", headers=alice.auth)
        assert_error(response, 404, "NotFound")
        assert queue not in response.text
    assert fetch_all(store_engine, "SELECT * FROM assignments") == []


def test_another_agents_assignment_is_404_and_untouched(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice, bob = new_agent(store_engine, "alice"), new_agent(store_engine, "bob")
    held = claim(client, alice)
    before = snapshot(store_engine)
    path = f"/api/assignments/{held['assignment_id']}"
    for action, body in (
        ("extend", None),
        ("release", {"requeue": False}),
        ("complete", {"outcome": "do_not_contact"}),
    ):
        response = client.post(f"{path}/{action}", json=body, headers=bob.auth)
        assert_error(response, 404, "NotFound")
        # Indistinguishable from an id that does not exist: ids cannot be probed.
        unknown = client.post(
            f"/api/assignments/{uuid.uuid4()}/{action}", json=body, headers=bob.auth
        )
        assert_error(unknown, 404, "NotFound")
        assert unknown.json() == response.json()
    assert snapshot(store_engine) == before
    # Bob's own current assignment is not Alice's.
    assert client.get("/api/assignments/current", headers=bob.auth).status_code == 204


def test_forced_release_of_unknown_assignment_is_404(
    client: TestClient, store_engine: Engine
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    response = client.post(f"/api/admin/assignments/{uuid.uuid4()}/release", headers=boss.auth)
    assert_error(response, 404, "NotFound")


# -- 409 ---------------------------------------------------------------------------------------


def test_actions_on_a_completed_assignment_are_409_and_change_nothing(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    held = claim(client, alice)
    path = f"/api/assignments/{held['assignment_id']}"
    assert (
        client.post(
            f"{path}/complete", json={"outcome": "no_answer"}, headers=alice.auth
        ).status_code
        == 200
    )
    before = snapshot(store_engine)
    for action, body in (
        ("extend", None),
        ("release", {"requeue": True}),
        ("release", {"requeue": False}),
        ("complete", {"outcome": "no_answer"}),
        ("complete", {"outcome": "do_not_contact"}),
    ):
        response = client.post(f"{path}/{action}", json=body, headers=alice.auth)
        assert_error(response, 409, "Conflict")
    forced = client.post(
        f"/api/admin/assignments/{held['assignment_id']}/release", headers=boss.auth
    )
    assert_error(forced, 409, "Conflict")
    assert snapshot(store_engine) == before
    row = fetch_all(store_engine, "SELECT * FROM user_call_scores WHERE user_id = 1")[0]
    assert (row["total_attempts"], row["is_active"]) == (1, True)


def test_next_user_in_the_other_queue_is_409(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,), (11,))
    alice = new_agent(store_engine, "alice")
    claim(client, alice, UNSIGNED)
    before = snapshot(store_engine)
    assert_error(
        client.post(f"/api/queues/{OUTSTANDING}/next-user", headers=alice.auth), 409, "Conflict"
    )
    assert snapshot(store_engine) == before


# -- 422 ---------------------------------------------------------------------------------------


def test_malformed_assignment_id_is_422(client: TestClient, store_engine: Engine) -> None:
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    for bad_id in ("not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"):
        calls = [
            (f"/api/assignments/{bad_id}/extend", None, alice),
            (f"/api/assignments/{bad_id}/release", {"requeue": True}, alice),
            (f"/api/assignments/{bad_id}/complete", {"outcome": "no_answer"}, alice),
            (f"/api/admin/assignments/{bad_id}/release", None, boss),
        ]
        for path, body, who in calls:
            response = client.post(path, json=body, headers=who.auth)
            payload = assert_error(response, 422, "ValidationError")
            assert any("assignment_id" in f["loc"] for f in payload["fields"]), payload
            assert bad_id not in response.text


def test_bad_release_bodies_are_422_and_change_nothing(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice = new_agent(store_engine, "alice")
    held = claim(client, alice)
    before = snapshot(store_engine)
    for body in (
        {"requeue": "yes"},
        {"requeue": "false"},
        {"requeue": 0},
        {"requeue": None},
        {"reason": "R" * 501},
        {"requeue": True, "cooldown": 0},
        ["requeue"],
    ):
        response = client.post(
            f"/api/assignments/{held['assignment_id']}/release", json=body, headers=alice.auth
        )
        assert_error(response, 422, "ValidationError")
        assert "R" * 501 not in response.text
    assert snapshot(store_engine) == before


# -- feature flags -----------------------------------------------------------------------------


def test_flags_default_from_the_environment(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    client = make_client(migration_mode="dual", enable_queue_validation=False)
    boss = new_agent(store_engine, "boss", "supervisor")
    response = client.get(FLAGS, headers=boss.auth)
    assert response.status_code == 200, response.text
    assert response.json() == {
        **DEFAULT_FLAGS,
        "MIGRATION_MODE": "dual",
        "ENABLE_QUEUE_VALIDATION": False,
        "serving_mode": "dual",
    }


def test_put_flags_changes_a_subset_and_audits_each_change(
    client: TestClient, store_engine: Engine
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    assert client.get(FLAGS, headers=boss.auth).json() == DEFAULT_FLAGS

    response = client.put(FLAGS, json={"MIGRATION_MODE": "dual"}, headers=boss.auth)
    assert response.status_code == 200, response.text
    assert response.json() == {**DEFAULT_FLAGS, "MIGRATION_MODE": "dual", "serving_mode": "dual"}

    response = client.put(
        FLAGS,
        json={"USE_NEW_QUEUE_SERVICES": False, "ENABLE_QUEUE_VALIDATION": False},
        headers=boss.auth,
    )
    assert response.status_code == 200, response.text
    expected = {
        **DEFAULT_FLAGS,
        "MIGRATION_MODE": "dual",
        "USE_NEW_QUEUE_SERVICES": False,
        "ENABLE_QUEUE_VALIDATION": False,
        "serving_mode": "direct",
    }
    assert response.json() == expected
    assert client.get(FLAGS, headers=boss.auth).json() == expected

    # Setting a flag to the value in force is not a change.
    same = client.put(FLAGS, json={"MIGRATION_MODE": "dual"}, headers=boss.auth)
    assert same.status_code == 200 and same.json() == expected
    # An empty object changes nothing and answers the flags in force.
    assert client.put(FLAGS, json={}, headers=boss.auth).json() == expected

    response = client.put(
        FLAGS,
        json={"USE_NEW_QUEUE_SERVICES": True, "MIGRATION_MODE": "legacy-only"},
        headers=boss.auth,
    )
    assert response.json()["serving_mode"] == "direct"
    assert set(response.json()) == FLAG_NAMES | {"serving_mode"}

    changes = fetch_all(
        store_engine,
        "SELECT name, old_value, new_value, changed_by, changed_at FROM feature_flag_changes"
        " ORDER BY id",
    )
    audit = [(c["name"], c["old_value"], c["new_value"], c["changed_by"]) for c in changes]
    # One row per flag that changed, in request order (flags within one request in any order).
    assert audit[0] == ("MIGRATION_MODE", "new-only", "dual", boss.id)
    assert set(audit[1:3]) == {
        ("USE_NEW_QUEUE_SERVICES", "true", "false", boss.id),
        ("ENABLE_QUEUE_VALIDATION", "true", "false", boss.id),
    }
    assert set(audit[3:]) == {
        ("USE_NEW_QUEUE_SERVICES", "false", "true", boss.id),
        ("MIGRATION_MODE", "dual", "legacy-only", boss.id),
    }
    assert len(audit) == 5
    assert all(c["changed_at"] is not None for c in changes)


BAD_FLAG_BODIES: list[tuple[str, Any]] = [
    ("unknown-flag", {"USE_LEGACY_QUEUE": True}),
    ("wrong-case-name", {"migration_mode": "dual"}),
    ("yes-for-boolean", {"USE_SEPARATED_QUEUES": "yes"}),
    ("string-for-boolean", {"USE_SEPARATED_QUEUES": "false"}),
    ("number-for-boolean", {"ENABLE_QUEUE_VALIDATION": 0}),
    ("both-for-mode", {"MIGRATION_MODE": "both"}),
    ("mode-wrong-case", {"MIGRATION_MODE": "DUAL"}),
    ("boolean-for-mode", {"MIGRATION_MODE": True}),
    ("null-boolean", {"USE_NEW_QUEUE_SERVICES": None}),
    ("null-mode", {"MIGRATION_MODE": None}),
    ("valid-plus-invalid", {"MIGRATION_MODE": "dual", "USE_SEPARATED_QUEUES": "nope"}),
    ("valid-plus-unknown", {"MIGRATION_MODE": "dual", "SOMETHING_ELSE": 1}),
    ("valid-plus-null", {"USE_SEPARATED_QUEUES": False, "MIGRATION_MODE": None}),
    ("not-an-object", ["MIGRATION_MODE", "dual"]),
]


def test_bad_flag_changes_are_422_and_change_nothing(
    client: TestClient, store_engine: Engine
) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    for case, body in BAD_FLAG_BODIES:
        response = client.put(FLAGS, json=body, headers=boss.auth)
        assert response.status_code == 422, (case, response.text)
        assert_error(response, 422, "ValidationError")
        for value in ("both", "nope", "yes", "DUAL"):
            assert f'"{value}"' not in response.text, case
        assert fetch_all(store_engine, "SELECT * FROM feature_flags") == [], case
        assert fetch_all(store_engine, "SELECT * FROM feature_flag_changes") == [], case
    assert client.get(FLAGS, headers=boss.auth).json() == DEFAULT_FLAGS


def test_flag_change_reaches_another_instance_on_its_next_request(
    client: TestClient,
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    other = make_client()
    boss = new_agent(store_engine, "boss", "supervisor")
    alice = new_agent(store_engine, "alice")
    book(client, store_engine, replica, cron_headers, (1, 2))

    health = other.post(POPULATE, headers=cron_headers)
    assert health.json()["flags"] == DEFAULT_FLAGS
    first = claim(other, alice)
    assert first["source"] == "queue"
    done = other.post(
        f"/api/assignments/{first['assignment_id']}/complete",
        json={"outcome": "no_answer"},
        headers=alice.auth,
    )
    assert done.status_code == 200

    changed = client.put(
        FLAGS, json={"USE_NEW_QUEUE_SERVICES": False, "MIGRATION_MODE": "dual"}, headers=boss.auth
    )
    assert changed.status_code == 200, changed.text

    health = other.post(POPULATE, headers=cron_headers)
    assert health.json()["flags"] == {
        **DEFAULT_FLAGS,
        "USE_NEW_QUEUE_SERVICES": False,
        "MIGRATION_MODE": "dual",
        "serving_mode": "direct",
    }
    assert other.get(FLAGS, headers=boss.auth).json()["serving_mode"] == "direct"
    # And the other instance serves accordingly: straight from the scores.
    second = claim(other, alice)
    assert second["source"] == "direct"
    assert second["queue_entry_id"] is None
    assert second["user_id"] == 2

    # Switched back through the other instance, the first one follows.
    back = other.put(FLAGS, json={"USE_NEW_QUEUE_SERVICES": True}, headers=boss.auth)
    assert back.json()["serving_mode"] == "dual"
    assert client.post(POPULATE, headers=cron_headers).json()["flags"]["serving_mode"] == "dual"


def test_explicit_flag_setting_reaches_an_instance_with_another_default(
    client: TestClient,
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    """During a rolling deploy instances may start with different environment defaults; a
    supervisor's explicit value must still be in force everywhere."""
    other = make_client(migration_mode="dual")
    boss = new_agent(store_engine, "boss", "supervisor")
    assert other.get(FLAGS, headers=boss.auth).json()["MIGRATION_MODE"] == "dual"
    response = client.put(FLAGS, json={"MIGRATION_MODE": "new-only"}, headers=boss.auth)
    assert response.status_code == 200
    assert response.json()["MIGRATION_MODE"] == "new-only"
    assert other.post(POPULATE, headers=cron_headers).json()["flags"]["MIGRATION_MODE"] == (
        "new-only"
    )


# -- the ledger --------------------------------------------------------------------------------

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _insert_ledger(store: Engine, alice: Agent, bob: Agent) -> dict[str, str]:
    """Six hand-outs an hour apart, across agents, users, queues, sources and statuses."""
    rows = [
        ("r1", alice, 1, UNSIGNED, "queue", "completed", 0, "no_answer"),
        ("r2", bob, 2, UNSIGNED, "queue", "released", 1, None),
        ("r3", alice, 11, OUTSTANDING, "queue", "expired", 2, None),
        ("r4", bob, 1, UNSIGNED, "direct", "completed", 3, "call_back"),
        ("r5", alice, 12, OUTSTANDING, "direct", "active", 4, None),
        ("r6", bob, 2, UNSIGNED, "queue", "active", 5, None),
    ]
    ids: dict[str, str] = {}
    with store.begin() as conn:
        for key, agent, user_id, queue, source, status, hour, outcome in rows:
            at = T0 + timedelta(hours=hour)
            ids[key] = str(
                conn.execute(
                    text(
                        "INSERT INTO assignments (agent_id, user_id, queue_type, source,"
                        " priority_score, status, assigned_at, lease_expires_at, finished_at,"
                        " outcome, notes)"
                        " VALUES (:a, :u, :q, :s, 3, :st, :at, :lease, :fin, :o, :n) RETURNING id"
                    ),
                    {
                        "a": agent.id,
                        "u": user_id,
                        "q": queue,
                        "s": source,
                        "st": status,
                        "at": at,
                        "lease": at + timedelta(minutes=15),
                        "fin": None if status == "active" else at + timedelta(minutes=5),
                        "o": outcome,
                        "n": f"private note {key}",
                    },
                ).scalar_one()
            )
    return ids


LEDGER_KEYS = {
    "assignment_id",
    "agent_id",
    "agent_name",
    "user_id",
    "queue_type",
    "source",
    "queue_entry_id",
    "callback_id",
    "claim_id",
    "status",
    "assigned_at",
    "lease_expires_at",
    "finished_at",
    "outcome",
    "callback_at",
}


def test_ledger_filters_and_pagination(client: TestClient, store_engine: Engine) -> None:
    alice, bob = new_agent(store_engine, "alice"), new_agent(store_engine, "bob")
    boss = new_agent(store_engine, "boss", "supervisor")
    ids = _insert_ledger(store_engine, alice, bob)
    name = {v: k for k, v in ids.items()}

    def page(**params: Any) -> tuple[list[str], int, dict[str, Any]]:
        response = client.get("/api/assignments", params=params, headers=boss.auth)
        assert response.status_code == 200, (params, response.text)
        body = response.json()
        return [name[i["assignment_id"]] for i in body["items"]], body["total"], body

    def iso(hours: float, tz: timezone = UTC) -> str:
        return (T0 + timedelta(hours=hours)).astimezone(tz).isoformat()

    items, total, body = page()
    assert (items, total) == (["r6", "r5", "r4", "r3", "r2", "r1"], 6)
    assert (body["limit"], body["offset"]) == (100, 0)
    for item in body["items"]:
        assert set(item) == LEDGER_KEYS
    r1 = next(i for i in body["items"] if name[i["assignment_id"]] == "r1")
    assert r1["agent_id"] == alice.id and r1["agent_name"] == "alice"
    assert (r1["user_id"], r1["queue_type"], r1["source"]) == (1, UNSIGNED, "queue")
    assert (r1["status"], r1["outcome"]) == ("completed", "no_answer")
    assert datetime.fromisoformat(r1["assigned_at"]) == T0
    assert "private note" not in client.get("/api/assignments", headers=boss.auth).text

    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"agent_id": alice.id}, ["r5", "r3", "r1"]),
        ({"agent_id": bob.id}, ["r6", "r4", "r2"]),
        ({"agent_id": boss.id}, []),
        ({"user_id": 1}, ["r4", "r1"]),
        ({"user_id": 999}, []),
        ({"queue_type": OUTSTANDING}, ["r5", "r3"]),
        ({"queue_type": UNSIGNED}, ["r6", "r4", "r2", "r1"]),
        ({"status": "active"}, ["r6", "r5"]),
        ({"status": "completed"}, ["r4", "r1"]),
        ({"status": "released"}, ["r2"]),
        ({"status": "expired"}, ["r3"]),
        ({"since": iso(2)}, ["r6", "r5", "r4", "r3"]),  # inclusive
        ({"until": iso(2)}, ["r2", "r1"]),  # exclusive
        ({"since": iso(1), "until": iso(4)}, ["r4", "r3", "r2"]),
        ({"since": iso(1.5, timezone(timedelta(hours=5, minutes=30)))}, ["r6", "r5", "r4", "r3"]),
        ({"until": iso(0.5, timezone(timedelta(hours=-8)))}, ["r1"]),
        ({"agent_id": bob.id, "status": "completed"}, ["r4"]),
        ({"agent_id": alice.id, "queue_type": UNSIGNED}, ["r1"]),
        ({"user_id": 2, "status": "active", "since": iso(5), "until": iso(6)}, ["r6"]),
    ]
    for params, expected in cases:
        got, total, _ = page(**params)
        assert (got, total) == (expected, len(expected)), params

    assert page(limit=2)[:2] == (["r6", "r5"], 6)
    assert page(limit=2, offset=2)[:2] == (["r4", "r3"], 6)
    assert page(limit=2, offset=4)[:2] == (["r2", "r1"], 6)
    assert page(limit=2, offset=6)[:2] == ([], 6)
    _, _, body = page(limit=2, offset=2)
    assert (body["limit"], body["offset"]) == (2, 2)
    assert page(agent_id=alice.id, limit=1, offset=1)[:2] == (["r3"], 3)
    assert page(limit=500)[1] == 6


def test_ledger_bad_filters_are_422(client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    for params in (
        {"status": "cancelled"},
        {"queue_type": "legacy"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"agent_id": "alice"},
        {"user_id": 0},
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
    ):
        response = client.get("/api/assignments", params=params, headers=boss.auth)
        payload = assert_error(response, 422, "ValidationError")
        [name] = params
        assert any(name in f["loc"] for f in payload["fields"]), (params, payload)


def test_ledger_never_shows_contact_details_or_notes(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1, 2))
    alice = new_agent(store_engine, "alice")
    boss = new_agent(store_engine, "boss", "supervisor")
    first = claim(client, alice)
    assert first["user"]["phone_number"] == own_phone(first["user_id"])
    client.post(
        f"/api/assignments/{first['assignment_id']}/complete",
        json={"outcome": "call_back", "notes": "wife answered, call after 6pm"},
        headers=alice.auth,
    )
    second = claim(client, alice)  # active, contact details in the agent's hands

    response = client.get("/api/assignments", headers=boss.auth)
    assert response.status_code == 200
    body = response.json()
    assert {i["assignment_id"] for i in body["items"]} == {
        first["assignment_id"],
        second["assignment_id"],
    }
    for item in body["items"]:
        assert set(item) == LEDGER_KEYS
        assert not set(item) & set(PERSONAL)
    for secret in (
        own_phone(1),
        own_phone(2),
        "user1@example.invalid",
        "user2@example.invalid",
        "User1",
        "User2",
        "wife answered",
    ):
        assert secret not in response.text


# -- the current assignment --------------------------------------------------------------------


def test_current_assignment(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers, (1,), (11,))
    alice, bob = new_agent(store_engine, "alice"), new_agent(store_engine, "bob")
    none = client.get("/api/assignments/current", headers=alice.auth)
    assert none.status_code == 204
    assert none.content == b""

    held = claim(client, alice, OUTSTANDING)
    response = client.get("/api/assignments/current", headers=alice.auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["assignment_id"] == held["assignment_id"]
    assert body["status"] == "active"
    assert body["queue_type"] == OUTSTANDING
    assert body["source"] == "queue"
    assert body["user_id"] == 11
    assert body["user"] == {
        "first_name": "Test",
        "last_name": "User11",
        "phone_number": own_phone(11),
        "email_address": "user11@example.invalid",
    }
    assert body["details"] == held["details"]
    assert body["details"]["requirement_types"] == ["proof_of_address"]
    assert body["details"]["pending_requirements"] == 1
    assert body["lease_expires_at"] == held["lease_expires_at"]
    assert body["outcome"] is None
    # Nobody else sees it as theirs.
    assert client.get("/api/assignments/current", headers=bob.auth).status_code == 204

    # A lapsed lease is no longer current, even before any sweep.
    lapse(store_engine, held["assignment_id"])
    assert client.get("/api/assignments/current", headers=alice.auth).status_code == 204

    # After completing the next one, nothing is current.
    nxt = claim(client, alice, UNSIGNED)
    assert (
        client.get("/api/assignments/current", headers=alice.auth).json()["assignment_id"]
        == (nxt["assignment_id"])
    )
    client.post(
        f"/api/assignments/{nxt['assignment_id']}/complete",
        json={"outcome": "no_answer"},
        headers=alice.auth,
    )
    assert client.get("/api/assignments/current", headers=alice.auth).status_code == 204
