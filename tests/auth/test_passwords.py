"""Passwords (SPEC 8.2): sign-in by form and by JSON, one message for a wrong email or a wrong
password, the per-email lockout and its end, one-time set-password links, the minimum length, and
the switch that turns passwords off. Time passes by moving the stored times back (the database's
clock is the only clock these rules read)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth import passwords
from app.auth.people import create_person
from app.errors import SignInLocked, Unauthorized
from tests.conftest import TEST_ORIGIN
from tests.factories import new_agent

PASSWORD = "correct horse battery staple"


def new_person(client: TestClient, store: Engine, email: str = "pat@example.com") -> str:
    """A person added with passwords on: their one-time link, used to set PASSWORD. Returns
    the email."""
    with store.begin() as conn:
        link = create_person(
            conn,
            None,
            email=email,
            display_name="Pat",
            role="agent",
            address=None,
            base_url=TEST_ORIGIN,
        ).link
    assert link is not None
    answer = client.post(
        "/auth/set-password",
        json={"token": link.split("token=")[1], "password": PASSWORD},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    client.cookies.clear()
    return email


def signs_in(client: TestClient, email: str, password: str) -> int:
    """The status of a JSON sign-in (303 when it worked)."""
    answer = client.post(
        "/auth/login", json={"email": email, "password": password}, follow_redirects=False
    )
    return answer.status_code


def failures(store: Engine, email: str) -> int:
    with store.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM sign_in_failures WHERE email = :e"), {"e": email}
            ).scalar_one()
        )


def test_a_form_sign_in_lands_on_the_console_with_a_protected_cookie(
    client: TestClient, store_engine: Engine
) -> None:
    email = new_person(client, store_engine)
    answer = client.post(
        "/auth/login",
        data={"email": "  PAT@example.com ", "password": PASSWORD},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("callqueue_session=cqs_")
    for flag in ("HttpOnly", "Path=/", "SameSite=lax", "Secure"):
        assert flag in cookie, flag
    assert "Max-Age" not in cookie and "expires" not in cookie.lower()
    me = client.get("/api/me").json()
    assert (me["email"], me["auth"], len(me["csrf_token"])) == (email, "session", 64)


def test_json_sign_in_and_the_next_page_is_only_ever_the_console(
    client: TestClient, store_engine: Engine
) -> None:
    email = new_person(client, store_engine)
    for wanted, landed in (
        ("/console/supervisor", "/console/supervisor"),
        ("https://evil.example/", "/console"),
        ("//evil.example", "/console"),
        ("/console/../api/me", "/console"),
    ):
        answer = client.post(
            "/auth/login",
            params={"next": wanted},
            json={"email": email, "password": PASSWORD},
            follow_redirects=False,
        )
        assert (answer.status_code, answer.headers["location"]) == (303, landed), wanted


def test_a_wrong_email_and_a_wrong_password_get_the_same_answer(
    client: TestClient, store_engine: Engine
) -> None:
    email = new_person(client, store_engine)
    wrong_password = client.post("/auth/login", json={"email": email, "password": "nope" * 4})
    wrong_email = client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong_password.status_code == wrong_email.status_code == 401
    assert (
        wrong_password.json()
        == wrong_email.json()
        == {
            "error": "Unauthorized",
            "detail": "the email or the password is wrong",
        }
    )
    # The form gets the page again, with the same sentence and status.
    page = client.post("/auth/login", data={"email": email, "password": "nope"})
    assert page.status_code == 401 and "the email or the password is wrong" in page.text
    assert page.headers["content-type"].startswith("text/html")


def test_five_failures_lock_the_email_for_fifteen_minutes_whatever_the_address(
    client: TestClient, store_engine: Engine
) -> None:
    email = new_person(client, store_engine)
    for n in range(5):
        answer = client.post(
            "/auth/login",
            json={"email": email, "password": "wrong password"},
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
        )
        assert answer.status_code == 401
    locked = client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert locked.status_code == 429
    assert locked.json()["error"] == "SignInLocked"
    assert 890 <= int(locked.headers["retry-after"]) <= 900
    # Another email is not locked.
    other = new_person(client, store_engine, "quinn@example.com")
    assert signs_in(client, other, PASSWORD) == 303

    # Fourteen minutes on: still locked. Fifteen: the right password works, and clears the count.
    with store_engine.begin() as conn:
        conn.execute(
            text("UPDATE sign_in_failures SET failed_at = failed_at - interval '14 minutes'")
        )
    assert signs_in(client, email, PASSWORD) == 429
    with store_engine.begin() as conn:
        conn.execute(
            text("UPDATE sign_in_failures SET failed_at = failed_at - interval '61 seconds'")
        )
    client.cookies.clear()
    assert signs_in(client, email, PASSWORD) == 303
    assert failures(store_engine, email) == 0


def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock(
    client: TestClient, store_engine: Engine
) -> None:
    email = new_person(client, store_engine)
    for _ in range(4):
        client.post("/auth/login", json={"email": email, "password": "wrong password"})
    with store_engine.begin() as conn:
        conn.execute(
            text("UPDATE sign_in_failures SET failed_at = failed_at - interval '16 minutes'")
        )
    client.post("/auth/login", json={"email": email, "password": "wrong password"})
    assert signs_in(client, email, PASSWORD) == 303


def test_parallel_guesses_cannot_outrun_the_lockout(
    client: TestClient, store_engine: Engine
) -> None:
    """Twelve wrong guesses at once, on twelve connections: five are judged (401), the rest
    find the email locked (429). Without the per-email lock, guesses checked side by side
    each see fewer than five failures and all get judged."""
    email = new_person(client, store_engine)
    outcomes: list[str] = []
    start = threading.Barrier(12)

    def guess() -> None:
        start.wait()
        with store_engine.connect() as conn:
            try:
                passwords.sign_in(conn, email, "wrong guess", address=None)
            except Unauthorized:
                outcomes.append("wrong")
            except SignInLocked:
                outcomes.append("locked")
            conn.commit()

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["locked"] * 7 + ["wrong"] * 5
    assert failures(store_engine, email) == 5


def test_a_set_password_link_works_once(client: TestClient, store_engine: Engine) -> None:
    with store_engine.begin() as conn:
        link = create_person(
            conn,
            None,
            email="lee@example.com",
            display_name="Lee",
            role="agent",
            address=None,
            base_url=TEST_ORIGIN,
        ).link
    assert link is not None and link.startswith(f"{TEST_ORIGIN}/auth/set-password?token=cqp_")
    token = link.split("token=")[1]

    form = client.get(f"/auth/set-password?token={token}")
    assert form.status_code == 200 and 'name="password"' in form.text
    assert form.headers["cache-control"] == "no-store"

    short = client.post("/auth/set-password", json={"token": token, "password": "x" * 11})
    assert short.status_code == 422  # and the link is not used up by it
    done = client.post(
        "/auth/set-password", data={"token": token, "password": PASSWORD}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/console"
    assert client.get("/api/me").json()["email"] == "lee@example.com"

    client.cookies.clear()
    again = client.post("/auth/set-password", json={"token": token, "password": PASSWORD + "!"})
    assert again.status_code == 400
    assert client.get(f"/auth/set-password?token={token}").status_code == 400
    # The password set the first time is the one that works.
    assert signs_in(client, "lee@example.com", PASSWORD) == 303


def test_an_expired_or_unknown_or_replaced_link_is_400(
    client: TestClient, store_engine: Engine
) -> None:
    with store_engine.begin() as conn:
        created = create_person(
            conn,
            None,
            email="kim@example.com",
            display_name="Kim",
            role="agent",
            address=None,
            base_url=TEST_ORIGIN,
        )
    assert created.link is not None
    first = created.link.split("token=")[1]
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE password_links SET expires_at = now() - interval '1 second'"))
    expired = client.post("/auth/set-password", json={"token": first, "password": PASSWORD})
    assert expired.status_code == 400 and expired.json()["error"] == "BadRequest"
    unknown = client.post("/auth/set-password", json={"token": "cqp_nothing", "password": PASSWORD})
    assert unknown.status_code == 400
    page = client.post("/auth/set-password", data={"token": "cqp_nothing", "password": PASSWORD})
    assert page.status_code == 400 and "ask a supervisor" in page.text.lower()


def test_a_reset_replaces_the_password_and_ends_the_sessions(
    client: TestClient, store_engine: Engine
) -> None:
    email = new_person(client, store_engine)
    assert signs_in(client, email, PASSWORD) == 303
    assert client.get("/api/me").status_code == 200
    boss = new_agent(store_engine, "boss", "supervisor")
    pid = client.get("/api/me").json()["id"]
    reset = client.post(f"/api/admin/people/{pid}/reset-password", headers=boss.auth)
    assert reset.status_code == 200
    link = reset.json()["set_password_link"]
    assert client.get("/api/me").status_code == 401  # signed out at once
    assert signs_in(client, email, PASSWORD) == 401
    new = client.post(
        "/auth/set-password",
        json={"token": link.split("token=")[1], "password": "a brand new passphrase"},
        follow_redirects=False,
    )
    assert new.status_code == 303


def test_with_passwords_off_there_is_no_password_sign_in_and_no_link(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    client = make_client(password_login=False)
    boss = new_agent(store_engine, "boss", "supervisor")
    created = client.post("/api/admin/people", json={"email": "ola@example.com"}, headers=boss.auth)
    assert created.status_code == 201 and created.json()["set_password_link"] is None
    answer = client.post("/auth/login", json={"email": "ola@example.com", "password": PASSWORD})
    assert answer.status_code == 404
    pid = created.json()["person"]["id"]
    assert (
        client.post(f"/api/admin/people/{pid}/reset-password", headers=boss.auth).status_code == 403
    )
    assert 'name="password"' not in client.get("/auth/login").text


@pytest.mark.parametrize(
    "body",
    [
        {"email": "pat@example.com"},
        {"email": "pat@example.com", "password": "p", "extra": 1},
        {"email": ["pat@example.com"], "password": "p"},
        "not an object",
    ],
)
def test_a_malformed_sign_in_is_422_and_counts_nothing(
    client: TestClient, store_engine: Engine, body: object
) -> None:
    answer = client.post("/auth/login", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"] == "ValidationError"
    assert failures(store_engine, "pat@example.com") == 0


def test_a_sign_in_form_from_another_site_is_refused(
    client: TestClient, store_engine: Engine
) -> None:
    """Login CSRF: a page elsewhere posting our form would sign the victim's browser into the
    forger's account."""
    email = new_person(client, store_engine)
    answer = client.post(
        "/auth/login",
        data={"email": email, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403 and answer.json()["error"] == "CsrfRejected"
    assert "set-cookie" not in answer.headers
