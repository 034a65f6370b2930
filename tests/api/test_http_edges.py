"""HTTP edges (issue 11, items 6 and 8): a 405 says what is allowed, date-times are ISO 8601
strings only, the document states what is enforced, free-text release reasons stay out of
listings and logs, and /metrics can require a token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.config import load_settings
from app.main import create_app
from tests.api.test_agents_api import book, claim, fetch_all, new_agent
from tests.factories import Replica

DOCUMENT: dict[str, Any] = create_app(load_settings(app_env="test")).openapi()
SECRET_REASON = "Mrs Jones asked us to call her daughter on 07700 900461"
SECRET_NOTES = "prefers evenings; husband is Mr Jones"


# -- 405 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/admin/flags", {"GET", "PUT"}),
        ("GET", "/api/queues/unsigned_users/next-user", {"POST"}),
        ("PUT", "/api/cron/populate-separated-queues", {"GET", "POST"}),
        ("POST", "/readyz", {"GET"}),
    ],
)
def test_a_405_carries_allow(client: TestClient, method: str, path: str, allow: set[str]) -> None:
    got = client.request(method, path)
    assert got.status_code == 405, got.text
    assert {m.strip() for m in got.headers["allow"].split(",")} - {"HEAD"} == allow
    assert got.json() == {"error": "MethodNotAllowed", "detail": "Method Not Allowed"}


# -- date-times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"until": "0.5"}, 422),  # once accepted as 1970-01-01T00:00:00.5Z
        ({"since": "1700000000"}, 422),
        ({"since": "-1"}, 422),
        ({"until": "2026-01-01"}, 422),  # no time, no offset
        ({"until": "2026-01-01T00:00:00"}, 422),  # no offset
        ({"until": "2026-01-01 00:00:00Z"}, 422),  # not the RFC 3339 separator
        ({"until": "2026-01-01T00:00:00Z"}, 200),
        ({"since": "2026-01-01T00:00:00.123456+05:30"}, 200),
    ],
)
def test_date_time_query_parameters_take_iso_strings_only(
    client: TestClient, store_engine: Engine, params: dict[str, str], status: int
) -> None:
    boss = new_agent(store_engine, "edge-boss", "supervisor")
    got = client.get("/api/assignments", params=params, headers=boss.auth)
    assert got.status_code == status, got.text
    if status == 422:
        assert got.json()["fields"][0]["loc"] == ["query", next(iter(params))]
        value = next(iter(params.values()))
        assert len(value) < 4 or value not in got.text  # never echoed


def test_callback_at_must_be_a_date_time_string(
    client: TestClient, store_engine: Engine, replica: Replica, cron_headers: dict[str, str]
) -> None:
    book(client, store_engine, replica, cron_headers)
    alice = new_agent(store_engine, "edge-alice")
    held = claim(client, alice)
    for bad in (1893456000, 1893456000.5, "1893456000", True):
        got = client.post(
            f"/api/assignments/{held['assignment_id']}/complete",
            headers=alice.auth,
            json={"outcome": "call_back", "callback_at": bad},
        )
        assert got.status_code == 422, (bad, got.text)
        assert got.json()["fields"][0]["loc"][:2] == ["body", "callback_at"]


# -- the document says what is enforced --------------------------------------------------------


def test_flags_cannot_be_null_in_the_document_or_the_api(
    client: TestClient, store_engine: Engine
) -> None:
    schema = DOCUMENT["components"]["schemas"]["FlagsIn"]["properties"]
    for name in ("USE_SEPARATED_QUEUES", "USE_NEW_QUEUE_SERVICES", "ENABLE_QUEUE_VALIDATION"):
        assert schema[name]["type"] == "boolean"
        assert "anyOf" not in schema[name]
    assert schema["MIGRATION_MODE"] == {
        "type": "string",
        "enum": ["new-only", "dual", "legacy-only"],
    }
    boss = new_agent(store_engine, "null-boss", "supervisor")
    for name in schema:
        got = client.put("/api/admin/flags", headers=boss.auth, json={name: None})
        assert got.status_code == 422, (name, got.text)


def test_the_callback_rule_is_in_the_document() -> None:
    complete_in = DOCUMENT["components"]["schemas"]["CompleteIn"]
    callback_at = complete_in["properties"]["callback_at"]
    assert "30 days" in callback_at["description"]
    assert "call_back, going_to_complete, might_complete" in callback_at["description"]
    assert complete_in["if"]["properties"]["outcome"] == {
        "not": {"enum": ["call_back", "going_to_complete", "might_complete"]}
    }
    assert complete_in["then"] == {"properties": {"callback_at": {"type": "null"}}}
    date_time = callback_at["anyOf"][0]
    assert (date_time["type"], date_time["format"]) == ("string", "date-time")


def test_date_time_query_parameters_are_documented_as_date_time_strings() -> None:
    for parameter in DOCUMENT["paths"]["/api/assignments"]["get"]["parameters"]:
        if parameter["name"] in ("since", "until"):
            assert parameter["schema"]["type"] == "string"
            assert parameter["schema"]["format"] == "date-time"


# -- personal data: release reasons ------------------------------------------------------------


def test_release_reasons_stay_out_of_listings_and_logs(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    book(client, store_engine, replica, cron_headers, unsigned=(1, 2, 3))
    alice, bob = new_agent(store_engine, "pd-alice"), new_agent(store_engine, "pd-bob")
    boss = new_agent(store_engine, "pd-boss", "supervisor")

    held = claim(client, alice)
    got = client.post(
        f"/api/assignments/{held['assignment_id']}/release",
        headers=alice.auth,
        json={"requeue": False, "reason": SECRET_REASON},
    )
    assert got.status_code == 200, got.text
    forced = claim(client, bob)
    got = client.post(
        f"/api/admin/assignments/{forced['assignment_id']}/release",
        headers=boss.auth,
        json={"reason": SECRET_REASON},
    )
    assert got.status_code == 200, got.text
    done = claim(client, alice)
    got = client.post(
        f"/api/assignments/{done['assignment_id']}/complete",
        headers=alice.auth,
        json={"outcome": "no_answer", "notes": SECRET_NOTES},
    )
    assert got.status_code == 200, got.text

    # Kept on the ledger rows (the compliance record) ...
    stored = fetch_all(
        store_engine, "SELECT release_reason FROM assignments WHERE release_reason IS NOT NULL"
    )
    assert sorted(r["release_reason"] for r in stored) == sorted(
        [f"forced by supervisor pd-boss: {SECRET_REASON}", SECRET_REASON]
    )
    # ... and nowhere else: not in the ledger listing, not in any answer, not in the logs.
    listing = client.get("/api/assignments", headers=boss.auth, params={"limit": 500})
    assert listing.status_code == 200
    assert len(listing.json()["items"]) == 3
    for item in listing.json()["items"]:
        assert "release_reason" not in item
    for text_ in (SECRET_REASON, SECRET_NOTES):
        assert text_ not in listing.text
        logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
        assert text_ not in logged


# -- METRICS_TOKEN -----------------------------------------------------------------------------

METRICS_TOKEN = "metrics-token-0123456789abcdef"


def test_metrics_are_open_without_a_token(client: TestClient) -> None:
    got = client.get("/metrics")
    assert got.status_code == 200
    assert "callqueue_database_up 1.0" in got.text


def test_metrics_token_protects_metrics(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics_token=METRICS_TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
    ):
        got = client.get("/metrics", headers=headers)
        assert got.status_code == 401, headers
        assert got.json() == {
            "error": "Unauthorized",
            "detail": "a valid metrics bearer token is required",
        }
        assert got.headers["www-authenticate"] == "Bearer"
        assert METRICS_TOKEN not in got.text
    got = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain")
    assert "callqueue_database_up 1.0" in got.text
    # The probes stay open.
    assert client.get("/readyz").status_code == 200
