"""Sign-in's tests: a real OpenID provider (Canaille, started in a thread by pytest-iam, offline)
and the service configured to use it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import TEST_ORIGIN

CLIENT_SECRET = "oidc-client-secret-never-in-a-table-" + uuid.uuid4().hex


@dataclass(frozen=True)
class Provider:
    """The identity provider as the service is configured for it."""

    issuer: str
    client_id: str
    client_secret: str
    server: Any  # pytest_iam.Server


@pytest.fixture
def provider(iam_server: Any) -> Provider:
    """A client of the provider registered for the test server's callback, as an operator would
    register callqueue: authorization code, RS256 ID tokens, the callback from PUBLIC_URL."""
    client_id = "callqueue-" + uuid.uuid4().hex[:8]
    client = iam_server.models.Client(
        client_id=client_id,
        client_secret=CLIENT_SECRET,
        client_name="callqueue",
        client_uri=TEST_ORIGIN,
        redirect_uris=[f"{TEST_ORIGIN}/auth/oidc/callback"],
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="client_secret_basic",
        scope=["openid", "profile", "email"],
        id_token_signed_response_alg="RS256",
    )
    iam_server.backend.save(client)
    return Provider(iam_server.url.rstrip("/"), client_id, CLIENT_SECRET, iam_server)


@pytest.fixture
def oidc_client(
    make_client: Callable[..., TestClient], provider: Provider
) -> Callable[..., TestClient]:
    """The service with sign-in through the provider (and any other settings)."""

    def make(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "oidc_issuer": provider.issuer,
            "oidc_client_id": provider.client_id,
            "oidc_client_secret": provider.client_secret,
            "oidc_provider_name": "Canaille",
        }
        values.update(overrides)
        return make_client(**values)

    return make


def provider_user(provider: Provider, email: str) -> Any:
    """A person at the provider, signed in there and having consented to callqueue (so the
    provider answers the authorization request at once, as a company's single sign-on does for
    someone already signed in)."""
    user = provider.server.random_user(emails=[email])
    provider.server.login(user)
    provider.server.consent(user)
    return user


@dataclass
class Flow:
    """An authorization code flow, step by step: the service's redirect, the provider's answer,
    and what the service made of it."""

    login: httpx.Response
    callback_url: str
    callback: httpx.Response


def run_flow(client: TestClient, before_callback: Callable[[str], str] | None = None) -> Flow:
    """/auth/oidc/login, the provider's authorization endpoint (real HTTP), then the callback
    (optionally rewritten first)."""
    login = client.get("/auth/oidc/login", follow_redirects=False)
    assert login.status_code == 302, login.text
    answer = httpx.get(login.headers["location"], follow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text
    callback_url = answer.headers["location"]
    assert callback_url.startswith(f"{TEST_ORIGIN}/auth/oidc/callback?"), callback_url
    if before_callback is not None:
        callback_url = before_callback(callback_url)
    callback = client.get(callback_url, follow_redirects=False)
    return Flow(login, callback_url, callback)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
