"""Access control: every route against every kind of caller (anonymous, an unknown token,
deactivated people, each role by API token and by session, the cron secret), compared with the
SPEC; tokens stored only as hashes; the cron secret compared in constant time; and no
cross-origin access unless configured.

The matrix is built from the app's own routes: a route added without a row here fails
``test_the_matrix_covers_every_route``, so nobody ships an endpoint whose access was never decided.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import logging
import textwrap
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.api import deps, ops
from app.auth.people import create_agent, deactivate_agent
from tests.conftest import CRON_SECRET
from tests.factories import new_agent, signed_in

POPULATE = "/api/cron/populate-separated-queues"
NOBODY = uuid.UUID("00000000-0000-4000-8000-000000000000")  # an assignment id nobody holds

# The callers, in the order of the matrix's columns.
CALLERS = (
    "none",  # no credentials at all
    "wrong",  # a well-formed token that was never issued
    "deact_agent",  # the token of a deactivated agent
    "deact_super",  # the token of a deactivated supervisor
    "agent",  # an active agent, by API token
    "super",  # an active supervisor, by API token
    "admin",  # an active admin, by API token
    "cron",  # the cron secret
    "scorer",  # an active scorer (SPEC 7.1): PUT /api/scores and nothing else
    "deact_scorer",  # the token of a deactivated scorer
    "agent_s",  # an agent signed in: the session cookie and its CSRF token, as the console
    "super_s",  # a supervisor signed in
    "admin_s",  # an admin signed in
)
# Columns of the matrix, in the order of CALLERS:
#   none wrong deact-agent deact-super agent super admin cron scorer deact-scorer
#   agent-session super-session admin-session
# A session is the same person as a token of the same role: the same answers, but on the
# console's pages (which take no bearer token: no token is ever pasted into a page) and on
# sign-out (which ends a session).
# A scorer's token is refused everywhere but PUT /api/scores (403: a valid token, for another
# route). Domain statuses for the authorised callers come from harmless requests (CALLS below):
# an empty queue (204), no current assignment (204), an id nobody holds (404).
OPEN = "200 " * 13
# A webhook endpoint or attempt id there is none of.
NOWHERE = "00000000-0000-4000-8000-000000000000"
# fmt: off
ROWS: dict[tuple[str, str], str] = {
    # Open: documentation (where DOCS_ENABLED: on in test and development, off in production,
    # see test_documentation_is_off_in_production; no /redoc, see app/api/docs.py) and probes
    # answer everyone, whatever the credentials. /metrics is open unless METRICS_TOKEN is set.
    ("GET", "/openapi.json"):                 OPEN,
    ("GET", "/docs"):                         OPEN,
    ("GET", "/docs/assets/{name}"):           OPEN,
    ("GET", "/healthz"):                      OPEN,
    ("GET", "/readyz"):                       OPEN,
    ("GET", "/metrics"):                      OPEN,
    # Cron: the secret and nothing else; no person's token or session is the secret.
    ("GET", POPULATE):                        "401 401 401 401 401 401 401 200 401 401 401 401 401",
    ("POST", POPULATE):                       "401 401 401 401 401 401 401 200 401 401 401 401 401",
    ("GET", "/api/cron/queue-level-check"):   "401 401 401 401 401 401 401 200 401 401 401 401 401",
    ("GET", "/api/cron/discover"):            "401 401 401 401 401 401 401 200 401 401 401 401 401",
    # Everyone signed in (a supervisor and an admin work calls too); not a scorer.
    ("GET", "/api/me"):                       "401 401 401 401 200 200 200 401 403 401 200 200 200",
    ("GET", "/api/queues/stats"):             "401 401 401 401 200 200 200 401 403 401 200 200 200",
    ("POST", "/api/queues/{queue_type}/next-user"):
                                              "401 401 401 401 204 204 204 401 403 401 204 204 204",
    ("GET", "/api/assignments/current"):      "401 401 401 401 204 204 204 401 403 401 204 204 204",
    ("GET", "/api/calling-hours"):            "401 401 401 401 200 200 200 401 403 401 200 200 200",
    ("POST", "/api/assignments/{assignment_id}/extend"):
                                              "401 401 401 401 404 404 404 401 403 401 404 404 404",
    ("POST", "/api/assignments/{assignment_id}/release"):
                                              "401 401 401 401 404 404 404 401 403 401 404 404 404",
    ("POST", "/api/assignments/{assignment_id}/complete"):
                                              "401 401 401 401 404 404 404 401 403 401 404 404 404",
    ("GET", "/api/callbacks/mine"):           "401 401 401 401 200 200 200 401 403 401 200 200 200",
    # Supervisors and admins: everything operational (SPEC 3-7); agents and scorers 403.
    ("GET", "/api/admin/flags"):              "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("PUT", "/api/admin/flags"):              "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/assignments/{assignment_id}/release"):
                                              "401 401 401 401 403 404 404 401 403 401 403 404 404",
    ("GET", "/api/assignments"):              "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/queues/{queue_type}"):      "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/population-runs"):          "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/discovery-runs"):           "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/admin/calling-rules"):      "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("PUT", "/api/admin/calling-rules"):      "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/admin/suppression"):        "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/suppression"):       "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("DELETE", "/api/admin/suppression"):     "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/reports/compliance"):       "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/populate"):          "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/reports/activity"):         "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/callbacks"):                "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/callbacks/{callback_id}/cancel"):
                                              "401 401 401 401 403 404 404 401 403 401 403 404 404",
    ("POST", "/api/admin/callbacks/{callback_id}/reassign"):
                                              "401 401 401 401 403 404 404 401 403 401 403 404 404",
    # People (SPEC 8.2): supervisors manage agents (the target here is an agent), admins
    # everyone; API tokens are the admins' alone.
    ("GET", "/api/admin/people"):             "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/people"):            "401 401 401 401 403 201 201 401 403 401 403 201 201",
    ("PATCH", "/api/admin/people/{person_id}"):
                                              "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/people/{person_id}/reset-password"):
                                              "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("POST", "/api/admin/people/{person_id}/sign-out"):
                                              "401 401 401 401 403 200 200 401 403 401 403 200 200",
    ("GET", "/api/admin/tokens"):             "401 401 401 401 403 403 200 401 403 401 403 403 200",
    ("POST", "/api/admin/tokens"):            "401 401 401 401 403 403 201 401 403 401 403 403 201",
    ("DELETE", "/api/admin/tokens/{token_id}"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    # Personal data (SPEC 8.3): admins only. The person named is nobody the service holds: the
    # erasure leaves a tombstone and counts zero, the export is a near-empty document.
    ("POST", "/api/admin/users/{user_id}/erase"):
                                              "401 401 401 401 403 403 200 401 403 401 403 403 200",
    ("GET", "/api/admin/users/{user_id}/export"):
                                              "401 401 401 401 403 403 200 401 403 401 403 403 200",
    # Webhook endpoints (SPEC 8.4): admins only. The endpoint or attempt named is none there is.
    ("GET", "/api/admin/webhooks"):           "401 401 401 401 403 403 200 401 403 401 403 403 200",
    ("POST", "/api/admin/webhooks"):          "401 401 401 401 403 403 201 401 403 401 403 403 201",
    ("GET", "/api/admin/webhooks/{endpoint_id}"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    ("PATCH", "/api/admin/webhooks/{endpoint_id}"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    ("DELETE", "/api/admin/webhooks/{endpoint_id}"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    ("POST", "/api/admin/webhooks/{endpoint_id}/rotate-secret"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    ("POST", "/api/admin/webhooks/{endpoint_id}/test"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    ("GET", "/api/admin/webhooks/{endpoint_id}/deliveries"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    ("POST", "/api/admin/webhooks/deliveries/{attempt_id}/redeliver"):
                                              "401 401 401 401 403 403 404 401 403 401 403 403 404",
    # The upstream scorer's upsert: scorers, supervisors and admins; agents 403 (SPEC 7.1).
    ("PUT", "/api/scores"):                   "401 401 401 401 403 200 200 401 200 401 403 200 200",
    # Signing in is open to anyone (a wrong password is 401 whoever asks); signing out ends a
    # session, so it needs one; the identity provider's routes are 404 when it is not configured.
    ("GET", "/auth/login"):                   OPEN,
    ("POST", "/auth/login"):                  "401 " * 13,
    ("POST", "/auth/logout"):                 "401 401 401 401 401 401 401 401 401 401 204 204 204",
    ("GET", "/auth/set-password"):            "400 " * 13,
    ("POST", "/auth/set-password"):           "400 " * 13,
    ("GET", "/auth/oidc/login"):              "404 " * 13,
    ("GET", "/auth/oidc/callback"):           "404 " * 13,
    # The console: "/" redirects to the agents' view; a page needs a session (else to the
    # sign-in page), the supervisors' and the people page a supervisor's or an admin's (else a
    # 403 page); the assets are public (they hold no data).
    ("GET", "/"):                             "307 " * 13,
    ("GET", "/console"):                      "303 303 303 303 303 303 303 303 303 303 200 200 200",
    ("GET", "/console/supervisor"):           "303 303 303 303 303 303 303 303 303 303 403 200 200",
    ("GET", "/console/people"):               "303 303 303 303 303 303 303 303 303 303 403 200 200",
    ("GET", "/console/static/{path}"):        OPEN,
}
# fmt: on
MATRIX: dict[tuple[str, str], tuple[int, ...]] = {
    route: tuple(int(status) for status in row.split()) for route, row in ROWS.items()
}

# The request sent for each route: valid, and harmless (a dry run, nobody's assignment). A body
# may depend on the caller (an email each, so one creation does not make the next a conflict);
# "{target}" in a path or a body is an agent the people routes may change.
Body = Any | Callable[[str], Any]


@dataclass(frozen=True)
class Call:
    path: str
    json: Body = None
    params: dict[str, Any] = field(default_factory=dict)

    def body(self, caller: str, target: int) -> Any:
        value = self.json(caller) if callable(self.json) else self.json
        if isinstance(value, dict):
            return {k: target if v == "{target}" else v for k, v in value.items()}
        return value


CALLS: dict[tuple[str, str], Call] = {
    ("GET", POPULATE): Call(POPULATE, params={"dry_run": "true"}),
    ("GET", "/docs/assets/{name}"): Call("/docs/assets/swagger-ui.css"),
    ("POST", "/api/queues/{queue_type}/next-user"): Call("/api/queues/unsigned_users/next-user"),
    ("POST", "/api/assignments/{assignment_id}/extend"): Call(f"/api/assignments/{NOBODY}/extend"),
    ("POST", "/api/assignments/{assignment_id}/release"): Call(
        f"/api/assignments/{NOBODY}/release", json={"requeue": True}
    ),
    ("POST", "/api/assignments/{assignment_id}/complete"): Call(
        f"/api/assignments/{NOBODY}/complete", json={"outcome": "no_answer"}
    ),
    ("PUT", "/api/admin/flags"): Call("/api/admin/flags", json={"MIGRATION_MODE": "new-only"}),
    ("POST", "/api/admin/assignments/{assignment_id}/release"): Call(
        f"/api/admin/assignments/{NOBODY}/release", json={"reason": "matrix"}
    ),
    ("GET", "/api/queues/{queue_type}"): Call("/api/queues/unsigned_users"),
    ("PUT", "/api/admin/calling-rules"): Call(
        "/api/admin/calling-rules", json={"hours": "mon-fri 08:00-21:00; sat 09:00-17:00"}
    ),
    ("POST", "/api/admin/suppression"): Call(
        "/api/admin/suppression", json={"phones": ["07700 900999"]}
    ),
    ("DELETE", "/api/admin/suppression"): Call(
        "/api/admin/suppression", json={"phones": ["07700 900999"]}
    ),
    ("GET", "/api/reports/compliance"): Call(
        "/api/reports/compliance", params={"from": "2026-11-30", "to": "2026-12-06"}
    ),
    ("PUT", "/api/scores"): Call(
        "/api/scores", json={"scores": [{"user_id": 4242, "current_score": 7}]}
    ),
    ("POST", "/api/admin/populate"): Call("/api/admin/populate", params={"dry_run": "true"}),
    ("GET", "/console/static/{path}"): Call("/console/static/agent.js"),
    ("POST", "/api/admin/callbacks/{callback_id}/cancel"): Call(
        f"/api/admin/callbacks/{NOBODY}/cancel"
    ),
    ("POST", "/api/admin/callbacks/{callback_id}/reassign"): Call(
        f"/api/admin/callbacks/{NOBODY}/reassign", json={"agent_id": 1}
    ),
    ("POST", "/api/admin/people"): Call(
        "/api/admin/people",
        json=lambda caller: {"email": f"new-{caller}@example.com", "role": "agent"},
    ),
    ("PATCH", "/api/admin/people/{person_id}"): Call(
        "/api/admin/people/{target}", json={"display_name": "Matrix target"}
    ),
    ("POST", "/api/admin/people/{person_id}/reset-password"): Call(
        "/api/admin/people/{target}/reset-password"
    ),
    ("POST", "/api/admin/people/{person_id}/sign-out"): Call("/api/admin/people/{target}/sign-out"),
    ("POST", "/api/admin/tokens"): Call(
        "/api/admin/tokens", json={"name": "matrix", "agent_id": "{target}"}
    ),
    ("DELETE", "/api/admin/tokens/{token_id}"): Call("/api/admin/tokens/987654321"),
    ("POST", "/api/admin/users/{user_id}/erase"): Call("/api/admin/users/987654321/erase"),
    ("GET", "/api/admin/users/{user_id}/export"): Call("/api/admin/users/987654321/export"),
    ("POST", "/api/admin/webhooks"): Call(
        "/api/admin/webhooks",
        json={"url": "https://receiver.example/hooks", "event_types": ["user.erased"]},
    ),
    ("GET", "/api/admin/webhooks/{endpoint_id}"): Call("/api/admin/webhooks/" + NOWHERE),
    ("PATCH", "/api/admin/webhooks/{endpoint_id}"): Call(
        "/api/admin/webhooks/" + NOWHERE, json={"description": "matrix"}
    ),
    ("DELETE", "/api/admin/webhooks/{endpoint_id}"): Call("/api/admin/webhooks/" + NOWHERE),
    ("POST", "/api/admin/webhooks/{endpoint_id}/rotate-secret"): Call(
        "/api/admin/webhooks/" + NOWHERE + "/rotate-secret"
    ),
    ("POST", "/api/admin/webhooks/{endpoint_id}/test"): Call(
        "/api/admin/webhooks/" + NOWHERE + "/test"
    ),
    ("GET", "/api/admin/webhooks/{endpoint_id}/deliveries"): Call(
        "/api/admin/webhooks/" + NOWHERE + "/deliveries"
    ),
    ("POST", "/api/admin/webhooks/deliveries/{attempt_id}/redeliver"): Call(
        "/api/admin/webhooks/deliveries/00000000-0000-4000-8000-000000000000/redeliver"
    ),
    ("POST", "/auth/login"): Call(
        "/auth/login",
        json=lambda caller: {"email": f"{caller}@nowhere.example", "password": "not the one"},
    ),
    ("GET", "/auth/set-password"): Call("/auth/set-password", params={"token": "cqp_unknown"}),
    ("POST", "/auth/set-password"): Call(
        "/auth/set-password", json={"token": "cqp_unknown", "password": "a long enough password"}
    ),
}


def call_for(route: tuple[str, str]) -> Call:
    """The route's request: from CALLS, or the path itself for a route without parameters."""
    if route in CALLS:
        return CALLS[route]
    assert "{" not in route[1], f"{route} needs an entry in CALLS"
    return Call(route[1])


