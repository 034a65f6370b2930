"""Bodies (SPEC 8.1): nothing of a body is read before two checks, in this order: a declared
``Content-Length`` over the route's cap is 413 whatever the credentials; then the credentials, so
an anonymous or wrongly-roled request within the cap is 401/403 without its body being read. A
streamed body that outgrows the cap is 413 when it does. ``PUT /api/scores`` has a cap of its own,
SCORES_MAX_BODY_BYTES; every other route has MAX_BODY_BYTES.

In process, at the ASGI level, so each test sees exactly how much of the body the application
pulled: the body is handed over in chunks, on demand, and counted (an HTTP client would send it
all at once). The same through a real server on a socket is in ``test_body_limit.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.config import load_settings
from app.errors import ConfigError
from app.main import create_app
from tests.factories import new_agent

KIB = 1024
MIB = 1024 * KIB
CHUNK = 64 * KIB
UNKNOWN = {"Authorization": "Bearer cq_" + "0" * 64}
# Not JSON: read, it would be a 422.
MALFORMED = b'{"not json' + b" " * (4 * KIB)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    chunks_read: int
    chunks: int
    headers: dict[str, str] = field(default_factory=dict)


def call(
    client: TestClient,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    declared: bool = True,
) -> Answer:
    """One request straight into the ASGI app (lifespan started by the TestClient), its body
    handed over CHUNK bytes at a time, only when the app asks for more: with its length declared,
    or chunked (no Content-Length)."""
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    read = 0
    raw_headers = [(b"host", b"testserver"), (b"content-type", b"application/json")]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if declared:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    else:
        raw_headers.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "extensions": {},
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= len(pieces):
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": pieces[read - 1], "more_body": read < len(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    client.portal.call(client.app, scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:] if m["type"] == "http.response.body")
    headers_out = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return Answer(start["status"], json.loads(content), read, len(pieces), headers_out)


def too_large(limit: int) -> dict[str, str]:
    return {
        "error": "ContentTooLarge",
        "detail": f"the request body is larger than the {limit}-byte limit",
    }


def scores_body(size: int) -> bytes:
    """A valid PUT /api/scores body of 10,000 rows, padded with JSON whitespace to ``size``."""
    rows = [
        {
            "user_id": 7_000_000 + n,
            "current_score": n % 201,
            "base_score": n % 150,
            "outcome_penalty_score": n % 30,
            "time_penalty_score": n % 20,
        }
        for n in range(10_000)
    ]
    body = json.dumps({"scores": rows}, indent=2).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def test_scores_refuse_anonymous_and_agents_before_reading_a_2_mib_body(
    client: TestClient, store_engine: Engine
) -> None:
    body = scores_body(2 * MIB)
    agent = new_agent(store_engine, "caller")
    scorer = new_agent(store_engine, "scorer", "scorer")

    for who, headers, status in (
        ("anonymous", {}, 401),
        ("unknown token", UNKNOWN, 401),
        ("agent", agent.auth, 403),
    ):
        answer = call(client, "PUT", "/api/scores", body, headers)
        assert (answer.status, answer.body["error"]) == (
            status,
            "Unauthorized" if status == 401 else "Forbidden",
        ), who
        assert answer.chunks_read == 0, f"{who}: {answer.chunks_read} of {answer.chunks} read"
        # Nothing of the body was read: the connection cannot be reused for another request.
        assert answer.headers["connection"] == "close", who

    # Control: the scorer's request is read to the end and applied.
    answer = call(client, "PUT", "/api/scores", body, scorer.auth)
    assert answer.status == 200, answer.body
    assert answer.body["created"] == 10_000
    assert answer.chunks_read == answer.chunks == 2 * MIB // CHUNK


# Every route that takes a body, and who may call it. The test below it fails when a route with a
# body is added and not listed here.
BODY_ROUTES = {
    ("PUT", "/api/scores"): "scorer",
    ("PUT", "/api/admin/flags"): "supervisor",
    ("POST", "/api/admin/assignments/{assignment_id}/release"): "supervisor",
    ("POST", "/api/admin/callbacks/{callback_id}/cancel"): "supervisor",
    ("POST", "/api/admin/callbacks/{callback_id}/reassign"): "supervisor",
    ("PUT", "/api/admin/calling-rules"): "supervisor",
    ("POST", "/api/admin/suppression"): "supervisor",
    ("DELETE", "/api/admin/suppression"): "supervisor",
    ("POST", "/api/assignments/{assignment_id}/release"): "agent",
    ("POST", "/api/assignments/{assignment_id}/complete"): "agent",
    ("POST", "/api/admin/people"): "supervisor",
    ("PATCH", "/api/admin/people/{person_id}"): "supervisor",
    ("POST", "/api/admin/tokens"): "admin",
    ("POST", "/api/admin/webhooks"): "admin",
    ("PATCH", "/api/admin/webhooks/{endpoint_id}"): "admin",
}


def test_every_route_that_takes_a_body_is_listed_and_checks_credentials_first() -> None:
    from app.api.routing import CredentialsFirstRoute

    app = create_app(load_settings(app_env="test"))
    with_body = [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and context.original_route.body_field is not None
    ]
    assert {(m, c.path) for c in with_body for m in c.methods} == set(BODY_ROUTES)
    for context in with_body:
        assert isinstance(context.original_route, CredentialsFirstRoute), context.path


def concrete(path: str) -> str:
    return (
        path.replace("{assignment_id}", str(uuid.uuid4()))
        .replace("{callback_id}", str(uuid.uuid4()))
        .replace("{person_id}", "1")
        .replace("{endpoint_id}", str(uuid.uuid4()))
    )


@pytest.mark.parametrize(("method", "path"), sorted(BODY_ROUTES))
def test_credentials_are_checked_before_a_body_is_read(
    client: TestClient, store_engine: Engine, method: str, path: str
) -> None:
    """A malformed body would be a 422 if it were read: anonymous is 401, a token of the wrong
    role 403, and neither reads a byte of it."""
    role = BODY_ROUTES[(method, path)]
    target = concrete(path)
    agent = new_agent(store_engine, "caller")
    scorer = new_agent(store_engine, "scorer", "scorer")

    anonymous = [("anonymous", {}), ("unknown token", UNKNOWN)]
    boss = new_agent(store_engine, "boss", "supervisor")
    wrong = {
        "scorer": [agent],
        "supervisor": [agent, scorer],
        "admin": [agent, scorer, boss],
        "agent": [scorer],
    }[role]
    if path.endswith("/complete"):
        # The documented exception (README, "next-user and complete check a present token
        # after the request's shape"): a request with a token and a malformed body is 422
        # before the token is looked up. Without a token it is 401 at once.
        anonymous, wrong = anonymous[:1], []
    for who, headers in anonymous:
        answer = call(client, method, target, MALFORMED, headers)
        assert (answer.status, answer.body["error"]) == (401, "Unauthorized"), who
        assert answer.chunks_read == 0, who

    for person in wrong:
        answer = call(client, method, target, MALFORMED, person.auth)
        assert (answer.status, answer.body["error"]) == (403, "Forbidden"), person.name
        assert answer.chunks_read == 0, person.name

    # Control: with the right credentials the body is read, and it is malformed.
    right = {
        "scorer": scorer,
        "supervisor": boss,
        "admin": new_agent(store_engine, "root", "admin"),
        "agent": agent,
    }[role]
    answer = call(client, method, target, MALFORMED, right.auth)
    assert (answer.status, answer.body["error"]) == (422, "ValidationError")
    assert answer.chunks_read == answer.chunks


def test_each_route_has_its_cap_and_a_declared_length_over_it_is_413_whoever_asks(
    make_client: Callable[..., TestClient], store_engine: Engine
) -> None:
    client = make_client(max_body_bytes=16 * KIB, scores_max_body_bytes=4 * CHUNK)
    scorer = new_agent(store_engine, "scorer", "scorer")
    boss = new_agent(store_engine, "boss", "supervisor")

    # Over the scores route's cap: 413 before the credentials, whoever asks.
    for who, headers in (("anonymous", {}), ("scorer", scorer.auth)):
        answer = call(client, "PUT", "/api/scores", b" " * (4 * CHUNK + 1), headers)
        assert (answer.status, answer.body) == (413, too_large(4 * CHUNK)), who
        assert answer.chunks_read == 0, who
        assert answer.headers["connection"] == "close", who

    # Over MAX_BODY_BYTES but within the scores route's own cap: the credentials decide.
    answer = call(client, "PUT", "/api/scores", b" " * (2 * CHUNK), {})
    assert (answer.status, answer.chunks_read) == (401, 0)
    # Any other route has MAX_BODY_BYTES.
    for who, headers in (("anonymous", {}), ("supervisor", boss.auth)):
        answer = call(client, "PUT", "/api/admin/flags", b" " * (2 * CHUNK), headers)
        assert (answer.status, answer.body) == (413, too_large(16 * KIB)), who
        assert answer.chunks_read == 0, who

    # Streamed (no Content-Length): read after the credentials, 413 at the chunk that crosses
    # the cap; nothing after it is read.
    answer = call(client, "PUT", "/api/scores", b" " * (8 * CHUNK), scorer.auth, declared=False)
    assert (answer.status, answer.body) == (413, too_large(4 * CHUNK))
    assert answer.chunks_read == 5
    answer = call(client, "PUT", "/api/scores", b" " * (8 * CHUNK), {}, declared=False)
    assert (answer.status, answer.chunks_read) == (401, 0)


def test_scores_max_body_bytes_is_a_validated_setting() -> None:
    assert load_settings(app_env="test").scores_max_body_bytes == 8 * MIB
    assert load_settings(app_env="test", scores_max_body_bytes=MIB).scores_max_body_bytes == MIB
    for bad in ("100", "lots", str(2 * 1024 * MIB)):
        with pytest.raises(ConfigError, match="SCORES_MAX_BODY_BYTES"):
            load_settings(app_env="test", scores_max_body_bytes=bad)
