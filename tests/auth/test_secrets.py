"""No password, link token, session token, API token or client secret in clear in any table or
any log (SPEC 8.2), the access log's query strings included: each secret is used the way it is
meant to be, then every column of every table and every log line is searched for it."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth.sessions import COOKIE
from app.logs import quiet_libraries, redact_query
from tests.auth.conftest import Provider, provider_user, run_flow
from tests.conftest import CRON_SECRET
from tests.factories import new_agent
from tests.processes import free_port, service_env, stop, wait_ready


def stored_anywhere(store: Engine, secrets: dict[str, str]) -> list[tuple[str, str, str]]:
    """(secret's name, table, column) wherever a secret, or its random part, is stored."""
    found = []
    with store.connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema()"
            )
        ).all()
        assert len({t for t, _ in columns}) >= 20
        for name, secret in secrets.items():
            needles = {secret, secret.split("_", 1)[-1]}
            for table, column in columns:
                for needle in needles:
                    hits = conn.execute(
                        text(
                            f'SELECT count(*) FROM "{table}" WHERE strpos("{column}"::text, :s) > 0'
                        ),
                        {"s": needle},
                    ).scalar_one()
                    if hits:
                        found.append((name, table, column))
    return found


def test_no_secret_is_stored_or_logged_in_clear(
    oidc_client: Callable[..., TestClient],
    provider: Provider,
    store_engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    quiet_libraries()  # as the service configures them (app.logs.configure_logging)
    client = oidc_client(oidc_trust_unverified_email=True)
    root = new_agent(store_engine, "root", "admin")
    password = "a passphrase nobody stores"

    # A person, their link, their password set with it; a password sign-in; the session used.
    made = client.post(
        "/api/admin/people", json={"email": "sec@example.com"}, headers=root.auth
    ).json()
    link_token = made["set_password_link"].split("token=")[1]
    assert client.get(f"/auth/set-password?token={link_token}").status_code == 200
    client.post(
        "/auth/set-password",
        data={"token": link_token, "password": password},
        follow_redirects=False,
    )
    client.cookies.clear()
    signed = client.post(
        "/auth/login",
        data={"email": "sec@example.com", "password": password},
        follow_redirects=False,
    )
    session_token = signed.cookies[COOKIE]
    csrf = client.get("/api/me").json()["csrf_token"]
    assert client.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.post("/auth/login", json={"email": "sec@example.com", "password": "a wrong guess!"})

    # An API token made and used; a reset link; a sign-in through the provider.
    token = client.post(
        "/api/admin/tokens", json={"name": "job", "agent_id": root.id}, headers=root.auth
    ).json()["token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    reset = client.post(
        f"/api/admin/people/{made['person']['id']}/reset-password", headers=root.auth
    ).json()["set_password_link"]
    client.cookies.clear()
    provider_user(provider, "sec@example.com")
    flow = run_flow(client)
    assert flow.callback.status_code == 303
    oidc_session = flow.callback.cookies[COOKIE]

    secrets = {
        "password": password,
        "wrong password": "a wrong guess!",
        "link token": link_token,
        "reset link token": reset.split("token=")[1],
        "session token": session_token,
        "provider session token": oidc_session,
        "API token": token,
        "API token of root": root.auth["Authorization"].removeprefix("Bearer "),
        "client secret": provider.client_secret,
        "cron secret": CRON_SECRET,
    }
    assert stored_anywhere(store_engine, secrets) == []
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for name, secret in secrets.items():
        assert secret not in logged, name
    # A settings dump, an error or a repr never shows the client secret either.
    assert provider.client_secret not in repr(client.app.state.services.settings)  # type: ignore[attr-defined]


def test_the_access_log_shows_no_secret_in_a_query_string(
    store_url: str, replica_url: str, tmp_path: Path
) -> None:
    """uvicorn, as an operator runs it (its own access log on standard output), asked for the
    set-password page and the provider's callback: the log names the parameters, never their
    values."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env(store_url, replica_url, CRON_SECRET, PUBLIC_URL=base)
    out = tmp_path / "out.log"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
    link = "cqp_" + "L" * 43
    try:
        wait_ready(base, proc)
        httpx.get(f"{base}/auth/set-password", params={"token": link, "next": "/console"})
        httpx.get(f"{base}/auth/set-password?TOKEN={link}&x=1")
        httpx.get(f"{base}/auth/oidc/callback?code=SECRETCODE123&state=SECRETSTATE456")
    finally:
        _, err = stop(proc)
    logged = out.read_text() + err
    assert "GET /auth/set-password?token=[redacted]&next=/console" in logged.replace("%2F", "/")
    assert "/auth/oidc/callback?code=[redacted]&state=[redacted]" in logged
    for secret in (link, "SECRETCODE123", "SECRETSTATE456"):
        assert secret not in logged


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/a?token=x", "/a?token=[redacted]"),
        ("/a?tok%65n=x&b=2", "/a?tok%65n=[redacted]&b=2"),
        ("/a?queue=unsigned_users", "/a?queue=unsigned_users"),
        ("/a?token", "/a?token"),
        ("/a", "/a"),
        ("/a?state=s&code=c&password=p", "/a?state=[redacted]&code=[redacted]&password=[redacted]"),
    ],
)
def test_query_redaction(path: str, shown: str) -> None:
    assert redact_query(path) == shown
