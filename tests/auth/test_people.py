"""Managing people and API tokens (SPEC 8.2): who may do what to whom, allowed queues on
next-user, the audit of every change and sign-in (never a secret), and API tokens that are
named, owned, optionally expiring, listed without their secret and revocable."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.factories import Agent, Replica, add_scores, new_agent, signed_in

PEOPLE = "/api/admin/people"


@pytest.fixture
def boss(store_engine: Engine) -> Agent:
    return signed_in(store_engine, "boss@example.com", "supervisor")


@pytest.fixture
def root(store_engine: Engine) -> Agent:
    return signed_in(store_engine, "root@example.com", "admin")


def create(client: TestClient, who: Agent, email: str, role: str = "agent", **more: object):  # type: ignore[no-untyped-def]
    return client.post(PEOPLE, json={"email": email, "role": role, **more}, headers=who.auth)


def test_a_supervisor_adds_an_agent_and_gets_the_link_once(
    client: TestClient, boss: Agent, store_engine: Engine
) -> None:
    answer = create(client, boss, "Ann@Example.com", display_name="Ann")
    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    person = body["person"]
    assert (person["email"], person["display_name"], person["role"]) == (
        "Ann@Example.com",
        "Ann",
        "agent",
    )
    assert person["allowed_queues"] == ["unsigned_users", "outstanding_requests"]
    assert body["set_password_link"].startswith("https://testserver/auth/set-password?token=cqp_")
    # Listed, never with the link; the email is unique whatever its case.
    listed = client.get(PEOPLE, headers=boss.auth).json()["items"]
    assert "set_password_link" not in json.dumps(listed)
    assert create(client, boss, "ann@example.COM").status_code == 409


@pytest.mark.parametrize("role", ["supervisor", "admin", "scorer"])
def test_a_supervisor_cannot_raise_anyone_above_agent(
    client: TestClient, boss: Agent, store_engine: Engine, role: str
) -> None:
    assert create(client, boss, f"{role}@example.com", role).status_code == 403
    agent = create(client, boss, "plain@example.com").json()["person"]
    raised = client.patch(f"{PEOPLE}/{agent['id']}", json={"role": role}, headers=boss.auth)
    assert (raised.status_code, raised.json()["error"]) == (403, "Forbidden")
    with store_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT role FROM agents WHERE id = :id"), {"id": agent["id"]}
            ).scalar_one()
            == "agent"
        )


def test_a_supervisor_cannot_touch_a_supervisor_or_an_admin(
    client: TestClient, boss: Agent, root: Agent, store_engine: Engine
) -> None:
    peer = signed_in(store_engine, "peer@example.com", "supervisor")
    for target in (peer, root):
        for method, path, body in (
            ("PATCH", f"{PEOPLE}/{target.id}", {"display_name": "x"}),
            ("PATCH", f"{PEOPLE}/{target.id}", {"is_active": False}),
            ("POST", f"{PEOPLE}/{target.id}/reset-password", None),
            ("POST", f"{PEOPLE}/{target.id}/sign-out", None),
        ):
            answer = client.request(method, path, json=body, headers=boss.auth)
            assert answer.status_code == 403, (target.name, path, body)
    assert client.get("/api/me", headers=peer.auth).status_code == 200
    # Nor lower a supervisor to agent (that is touching one).
    lowered = client.patch(f"{PEOPLE}/{peer.id}", json={"role": "agent"}, headers=boss.auth)
    assert lowered.status_code == 403


def test_an_admin_manages_everyone_but_never_leaves_the_service_without_an_admin(
    client: TestClient, root: Agent, store_engine: Engine
) -> None:
    made = create(client, root, "sup@example.com", "supervisor").json()["person"]
    assert made["role"] == "supervisor"
    up = client.patch(f"{PEOPLE}/{made['id']}", json={"role": "admin"}, headers=root.auth)
    assert up.status_code == 200 and up.json()["role"] == "admin"
    # Two admins: one may step down; then the last may not, nor be deactivated.
    down = client.patch(f"{PEOPLE}/{root.id}", json={"role": "supervisor"}, headers=root.auth)
    assert down.status_code == 200
    other = new_agent(store_engine, "other-admin-token", "admin")  # a machine's admin token
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE agents SET is_active = false WHERE id = :id"), {"id": other.id})
    last = client.patch(f"{PEOPLE}/{made['id']}", json={"is_active": False}, headers=other.auth)
    assert last.status_code == 401  # a deactivated admin's token: nobody
    admin2 = signed_in_admin(store_engine)
    refused = client.patch(f"{PEOPLE}/{made['id']}", json={"role": "agent"}, headers=admin2.auth)
    assert refused.status_code == 200  # admin2 is another admin: fine
    refused = client.patch(f"{PEOPLE}/{admin2.id}", json={"is_active": False}, headers=admin2.auth)
    assert (refused.status_code, refused.json()["error"]) == (409, "Conflict")


def signed_in_admin(store: Engine) -> Agent:
    return signed_in(store, "second-admin@example.com", "admin")


@pytest.mark.parametrize(
    "body",
    [
        {"allowed_queues": []},
        {"allowed_queues": ["nowhere"]},
        {"role": "owner"},
        {"is_active": "yes"},
        {"display_name": ""},
        {"display_name": None},
        {"email": "x@example.com"},
    ],
)
def test_a_bad_change_is_422_and_changes_nothing(
    client: TestClient, boss: Agent, store_engine: Engine, body: dict[str, object]
) -> None:
    agent = create(client, boss, "ann@example.com").json()["person"]
    answer = client.patch(f"{PEOPLE}/{agent['id']}", json=body, headers=boss.auth)
    assert answer.status_code == 422, answer.text
    assert client.get(PEOPLE, headers=boss.auth).json()["items"][-1] == agent


def test_an_unknown_person_is_404(client: TestClient, root: Agent) -> None:
    for method, path in (
        ("PATCH", f"{PEOPLE}/99999"),
        ("POST", f"{PEOPLE}/99999/reset-password"),
        ("POST", f"{PEOPLE}/99999/sign-out"),
    ):
        body = {"display_name": "x"} if method == "PATCH" else None
        assert client.request(method, path, json=body, headers=root.auth).status_code == 404


# -- allowed queues ------------------------------------------------------------------------------


def test_next_user_outside_the_allowed_queues_is_403_by_token_and_by_session(
    client: TestClient,
    boss: Agent,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
) -> None:
    replica.unsigned(501)
    replica.outstanding(502)
    add_scores(
        store_engine,
        [
            {"user_id": 501, "current_queue_type": "unsigned_users"},
            {"user_id": 502, "current_queue_type": "outstanding_requests"},
        ],
    )
    assert client.get("/api/cron/populate-separated-queues", headers=cron_headers).is_success
    limited = signed_in(store_engine, "una@example.com", queues=("unsigned_users",))
    token = new_agent(store_engine, "una-token")
    client.patch(
        f"{PEOPLE}/{token.id}", json={"allowed_queues": ["unsigned_users"]}, headers=boss.auth
    )
    for who in (limited, token):
        refused = client.post("/api/queues/outstanding_requests/next-user", headers=who.auth)
        assert (refused.status_code, refused.json()["error"]) == (403, "QueueNotAllowed")
        assert client.get("/api/assignments/current", headers=who.auth).status_code == 204
    served = client.post("/api/queues/unsigned_users/next-user", headers=limited.auth)
    assert served.status_code == 200 and served.json()["user_id"] == 501
    # The person in the other queue is still waiting for someone allowed to call them.
    with store_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT status FROM outstanding_requests_queue WHERE user_id = 502")
            ).scalar_one()
            == "pending"
        )
    assert client.get("/api/me", headers=limited.auth).json()["allowed_queues"] == [
        "unsigned_users"
    ]


def test_the_agents_page_offers_only_the_allowed_queues(
    client: TestClient, store_engine: Engine
) -> None:
    limited = signed_in(store_engine, "una@example.com", queues=("outstanding_requests",))
    page = client.get("/console", headers=limited.auth).text
    assert 'value="outstanding_requests"' in page
    assert 'value="unsigned_users"' not in page


# -- the audit ---------------------------------------------------------------------------------


def test_every_change_and_sign_in_is_audited_with_who_when_and_where_and_no_secret(
    client: TestClient, boss: Agent, store_engine: Engine
) -> None:
    made = create(client, boss, "aud@example.com", display_name="Aud")
    pid = made.json()["person"]["id"]
    link = made.json()["set_password_link"]
    set_it = client.post(
        "/auth/set-password",
        json={"token": link.split("token=")[1], "password": "an audited passphrase"},
        follow_redirects=False,
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert set_it.status_code == 303
    client.cookies.clear()
    client.post("/auth/login", json={"email": "aud@example.com", "password": "wrong one!"})
    client.patch(f"{PEOPLE}/{pid}", json={"allowed_queues": ["unsigned_users"]}, headers=boss.auth)
    client.post(f"{PEOPLE}/{pid}/reset-password", headers=boss.auth)
    with store_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT action, actor_id, subject_id, address, details FROM auth_events"
                " WHERE subject_id = :id ORDER BY id"
            ),
            {"id": pid},
        ).all()
    actions = [r.action for r in rows]
    assert actions == [
        "person_created",
        "password_set",
        "signed_in",
        "sign_in_failed",
        "person_changed",
        "password_reset",
    ]
    by_action = {r.action: r for r in rows}
    assert by_action["person_created"].actor_id == boss.id
    assert by_action["person_changed"].details == {
        "allowed_queues": {
            "from": ["unsigned_users", "outstanding_requests"],
            "to": ["unsigned_users"],
        }
    }
    assert by_action["signed_in"].details == {"method": "password"}
    assert all(r.address == "testclient" for r in rows)
    audit = json.dumps([list(r) for r in rows], default=str)
    for secret in ("an audited passphrase", "wrong one!", link.split("token=")[1]):
        assert secret not in audit


# -- API tokens ----------------------------------------------------------------------------------


def test_an_admin_makes_lists_and_revokes_tokens_and_the_secret_is_shown_once(
    client: TestClient, root: Agent, store_engine: Engine, cron_headers: dict[str, str]
) -> None:
    scorer = create(client, root, "scorer@example.com", "scorer").json()["person"]
    made = client.post(
        "/api/admin/tokens",
        json={"name": "nightly scorer", "agent_id": scorer["id"]},
        headers=root.auth,
    )
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    secret = made.json()["token"]
    assert secret.startswith("cq_")
    assert made.json()["owner"] == "scorer@example.com"
    scores = {"scores": [{"user_id": 77, "current_score": 3}]}
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.put("/api/scores", json=scores, headers=bearer).status_code == 200
    listed = client.get("/api/admin/tokens", headers=root.auth)
    assert secret not in listed.text
    mine = [t for t in listed.json()["items"] if t["name"] == "nightly scorer"]
    assert mine and mine[0]["revoked_at"] is None and mine[0]["expires_at"] is None

    revoked = client.delete(f"/api/admin/tokens/{mine[0]['id']}", headers=root.auth)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.put("/api/scores", json=scores, headers=bearer).status_code == 401


def test_an_expiring_token_stops_at_its_time(
    client: TestClient, root: Agent, store_engine: Engine
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = client.post(
        "/api/admin/tokens",
        json={"name": "report", "agent_id": root.id, "expires_at": soon},
        headers=root.auth,
    )
    assert made.status_code == 201
    bearer = {"Authorization": f"Bearer {made.json()['token']}"}
    assert client.get("/api/me", headers=bearer).status_code == 200
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE api_tokens SET expires_at = now() - interval '1 second'"
                " WHERE name = 'report'"
            )
        )
    assert client.get("/api/me", headers=bearer).status_code == 401
    past = client.post(
        "/api/admin/tokens",
        json={"name": "late", "agent_id": root.id, "expires_at": "2020-01-01T00:00:00Z"},
        headers=root.auth,
    )
    assert past.status_code == 422
    nobody = client.post(
        "/api/admin/tokens", json={"name": "x", "agent_id": 99999}, headers=root.auth
    )
    assert nobody.status_code == 422


def test_me_says_who_and_how(client: TestClient, store_engine: Engine) -> None:
    ada = signed_in(store_engine, "ada@example.com", "supervisor")
    by_session = client.get("/api/me", headers=ada.auth).json()
    assert by_session == {
        "id": ada.id,
        "email": "ada@example.com",
        "display_name": "ada",
        "role": "supervisor",
        "allowed_queues": ["unsigned_users", "outstanding_requests"],
        "auth": "session",
        "csrf_token": ada.auth["X-CSRF-Token"],
    }
    robot = new_agent(store_engine, "robot")
    by_token = client.get("/api/me", headers=robot.auth).json()
    assert (by_token["auth"], by_token["csrf_token"], by_token["email"]) == ("token", None, None)