assert all(len(row) == len(CALLERS) for row in MATRIX.values())

# Mounted static file directories (no methods of their own): the console's assets.
STATIC_MOUNTS = {"/console/static"}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) the app answers, included routers expanded. HEAD, which
    Starlette adds beside GET, is the GET route."""
    try:  # FastAPI >= 0.16x keeps included routers lazily; this expands them.
        from fastapi.routing import iter_route_contexts

        found = [(c.path, c.methods) for c in iter_route_contexts(app.routes)]
    except ImportError:  # older FastAPI: app.routes is already flat
        found = [(getattr(r, "path", None), getattr(r, "methods", None)) for r in app.routes]
    routes: set[tuple[str, str]] = set()
    for path, methods in found:
        if path in STATIC_MOUNTS and methods is None:  # files, by GET: one row for the mount
            routes.add(("GET", f"{path}/{{path}}"))
            continue
        # A mount, a websocket or anything else without HTTP methods needs a decision too.
        assert path and methods, f"route {path!r} has no HTTP methods: add it to the matrix"
        for method in methods:
            if method == "HEAD" and "GET" in methods:
                continue
            routes.add((method, path))
    return routes


@dataclass
class Callers:
    headers: dict[str, dict[str, str]]
    # Every secret the callers present (tokens, session tokens), never to be reflected back.
    secrets: dict[str, str]
    target: int  # an agent the people routes may change


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def callers(client: TestClient, store_engine: Engine, cron_headers: dict[str, str]) -> Callers:
    """One principal of each kind, and a successful population first, so the health check has
    something to report (degraded: empty queues) instead of 'never populated'."""
    with store_engine.begin() as conn:
        tokens = {
            "agent": create_agent(conn, "matrix-agent", "agent"),
            "super": create_agent(conn, "matrix-super", "supervisor"),
            "admin": create_agent(conn, "matrix-admin", "admin"),
            "deact_agent": create_agent(conn, "matrix-gone-agent", "agent"),
            "deact_super": create_agent(conn, "matrix-gone-super", "supervisor"),
            "scorer": create_agent(conn, "matrix-scorer", "scorer"),
            "deact_scorer": create_agent(conn, "matrix-gone-scorer", "scorer"),
        }
        deactivate_agent(conn, "matrix-gone-agent")
        deactivate_agent(conn, "matrix-gone-super")
        deactivate_agent(conn, "matrix-gone-scorer")
    tokens["wrong"] = "cq_" + uuid.uuid4().hex + uuid.uuid4().hex
    tokens["cron"] = CRON_SECRET
    run = client.get(POPULATE, headers=cron_headers)
    assert run.status_code == 200, run.text
    headers = {name: bearer(token) for name, token in tokens.items()}
    headers["none"] = {}
    secrets = dict(tokens)
    for name, role in (("agent_s", "agent"), ("super_s", "supervisor"), ("admin_s", "admin")):
        person = signed_in(store_engine, f"{name}@example.com", role)
        headers[name] = person.auth
        secrets[name] = person.auth["Cookie"].split("=", 1)[1]
    target = new_agent(store_engine, "matrix-target")
    return Callers(headers, secrets, target.id)


def test_the_matrix_covers_every_route(client: TestClient) -> None:
    routes = app_routes(client.app)  # type: ignore[arg-type]
    missing = sorted(routes - MATRIX.keys())
    stale = sorted(MATRIX.keys() - routes) + sorted(CALLS.keys() - routes)
    assert not missing, f"routes without an access-matrix row: {missing}"
    assert not stale, f"matrix rows for routes that no longer exist: {stale}"


# Pages answer pages (HTML), whatever the status; everything else answers JSON errors.
PAGES = ("/console", "/auth/set-password")


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_access_matrix(client: TestClient, callers: Callers, route: tuple[str, str]) -> None:
    method, _ = route
    call = call_for(route)
    observed: dict[str, int] = {}
    for caller in CALLERS:
        client.cookies.clear()
        response = client.request(
            method,
            call.path.replace("{target}", str(callers.target)),
            headers=callers.headers[caller],
            params=call.params,
            json=call.body(caller, callers.target),
            follow_redirects=False,
        )
        observed[caller] = response.status_code
        if response.status_code >= 400:
            if method == "GET" and call.path.startswith(PAGES):
                assert response.headers["content-type"].startswith("text/html"), caller
            else:
                body = response.json()
                assert isinstance(body.get("error"), str), (caller, body)
                assert isinstance(body.get("detail"), str), (caller, body)
        if response.status_code == 401:
            assert response.headers.get("www-authenticate") == "Bearer", caller
        if response.status_code == 303 and call.path.startswith("/console"):
            assert response.headers["location"].startswith("/auth/login"), caller
        # A credential is never reflected back, whoever sends it.
        for secret in callers.secrets.values():
            assert secret not in response.text, caller
    assert observed == dict(zip(CALLERS, MATRIX[route], strict=True))


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + CRON_SECRET,  # right secret, wrong scheme
        "Bearer",  # scheme alone
        "Bearer ",  # empty credentials
        CRON_SECRET,  # no scheme
        "Token " + CRON_SECRET,
    ],
)
def test_malformed_authorization_headers_are_refused(
    client: TestClient, callers: Callers, authorization: str
) -> None:
    for method, path in (("GET", "/api/cron/queue-level-check"), ("GET", "/api/admin/flags")):
        response = client.request(method, path, headers={"Authorization": authorization})
        assert response.status_code == 401, (path, response.text)
        assert set(response.json()) == {"error", "detail"}


def test_non_ascii_and_binary_tokens_are_refused_not_crashed(client: TestClient) -> None:
    for raw in ("Bearer caf\u00e9".encode(), b"Bearer \xff\xfe\x00", b"Bearer " + b"A" * 8000):
        for path in ("/api/assignments/current", "/api/cron/queue-level-check"):
            response = client.get(path, headers={"Authorization": raw})  # type: ignore[dict-item]
            assert response.status_code == 401, (path, raw[:20], response.text)


# -- documentation: DOCS_ENABLED ----------------------------------------------------------------

DOCS_ROUTES = [route for route in MATRIX if route[1] == "/openapi.json"]
DOCS_ROUTES += [route for route in MATRIX if route[1].startswith("/docs")]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"app_env": "production"}, 404),  # the default in production: off
        ({"app_env": "production", "docs_enabled": True}, 200),
        ({"app_env": "development"}, 200),
        ({"app_env": "test", "docs_enabled": False}, 404),
    ],
    ids=["production", "production-enabled", "development", "test-disabled"],
)
def test_documentation_is_off_in_production(
    make_client: Callable[..., TestClient],
    overrides: dict[str, Any],
    expected: int,
    callers: Callers,
) -> None:
    """/docs, /redoc, /openapi.json and the pages' assets exist only where DOCS_ENABLED (by
    default: not in production), whoever asks; the rest of the matrix is unchanged."""
    client = make_client(**overrides)
    routes = app_routes(client.app)  # type: ignore[arg-type]
    for route in DOCS_ROUTES:
        assert (route in routes) == (expected == 200), route
        for caller in CALLERS:
            got = client.get(call_for(route).path, headers=callers.headers[caller])
            assert got.status_code == expected, (route, caller, got.text)
            if expected == 404:
                assert set(got.json()) == {"error", "detail"}
    # Everything else answers as the matrix says.
    assert routes - set(DOCS_ROUTES) == set(MATRIX) - set(DOCS_ROUTES)
    ready = client.get("/readyz")
    assert ready.status_code == 200


# -- tokens at rest ---------------------------------------------------------------------------


def test_tokens_are_stored_only_as_sha256_hashes(
    client: TestClient,
    store_engine: Engine,
    callers: Callers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Use every token, so any table a request might write (ledger, audit, flags) gets its chance.
    for name in ("agent", "super", "agent_s", "super_s", "admin_s"):
        got = client.get("/api/assignments/current", headers=callers.headers[name])
        assert got.status_code == 204
    put = client.put(
        "/api/admin/flags", headers=callers.headers["super"], json={"MIGRATION_MODE": "dual"}
    )
    assert put.status_code == 200
    assert (
        client.get("/api/queues/stats", headers=callers.headers["deact_agent"]).status_code == 401
    )

    issued = {n: t for n, t in callers.secrets.items() if n not in ("wrong", "cron")}
    with store_engine.connect() as conn:
        hashes = {
            name: token_hash
            for name, token_hash in conn.execute(
                text(
                    "SELECT name, token_hash FROM api_tokens"
                    " WHERE name LIKE 'matrix-%' AND name <> 'matrix-target'"
                )
            )
        }
        columns = conn.execute(
            text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
            )
        ).all()
        assert len({t for t, _ in columns}) >= 10, columns  # the whole schema, not an empty one
        leaks = []
        for secret in [*issued.values(), CRON_SECRET]:
            for table, column in columns:
                hits = conn.execute(
                    text(
                        f'SELECT count(*) FROM "{table}"'
                        f' WHERE strpos("{column}"::text, :secret) > 0'
                        f' OR strpos("{column}"::text, :body) > 0'
                    ),
                    {"secret": secret, "body": secret.split("_", 1)[-1]},
                ).scalar_one()
                if hits:
                    leaks.append((table, column))

    assert hashes == {
        "matrix-agent": hashlib.sha256(issued["agent"].encode()).hexdigest(),
        "matrix-super": hashlib.sha256(issued["super"].encode()).hexdigest(),
        "matrix-admin": hashlib.sha256(issued["admin"].encode()).hexdigest(),
        "matrix-gone-agent": hashlib.sha256(issued["deact_agent"].encode()).hexdigest(),
        "matrix-gone-super": hashlib.sha256(issued["deact_super"].encode()).hexdigest(),
        "matrix-scorer": hashlib.sha256(issued["scorer"].encode()).hexdigest(),
        "matrix-gone-scorer": hashlib.sha256(issued["deact_scorer"].encode()).hexdigest(),
    }
    assert not leaks, f"a token or the cron secret is stored in plain text in {leaks}"
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in [*issued.values(), CRON_SECRET]:
        assert secret not in logged


# -- the cron secret --------------------------------------------------------------------------


def _calls_in(func: Callable[..., Any]) -> list[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = node.func
            names.append(
                target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            )
    return names


def test_the_cron_and_metrics_secrets_are_compared_in_constant_time() -> None:
    # One comparison (deps.secret_matches), in constant time, used by both checks.
    assert "compare_digest" in _calls_in(deps.secret_matches)
    assert deps.hmac.compare_digest is __import__("hmac").compare_digest
    assert "secret_matches" in _calls_in(deps.require_cron_secret)
    assert "secret_matches" in _calls_in(ops.prometheus_metrics)
    # No short-circuiting string comparison of the presented credential anywhere in the checks.
    for check in (deps.secret_matches, deps.require_cron_secret, ops.prometheus_metrics):
        tree = ast.parse(textwrap.dedent(inspect.getsource(check)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                pytest.fail(f"== / != in {check.__name__}: {ast.unparse(node)}")


@pytest.mark.parametrize(
    "presented",
    [
        CRON_SECRET[:-1] + ("A" if CRON_SECRET[-1] != "A" else "B"),  # differs in the last char
        "X" + CRON_SECRET[1:],  # differs in the first char
        CRON_SECRET[:-1],  # a prefix
        CRON_SECRET + "0",  # an extension
        CRON_SECRET.upper(),
        "",
    ],
    ids=["last-char", "first-char", "prefix", "extension", "upper", "empty"],
)
def test_a_near_miss_cron_secret_is_refused(client: TestClient, presented: str) -> None:
    for method in ("GET", "POST"):
        response = client.request(method, POPULATE, headers=bearer(presented))
        assert response.status_code == 401, response.text
        assert CRON_SECRET not in response.text
    assert client.get("/api/cron/queue-level-check", headers=bearer(presented)).status_code == 401


def test_without_a_configured_cron_secret_nobody_passes(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(cron_secret="")
    for token in (CRON_SECRET, "", "None", "null"):
        assert client.post(POPULATE, headers=bearer(token)).status_code == 401


# -- cross-origin -----------------------------------------------------------------------------


def preflight(client: TestClient, origin: str, path: str = "/api/queues/stats") -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_no_cross_origin_access_by_default(client: TestClient, callers: Callers) -> None:
    for path in ("/api/queues/stats", "/api/admin/flags", POPULATE):
        answer = preflight(client, "https://evil.example", path)
        assert "access-control-allow-origin" not in answer.headers, path
        assert answer.status_code >= 400, path
    simple = client.get(
        "/api/queues/stats",
        headers={"Origin": "https://evil.example", **callers.headers["agent"]},
    )
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-credentials" not in simple.headers


def test_cross_origin_access_only_for_configured_origins(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    client = make_client(cors_origins="https://dash.example")
    with store_engine.begin() as conn:
        token = create_agent(conn, "cors-agent")

    allowed = preflight(client, "https://dash.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    refused = preflight(client, "https://evil.example")
    assert refused.status_code >= 400
    assert "access-control-allow-origin" not in refused.headers
    # Not a wildcard, and not a prefix or suffix match either.
    for lookalike in ("https://dash.example.evil.example", "https://evil-dash.example", "null"):
        assert "access-control-allow-origin" not in preflight(client, lookalike).headers

    simple = client.get(
        "/api/queues/stats", headers={"Origin": "https://dash.example", **bearer(token)}
    )
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "https://dash.example"
    evil = client.get(
        "/api/queues/stats", headers={"Origin": "https://evil.example", **bearer(token)}
    )
    assert "access-control-allow-origin" not in evil.headers
