"""Sign-in with the company's identity provider (SPEC 8.2): OpenID Connect's authorization code
flow, with PKCE (S256), state and nonce, through Authlib's Starlette client.

The flow's state (the PKCE verifier, the nonce, the redirect URI) is kept in PostgreSQL
(``oidc_logins``, Authlib's ``cache``), keyed by the state and bound to the browser that started
the flow: the login sets a state cookie of its own, whose hash the row keeps, and the callback
only finds the rows of the browser presenting it (RFC 6749 §10.12). The callback's read deletes
the row, so a replayed callback, a forged state or another browser's finds nothing: 400, no
session. The redirect URI comes from ``PUBLIC_URL``, never from the request's Host.

Who signs in: the active person whose identity-provider subject is the token's ``sub``; else the
active person whose email is the token's email, when the provider says it is verified (or, with
``OIDC_TRUST_UNVERIFIED_EMAIL``, says nothing of it; never when it says false), whose subject is
then recorded. Nobody signs themselves up.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from authlib.integrations.starlette_client import OAuth, OAuthError
from sqlalchemy import Connection, Engine, text
from starlette.requests import Request
from starlette.responses import Response

from app.auth import audit
from app.auth.tokens import Kind, hash_token, new_token
from app.config import Settings

STATE_COOKIE = "callqueue_oidc"
# How long a sign-in may take at the provider.
FLOW_SECONDS = 600
NAME = "company"

# The browser (its state cookie's hash) of the request being served: the cache binds rows to it.
_browser: contextvars.ContextVar[str | None] = contextvars.ContextVar("oidc_browser", default=None)


class FlowStore:
    """Authlib's ``cache`` interface, in PostgreSQL: a row per sign-in under way, bound to the
    browser that started it, which expires with the flow and is deleted when used."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def get(self, key: str) -> str | None:
        return await to_thread.run_sync(self._get, key, _browser.get())

    async def set(self, key: str, value: str, expires_in: int | None = None) -> None:
        await to_thread.run_sync(self._set, key, value, _browser.get())

    async def delete(self, key: str) -> None:
        await to_thread.run_sync(self._delete, key)

    def _get(self, key: str, browser: str | None) -> str | None:
        """Reading a flow uses it up (Authlib reads a flow only in the callback): two callbacks
        racing with one state cannot both find it."""
        with self.engine.begin() as conn:
            value: str | None = conn.execute(
                text(
                    "DELETE FROM oidc_logins WHERE key = :key AND browser_hash = :browser"
                    " AND expires_at > now() RETURNING data"
                ),
                {"key": key, "browser": browser},
            ).scalar()
        return value

    def _set(self, key: str, value: str, browser: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM oidc_logins WHERE expires_at <= now()"))
            conn.execute(
                text(
                    "INSERT INTO oidc_logins (key, browser_hash, data, expires_at)"
                    " VALUES (:key, :browser, :data, now() + make_interval(secs => :secs))"
                    " ON CONFLICT (key) DO UPDATE SET browser_hash = EXCLUDED.browser_hash,"
                    " data = EXCLUDED.data, expires_at = EXCLUDED.expires_at"
                ),
                {"key": key, "browser": browser, "data": value, "secs": FLOW_SECONDS},
            )

    def _delete(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM oidc_logins WHERE key = :key"), {"key": key})

    def markers(self, browser: str) -> dict[str, Any]:
        """Authlib's session markers for the flows this browser started (``request.session``)."""
        with self.engine.connect() as conn:
            keys = conn.execute(
                text(
                    "SELECT key, extract(epoch FROM expires_at) FROM oidc_logins"
                    " WHERE browser_hash = :browser AND expires_at > now()"
                ),
                {"browser": browser},
            ).all()
        return {key: {"exp": float(exp)} for key, exp in keys}


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    email: str | None
    email_verified: bool | None


class IdentityProvider:
    """The company's identity provider, as configured (``OIDC_*``, ``PUBLIC_URL``)."""

    def __init__(self, settings: Settings, store: FlowStore) -> None:
        self.settings = settings
        self.store = store
        self.redirect_uri = f"{settings.base_url}/auth/oidc/callback"
        oauth = OAuth(cache=store)
        assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret
        self.client = oauth.register(
            NAME,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value(),
            server_metadata_url=f"{settings.oidc_issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
        )
        self.client.framework.expires_in = FLOW_SECONDS

    async def login(self, request: Request) -> Response:
        """Redirect to the provider; the answer carries the flow's state cookie."""
        browser_token = new_token(Kind.LINK)
        _browser.set(hash_token(browser_token))
        request.scope["session"] = {}
        response: Response = await self.client.authorize_redirect(
            request, redirect_uri=self.redirect_uri
        )
        response.set_cookie(
            STATE_COOKIE,
            browser_token,
            max_age=FLOW_SECONDS,
            path="/auth/oidc",
            httponly=True,
            secure=self.settings.base_url.startswith("https://"),
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Claims:
        """The provider's answer, checked (state bound to this browser, the code exchanged with
        the PKCE verifier, the ID token's signature, issuer, audience and nonce). OAuthError
        when any of it fails."""
        browser_token = request.cookies.get(STATE_COOKIE)
        if not browser_token:
            raise OAuthError(description="this browser did not start a sign-in")
        browser = hash_token(browser_token)
        _browser.set(browser)
        request.scope["session"] = await to_thread.run_sync(self.store.markers, browser)
        token = await self.client.authorize_access_token(request)
        userinfo = token.get("userinfo") or {}
        subject = userinfo.get("sub")
        if not subject:
            raise OAuthError(description="the provider's answer names nobody")
        verified = userinfo.get("email_verified")
        return Claims(
            str(subject),
            userinfo.get("email"),
            verified if isinstance(verified, bool) else None,
        )


def match_person(conn: Connection, claims: Claims, *, trust_unverified: bool) -> int | None:
    """The active person the provider's answer names (by subject, else by a verified email,
    whose subject is then recorded), or None: nobody signs themselves up."""
    person = conn.execute(
        text("SELECT id, is_active FROM agents WHERE oidc_subject = :sub"),
        {"sub": claims.subject},
    ).one_or_none()
    if person is not None:
        return int(person.id) if person.is_active else None
    trusted = claims.email_verified is True or (claims.email_verified is None and trust_unverified)
    if not claims.email or not trusted:
        return None
    person = conn.execute(
        text(
            "SELECT id FROM agents WHERE lower(email) = lower(:email) AND is_active"
            " AND oidc_subject IS NULL FOR UPDATE"
        ),
        {"email": claims.email},
    ).one_or_none()
    if person is None:
        return None
    conn.execute(
        text("UPDATE agents SET oidc_subject = :sub, updated_at = now() WHERE id = :id"),
        {"sub": claims.subject, "id": person.id},
    )
    audit.record(
        conn,
        "identity_provider_linked",
        actor=person.id,
        subject=person.id,
        address=None,
        details={"by": "email"},
    )
    return int(person.id)
