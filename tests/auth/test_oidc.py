"""Sign-in with the company's identity provider (SPEC 8.2), against a real OpenID provider: the
whole authorization code flow (PKCE S256, state, nonce), matching by subject and by email, and
every refusal seen refused, with no session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.auth.oidc import Claims, match_person
from app.auth.people import create_person
from app.auth.sessions import COOKIE
from tests.auth.conftest import Provider, provider_user, query_of, run_flow
from tests.conftest import TEST_ORIGIN
from tests.factories import new_agent


def person(store: Engine, email: str, role: str = "agent") -> int:
    """Someone a supervisor added (no password, no session yet)."""
    with store.begin() as conn:
        return create_person(
            conn, None, email=email, display_name="", role=role, address=None, base_url=None
        ).person.id


def sessions_of(store: Engine, person_id: int, method: str = "oidc") -> int:
    with store.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM sessions WHERE agent_id = :id AND method = :m"),
                {"id": person_id, "m": method},
            ).scalar_one()
        )


def test_the_redirect_asks_for_a_code_with_pkce_state_and_nonce_to_public_url(
    oidc_client: Callable[..., TestClient], provider: Provider
) -> None:
    client = oidc_client()
    login = client.get("/auth/oidc/login", headers={"Host": "evil.example"}, follow_redirects=False)
    assert login.status_code == 302
    location = login.headers["location"]
    assert location.startswith(f"{provider.issuer}/oauth/authorize?")
    asked = query_of(location)
    assert asked["response_type"] == "code"
    assert asked["client_id"] == provider.client_id
    # The redirect URI is PUBLIC_URL's, whatever Host the request claimed.
    assert asked["redirect_uri"] == f"{TEST_ORIGIN}/auth/oidc/callback"
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) >= 43
    assert len(asked["state"]) >= 20 and len(asked["nonce"]) >= 20
    assert set(asked["scope"].split()) >= {"openid", "email"}
    # The flow is bound to this browser by a cookie of its own.
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("callqueue_oidc=") and "HttpOnly" in cookie and "Secure" in cookie
    assert "Path=/auth/oidc" in cookie


def test_a_person_signs_in_by_a_verified_email_and_then_by_subject(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    # Canaille sends no email_verified: OIDC_TRUST_UNVERIFIED_EMAIL is what such providers need.
    client = oidc_client(oidc_trust_unverified_email=True)
    pid = person(store_engine, "ada@example.com")
    user = provider_user(provider, "Ada@Example.com")  # emails compare case-insensitively

    flow = run_flow(client)
    assert flow.callback.status_code == 303, flow.callback.text
    assert flow.callback.headers["location"] == "/console"
    assert client.get("/api/me").json()["email"] == "ada@example.com"
    with store_engine.connect() as conn:
        subject = conn.execute(
            text("SELECT oidc_subject FROM agents WHERE id = :id"), {"id": pid}
        ).scalar_one()
    assert subject is not None
    assert sessions_of(store_engine, pid) == 1

    # The email changes at the provider: the recorded subject still finds the person.
    with provider.server.app.app_context():
        provider.server.backend.update(user, emails=["ada.lovelace@example.com"])
        provider.server.backend.save(user)
    client.cookies.clear()
    again = run_flow(client)
    assert again.callback.status_code == 303, again.callback.text
    assert sessions_of(store_engine, pid) == 2
    with store_engine.connect() as conn:
        audit = conn.execute(
            text(
                "SELECT action, details->>'method' FROM auth_events WHERE subject_id = :id"
                " AND action IN ('signed_in', 'identity_provider_linked') ORDER BY id"
            ),
            {"id": pid},
        ).all()
    assert [tuple(a) for a in audit] == [
        ("identity_provider_linked", None),
        ("signed_in", "oidc"),
        ("signed_in", "oidc"),
    ]


def _refused(client: TestClient, flow_status: int, response: Any) -> None:
    assert response.status_code == flow_status, response.text
    assert COOKIE not in response.headers.get("set-cookie", "")
    assert client.get("/api/me").status_code == 401


def test_nobody_signs_themselves_up(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    client = oidc_client(oidc_trust_unverified_email=True)
    provider_user(provider, "stranger@example.com")
    flow = run_flow(client)
    _refused(client, 403, flow.callback)
    assert "Ask a supervisor" in flow.callback.text
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sessions")).scalar_one() == 0
        assert (
            conn.execute(
                text("SELECT count(*) FROM agents WHERE email = 'stranger@example.com'")
            ).scalar_one()
            == 0
        )
        failed = (
            conn.execute(
                text("SELECT details->>'method' FROM auth_events WHERE action = 'sign_in_failed'")
            )
            .scalars()
            .all()
        )
    assert failed == ["oidc"]


def test_a_deactivated_person_is_refused_by_email_and_by_subject(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    client = oidc_client(oidc_trust_unverified_email=True)
    pid = person(store_engine, "gone@example.com")
    provider_user(provider, "gone@example.com")
    assert run_flow(client).callback.status_code == 303  # linked by email
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE agents SET is_active = false WHERE id = :id"), {"id": pid})
    client.cookies.clear()
    flow = run_flow(client)  # now found by subject, and refused
    _refused(client, 403, flow.callback)
    assert sessions_of(store_engine, pid) == 1


def test_an_unverified_email_is_refused_unless_trusted_and_never_one_marked_false(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    client = oidc_client()  # OIDC_TRUST_UNVERIFIED_EMAIL off: Canaille's email is unverified
    pid = person(store_engine, "eve@example.com")
    provider_user(provider, "eve@example.com")
    flow = run_flow(client)
    _refused(client, 403, flow.callback)
    assert sessions_of(store_engine, pid) == 0

    with store_engine.begin() as conn:
        for verified in (False, None):
            claims = Claims("sub-eve", "eve@example.com", verified)
            assert match_person(conn, claims, trust_unverified=verified is None) is (
                None if verified is False else pid
            )
        conn.rollback()


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {**query_of(url), **changes}
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_a_forged_state_is_400_and_no_session(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    client = oidc_client(oidc_trust_unverified_email=True)
    pid = person(store_engine, "sam@example.com")
    provider_user(provider, "sam@example.com")
    flow = run_flow(client, lambda url: _with(url, state="forged-state-value-1234567890"))
    _refused(client, 400, flow.callback)
    assert sessions_of(store_engine, pid) == 0


def test_another_browsers_callback_is_400(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    """A callback URL carried to another browser (an attacker's code and state sent to a victim,
    RFC 6749 §10.12) finds no flow: the flow is bound to the browser that started it, whether
    the other browser has no flow of its own or one of its own."""
    client = oidc_client(oidc_trust_unverified_email=True)
    pid = person(store_engine, "bea@example.com")
    provider_user(provider, "bea@example.com")
    login = client.get("/auth/oidc/login", follow_redirects=False)
    callback = httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
    client.cookies.clear()  # another browser: no state cookie
    _refused(client, 400, client.get(callback, follow_redirects=False))
    client.get("/auth/oidc/login", follow_redirects=False)  # another browser, its own flow
    _refused(client, 400, client.get(callback, follow_redirects=False))
    assert sessions_of(store_engine, pid) == 0


def test_a_replayed_callback_is_400_and_makes_no_second_session(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    client = oidc_client(oidc_trust_unverified_email=True)
    pid = person(store_engine, "rex@example.com")
    provider_user(provider, "rex@example.com")
    flow = run_flow(client)
    assert flow.callback.status_code == 303
    state_cookie = flow.login.cookies.get("callqueue_oidc")
    client.cookies.clear()
    client.cookies.set("callqueue_oidc", state_cookie, domain="testserver", path="/auth/oidc")
    replay = client.get(flow.callback_url, follow_redirects=False)
    _refused(client, 400, replay)
    assert sessions_of(store_engine, pid) == 1


def test_a_wrong_nonce_is_400_and_no_session(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    """The ID token's nonce must be the one this flow sent: the flow's stored nonce is changed
    before the callback (as if the provider's answer belonged to another flow)."""
    client = oidc_client(oidc_trust_unverified_email=True)
    pid = person(store_engine, "nia@example.com")
    provider_user(provider, "nia@example.com")

    def tamper(url: str) -> str:
        with store_engine.begin() as conn:
            changed = conn.execute(
                text(
                    "UPDATE oidc_logins SET data = replace(data, :nonce, 'not-the-nonce')"
                    " WHERE data LIKE '%' || :nonce || '%'"
                ),
                {"nonce": nonce[0]},
            ).rowcount
        assert changed == 1
        return url

    nonce: list[str] = []
    login = client.get("/auth/oidc/login", follow_redirects=False)
    nonce.append(query_of(login.headers["location"])["nonce"])

    callback = httpx.get(login.headers["location"], follow_redirects=False).headers["location"]
    _refused(client, 400, client.get(tamper(callback), follow_redirects=False))
    assert sessions_of(store_engine, pid) == 0


def test_without_oidc_issuer_the_routes_are_404_and_the_page_offers_no_button(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    assert client.get("/auth/oidc/login").status_code == 404
    assert client.get("/auth/oidc/callback?code=x&state=y").status_code == 404
    assert "Sign in with" not in client.get("/auth/login").text


def test_the_sign_in_page_offers_the_provider_by_name(
    oidc_client: Callable[..., TestClient],
) -> None:
    page = oidc_client().get("/auth/login").text
    assert 'href="/auth/oidc/login"' in page and "Sign in with Canaille" in page


def test_an_unreachable_provider_is_a_page_not_a_500(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(
        oidc_issuer="http://127.0.0.1:9", oidc_client_id="x", oidc_client_secret="y"
    )
    answer = client.get("/auth/oidc/login", follow_redirects=False)
    assert answer.status_code == 503
    assert "not answering" in answer.text


def test_a_person_known_only_by_token_cannot_be_claimed(
    oidc_client: Callable[..., TestClient], provider: Provider, store_engine: Engine
) -> None:
    """A provider account whose email matches nobody's (a name-only agent has no email) signs
    nobody in."""
    client = oidc_client(oidc_trust_unverified_email=True)
    new_agent(store_engine, "robot")
    provider_user(provider, "robot@example.com")
    _refused(client, 403, run_flow(client).callback)
