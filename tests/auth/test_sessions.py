"""Sessions and CSRF (SPEC 8.2): the idle and absolute timeouts (time moved by moving the stored
times back), sign-out, a change to the person ending their sessions on their next request, and
cookie-authenticated writes refused without their CSRF token or from another origin, while
bearer requests are not subject to it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth.sessions import COOKIE
from tests.factories import Agent, new_agent, signed_in


def shift(store: Engine, column: str, interval: str, person: Agent) -> None:
    with store.begin() as conn:
        conn.execute(
            text(
                f"UPDATE sessions SET {column} = {column} - CAST(:i AS interval)"
                " WHERE agent_id = :a"
            ),
            {"i": interval, "a": person.id},
        )


def me(client: TestClient, person: Agent) -> int:
    return client.get("/api/me", headers=person.auth).status_code


def test_a_session_ends_after_its_idle_timeout(client: TestClient, store_engine: Engine) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    assert me(client, ada) == 200
    shift(store_engine, "last_seen_at", "119 minutes", ada)
    assert me(client, ada) == 200  # within SESSION_IDLE_MINUTES (120): and seen again now
    shift(store_engine, "last_seen_at", "119 minutes", ada)
    assert me(client, ada) == 200
    shift(store_engine, "last_seen_at", "121 minutes", ada)
    assert me(client, ada) == 401


def test_being_seen_is_written_at_most_twice_a_minute(
    client: TestClient, store_engine: Engine
) -> None:
    ada = signed_in(store_engine, "ada@example.com")

    def seen() -> object:
        with store_engine.connect() as conn:
            return conn.execute(
                text("SELECT last_seen_at FROM sessions WHERE agent_id = :a"), {"a": ada.id}
            ).scalar_one()

    first = seen()
    for _ in range(3):
        assert me(client, ada) == 200
    assert seen() == first
    shift(store_engine, "last_seen_at", "31 seconds", ada)
    moved = seen()
    assert me(client, ada) == 200
    assert seen() > moved  # type: ignore[operator]


def test_a_session_ends_at_its_absolute_timeout_however_busy(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    client = make_client(session_max_hours=12)
    ada = signed_in(store_engine, "ada@example.com")
    with store_engine.connect() as conn:
        length = conn.execute(
            text("SELECT expires_at - created_at FROM sessions WHERE agent_id = :a"),
            {"a": ada.id},
        ).scalar_one()
    assert length.total_seconds() == 12 * 3600
    shift(store_engine, "expires_at", "11 hours 59 minutes", ada)
    assert me(client, ada) == 200
    shift(store_engine, "expires_at", "2 minutes", ada)
    assert me(client, ada) == 401


def test_sign_out_ends_the_session_and_clears_the_cookie(
    client: TestClient, store_engine: Engine
) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    out = client.post("/auth/logout", headers=ada.auth)
    assert out.status_code == 204
    cleared = out.headers["set-cookie"]
    assert cleared.startswith(f'{COOKIE}=""') and "Max-Age=0" in cleared
    assert me(client, ada) == 401
    with store_engine.connect() as conn:
        reason, audited = conn.execute(
            text(
                "SELECT s.end_reason, (SELECT count(*) FROM auth_events e"
                " WHERE e.action = 'signed_out' AND e.subject_id = s.agent_id)"
                " FROM sessions s WHERE s.agent_id = :a"
            ),
            {"a": ada.id},
        ).one()
    assert (reason, audited) == ("signed_out", 1)


@pytest.mark.parametrize(
    "change",
    [{"is_active": False}, {"role": "supervisor"}, {"allowed_queues": ["unsigned_users"]}],
    ids=["deactivated", "role", "queues"],
)
def test_a_change_to_the_person_ends_their_live_session_on_its_next_request(
    client: TestClient, store_engine: Engine, change: dict[str, object]
) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    second = signed_in_again(store_engine, ada)
    boss = new_agent(store_engine, "root", "admin")
    assert me(client, ada) == 200 and me(client, second) == 200
    changed = client.patch(f"/api/admin/people/{ada.id}", json=change, headers=boss.auth)
    assert changed.status_code == 200, changed.text
    assert me(client, ada) == 401
    assert me(client, second) == 401


def test_a_name_change_keeps_the_session(client: TestClient, store_engine: Engine) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    boss = new_agent(store_engine, "boss", "supervisor")
    changed = client.patch(
        f"/api/admin/people/{ada.id}", json={"display_name": "Ada L."}, headers=boss.auth
    )
    assert changed.status_code == 200
    assert client.get("/api/me", headers=ada.auth).json()["display_name"] == "Ada L."


def test_a_supervisor_signs_someone_out_everywhere(
    client: TestClient, store_engine: Engine
) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    second = signed_in_again(store_engine, ada)
    boss = new_agent(store_engine, "boss", "supervisor")
    out = client.post(f"/api/admin/people/{ada.id}/sign-out", headers=boss.auth)
    assert out.json() == {"sessions_ended": 2}
    assert me(client, ada) == 401 and me(client, second) == 401


def signed_in_again(store: Engine, person: Agent) -> Agent:
    """A second session of the same person (another browser)."""
    from app.auth.sessions import start_session
    from app.auth.tokens import csrf_token

    with store.begin() as conn:
        token = start_session(
            conn, person.id, method="password", max_hours=12, user_agent=None, address=None
        )
    return Agent(
        person.name, person.id, {"Cookie": f"{COOKIE}={token}", "X-CSRF-Token": csrf_token(token)}
    )


# -- CSRF ------------------------------------------------------------------------------------

WRITE = ("PUT", "/api/admin/flags", {"MIGRATION_MODE": "dual"})


def test_a_cookie_write_without_its_csrf_token_is_refused_before_anything_happens(
    client: TestClient, store_engine: Engine
) -> None:
    boss = signed_in(store_engine, "boss@example.com", "supervisor")
    cookie = {"Cookie": boss.auth["Cookie"]}
    method, path, body = WRITE
    for headers, why in (
        (cookie, "no header"),
        ({**cookie, "X-CSRF-Token": "0" * 64}, "wrong header"),
        ({**cookie, "X-CSRF-Token": ""}, "empty header"),
        ({**boss.auth, "Origin": "https://evil.example"}, "foreign origin"),
        ({**boss.auth, "Origin": "null"}, "opaque origin"),
        ({**boss.auth, "Origin": "http://testserver"}, "same host, another scheme"),
    ):
        answer = client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 403, why
        assert answer.json()["error"] == "CsrfRejected", why
    flags = client.get("/api/admin/flags", headers=cookie).json()  # a GET needs no token
    assert flags["MIGRATION_MODE"] != "dual"
    # With its token, from its own origin (or a client that sends no Origin): accepted.
    ok = client.request(
        method, path, json=body, headers={**boss.auth, "Origin": "https://testserver"}
    )
    assert ok.status_code == 200


def test_the_csrf_token_is_the_sessions_own(client: TestClient, store_engine: Engine) -> None:
    ada = signed_in(store_engine, "ada@example.com", "supervisor")
    bob = signed_in(store_engine, "bob@example.com", "supervisor")
    method, path, body = WRITE
    crossed = {"Cookie": ada.auth["Cookie"], "X-CSRF-Token": bob.auth["X-CSRF-Token"]}
    assert client.request(method, path, json=body, headers=crossed).status_code == 403
    assert client.get("/api/me", headers=ada.auth).json()["csrf_token"] == ada.auth["X-CSRF-Token"]


def test_next_user_and_complete_check_csrf_too(client: TestClient, store_engine: Engine) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    cookie = {"Cookie": ada.auth["Cookie"]}
    for path in (
        "/api/queues/unsigned_users/next-user",
        "/api/assignments/00000000-0000-4000-8000-000000000000/complete",
    ):
        answer = client.post(path, json={"outcome": "no_answer"}, headers=cookie)
        assert (answer.status_code, answer.json()["error"]) == (403, "CsrfRejected"), path
        assert client.post(path, json={"outcome": "no_answer"}, headers=ada.auth).status_code in (
            204,
            404,
        )


def test_bearer_requests_are_not_subject_to_csrf(client: TestClient, store_engine: Engine) -> None:
    boss = new_agent(store_engine, "boss", "supervisor")
    method, path, body = WRITE
    answer = client.request(
        method, path, json=body, headers={**boss.auth, "Origin": "https://evil.example"}
    )
    assert answer.status_code == 200
    # A bearer token wins over a cookie sent beside it: no fallback, and no CSRF either way.
    ada = signed_in(store_engine, "ada@example.com", "supervisor")
    both = {**boss.auth, "Cookie": ada.auth["Cookie"]}
    assert client.get("/api/me", headers=both).json()["auth"] == "token"
    wrong = {"Authorization": "Bearer cq_unknown", "Cookie": ada.auth["Cookie"]}
    assert client.get("/api/me", headers=wrong).status_code == 401


def test_sign_out_needs_the_csrf_token(client: TestClient, store_engine: Engine) -> None:
    ada = signed_in(store_engine, "ada@example.com")
    answer = client.post("/auth/logout", headers={"Cookie": ada.auth["Cookie"]})
    assert (answer.status_code, answer.json()["error"]) == (403, "CsrfRejected")
    assert me(client, ada) == 200


def test_the_cookie_is_not_secure_only_in_development_over_plain_http(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    signed_in(store_engine, "dev@example.com")
    with store_engine.begin() as conn:
        from app.auth.passwords import hash_password

        conn.execute(
            text("UPDATE agents SET password_hash = :h WHERE email = 'dev@example.com'"),
            {"h": hash_password("a development password")},
        )
    body = {"email": "dev@example.com", "password": "a development password"}
    for env, url, secure in (
        ("development", "http://127.0.0.1:8000", False),
        ("development", "https://calls.example", True),
        ("test", "http://127.0.0.1:8000", True),
    ):
        client = make_client(app_env=env, public_url=url)
        answer = client.post("/auth/login", json=body, follow_redirects=False)
        assert answer.status_code == 303
        assert ("Secure" in answer.headers["set-cookie"]) is secure, (env, url)
