"""Endpoints through the API (SPEC 8.4): the secret shown once, clear 422s, a test event sent
now, the delivery log, redelivery with the same webhook-id, and retention of delivered events."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.privacy.retention import Retention
from app.webhooks.delivery import Deliverer
from tests.factories import Agent
from tests.webhooks.conftest import WEBHOOKS
from tests.webhooks.receiver import Receiver


def test_the_secret_is_shown_once_and_bad_input_is_a_clear_422(
    client: TestClient, admin: Agent, endpoint: dict[str, Any]
) -> None:
    assert endpoint["secret"].startswith("whsec_")
    got = client.get(f"{WEBHOOKS}/{endpoint['id']}", headers=admin.auth).json()
    assert "secret" not in got and got["enabled"] and got["description"] == "crm"
    listed = client.get(WEBHOOKS, headers=admin.auth).json()["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    for body in (
        {"url": "ftp://receiver.example/x", "event_types": ["user.erased"]},
        {"url": "https://receiver.example/x", "event_types": []},
        {"url": "https://receiver.example/x", "event_types": ["user.named"]},
        {"url": "https://[::1/x", "event_types": ["user.erased"]},
    ):
        r = client.post(WEBHOOKS, json=body, headers=admin.auth)
        assert r.status_code == 422, (body, r.text)
        assert set(r.json()) >= {"error", "detail"}
    r = client.patch(f"{WEBHOOKS}/{endpoint['id']}", json={"url": None}, headers=admin.auth)
    assert r.status_code == 422


def test_a_test_event_goes_now_and_redelivery_sends_the_same_event_again(
    client: TestClient,
    admin: Agent,
    endpoint: dict[str, Any],
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    r = client.post(f"{WEBHOOKS}/{endpoint['id']}/test", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert r.json()["delivered"] and r.json()["status_code"] == 200
    first = receiver.received[-1]
    assert b'"webhook.test"' in first.body and b'"seq":1' in first.body
    log = client.get(f"{WEBHOOKS}/{endpoint['id']}/deliveries", headers=admin.auth).json()
    attempt = log["items"][0]
    assert attempt["event_type"] == "webhook.test" and attempt["delivery_status"] == "delivered"
    r = client.post(f"{WEBHOOKS}/deliveries/{attempt['id']}/redeliver", headers=admin.auth)
    assert r.status_code == 202 and r.json()["seq"] == 1
    deliverer.drain()
    again = receiver.received[-1]
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert again.body == first.body
    log = client.get(f"{WEBHOOKS}/{endpoint['id']}/deliveries", headers=admin.auth).json()
    assert [a["attempt"] for a in log["items"]] == [2, 1]
    assert client.delete(f"{WEBHOOKS}/{endpoint['id']}", headers=admin.auth).status_code == 204
    assert client.get(f"{WEBHOOKS}/{endpoint['id']}", headers=admin.auth).status_code == 404


def test_retention_deletes_delivered_events_and_keeps_waiting_ones(
    client: TestClient,
    admin: Agent,
    endpoint: dict[str, Any],
    receiver: Receiver,
    deliverer: Deliverer,
    store_engine: Engine,
    settings: Any,
) -> None:
    for uid in (5, 6):
        client.post(f"/api/admin/users/{uid}/erase", headers=admin.auth)
    deliverer.drain()
    client.post(f"/api/admin/users/{7}/erase", headers=admin.auth)
    deliverer.dispatch()  # dispatched, not yet sent
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE webhook_events SET occurred_at = now() - interval '31 days'"))
    report = Retention(store_engine, settings).run()
    assert report.deleted["webhook_events"] == 2
    with store_engine.connect() as conn:
        left = conn.execute(text("SELECT data->>'user_id' FROM webhook_events")).scalars().all()
    assert left == ["7"]


def test_an_endpoint_removed_while_its_batch_is_sent_loses_nothing_else(
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
    store_engine: Engine,
) -> None:
    """The batch's attempts are recorded for the deliveries still there; the others are gone
    with their endpoint, and the sender goes on."""
    gone = client.post(
        WEBHOOKS, json={"url": receiver.url, "event_types": ["user.erased"]}, headers=admin.auth
    ).json()
    kept = client.post(
        WEBHOOKS, json={"url": receiver.url, "event_types": ["user.erased"]}, headers=admin.auth
    ).json()
    client.post("/api/admin/users/5/erase", headers=admin.auth)
    deliverer.dispatch()
    leases = deliverer.lease(10, only=None)  # the batch, leased, not yet sent
    assert len(leases) == 2
    assert client.delete(f"{WEBHOOKS}/{gone['id']}", headers=admin.auth).status_code == 204
    deliverer.record([(lease, deliverer.send(lease)) for lease in leases])
    with store_engine.connect() as conn:
        rows = conn.execute(text("SELECT endpoint_id, status FROM webhook_deliveries")).all()
    assert [(str(e), s) for e, s in rows] == [(kept["id"], "delivered")]
