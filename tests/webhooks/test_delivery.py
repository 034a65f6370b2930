"""Delivery to a real receiver (SPEC 8.4): the retry schedule on a clock the test moves, 429/503
with Retry-After, 410, timeouts, a receiver that is down, five days of failures, rotation with
both signatures, the address checked when the attempt connects, and two processes delivering at
once without sending one attempt twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from standardwebhooks import Webhook

from app.errors import InvalidInput
from app.webhooks import endpoints
from app.webhooks.delivery import RETRY_WAITS, Deliverer
from tests.conftest import CRON_SECRET, SUPPRESSION_KEY
from tests.factories import Agent
from tests.webhooks.conftest import WEBHOOKS, Clock
from tests.webhooks.receiver import Receiver, Reply


def subscribe(client: TestClient, admin: Agent, url: str, *types: str) -> dict[str, Any]:
    r = client.post(
        WEBHOOKS,
        json={"url": url, "event_types": list(types or ["user.erased"])},
        headers=admin.auth,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def erase(client: TestClient, admin: Agent, *user_ids: int) -> None:
    for uid in user_ids:
        assert client.post(f"/api/admin/users/{uid}/erase", headers=admin.auth).status_code == 200


def delivery(store: Engine) -> Any:
    with store.connect() as conn:
        return conn.execute(text("SELECT * FROM webhook_deliveries")).one()


def endpoint_row(store: Engine, endpoint_id: str) -> Any:
    with store.connect() as conn:
        return conn.execute(
            text("SELECT * FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        ).one()


def test_failures_are_retried_on_the_schedule_then_failed(
    caplog: pytest.LogCaptureFixture,
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: Clock,
    store_engine: Engine,
) -> None:
    made = subscribe(client, admin, receiver.url)
    erase(client, admin, 7)
    receiver.default = Reply(500)
    assert deliverer.drain() == 1  # the first attempt at once
    for wait in RETRY_WAITS:
        clock.advance(wait - timedelta(seconds=2))
        assert deliverer.deliver_due() == 0, "sent before its time"
        clock.advance(timedelta(seconds=2))
        assert deliverer.deliver_due() == 1
    clock.advance(timedelta(days=2))
    assert deliverer.deliver_due() == 0
    row = delivery(store_engine)
    assert (row.status, row.attempts) == ("failed", 1 + len(RETRY_WAITS))
    # Every attempt: the same event, the same webhook-id and body.
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len(set(receiver.bodies())) == 1
    log = client.get(f"{WEBHOOKS}/{row.endpoint_id}/deliveries", headers=admin.auth).json()
    assert [a["attempt"] for a in log["items"]] == list(range(8, 0, -1))
    assert {a["status_code"] for a in log["items"]} == {500}
    # Every failure was logged, never with the secret (nor its key).
    assert caplog.text.count("webhook.attempt_failed") >= 8
    assert made["secret"] not in caplog.text and made["secret"][6:] not in caplog.text


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_the_least_wait_up_to_a_day(
    status: int,
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: Clock,
    store_engine: Engine,
) -> None:
    subscribe(client, admin, receiver.url)
    erase(client, admin, 7)
    receiver.script = [
        Reply(status, headers={"Retry-After": "3600"}),
        Reply(status, headers={"Retry-After": str(7 * 24 * 3600)}),
    ]
    deliverer.drain()
    clock.advance(timedelta(minutes=59))
    assert deliverer.deliver_due() == 0  # not after 5 s: the receiver asked for an hour
    clock.advance(timedelta(minutes=2))
    assert deliverer.deliver_due() == 1
    clock.advance(timedelta(hours=23, minutes=58))
    assert deliverer.deliver_due() == 0
    clock.advance(timedelta(minutes=3))  # a week asked for: a day at most
    assert deliverer.deliver_due() == 1
    assert delivery(store_engine).status == "delivered"


def test_410_disables_the_endpoint_and_health_says_so(
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
    store_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    made = subscribe(client, admin, receiver.url)
    erase(client, admin, 7)
    receiver.default = Reply(410)
    deliverer.drain()
    row = endpoint_row(store_engine, made["id"])
    assert not row.enabled and "410" in row.disabled_reason
    erase(client, admin, 8)  # nothing is written for a disabled endpoint
    deliverer.drain()
    assert len(receiver.received) == 1
    health = client.post("/api/cron/populate-separated-queues", headers=cron_headers).json()
    assert health["status"] != "healthy"  # at least degraded (an empty queue adds its own)
    assert any(made["id"] in issue and "disabled" in issue for issue in health["issues"])
    r = client.patch(f"{WEBHOOKS}/{made['id']}", json={"enabled": True}, headers=admin.auth)
    assert r.json()["enabled"] and r.json()["disabled_reason"] is None


def test_slow_and_down_receivers_time_out_and_are_tried_again(
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    make_deliverer: Callable[..., Deliverer],
    clock: Clock,
    store_engine: Engine,
) -> None:
    deliverer = make_deliverer(timeout_seconds=0.5)
    made = subscribe(client, admin, receiver.url)
    erase(client, admin, 7)
    receiver.script = [Reply(200, delay=2.0)]
    deliverer.drain()
    log = client.get(f"{WEBHOOKS}/{made['id']}/deliveries", headers=admin.auth).json()["items"]
    assert log[0]["status_code"] is None and "0.5 s" in log[0]["error"]
    # Down: nothing listens on the port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hooks"
    client.patch(f"{WEBHOOKS}/{made['id']}", json={"url": closed}, headers=admin.auth)
    clock.advance(RETRY_WAITS[0])
    assert deliverer.deliver_due() == 1
    log = client.get(f"{WEBHOOKS}/{made['id']}/deliveries", headers=admin.auth).json()["items"]
    assert "could not connect" in log[0]["error"]
    client.patch(f"{WEBHOOKS}/{made['id']}", json={"url": receiver.url}, headers=admin.auth)
    clock.advance(RETRY_WAITS[1])
    assert deliverer.deliver_due() == 1
    assert delivery(store_engine).status == "delivered"
    assert endpoint_row(store_engine, made["id"]).failing_since is None


def test_five_days_of_failures_disable_the_endpoint(
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: Clock,
    store_engine: Engine,
) -> None:
    made = subscribe(client, admin, receiver.url)
    receiver.default = Reply(500)
    erase(client, admin, 7)
    deliverer.drain()
    assert endpoint_row(store_engine, made["id"]).failing_since is not None
    clock.advance(timedelta(days=4, hours=23))
    erase(client, admin, 8)
    deliverer.drain()
    assert endpoint_row(store_engine, made["id"]).enabled
    clock.advance(timedelta(hours=2))
    erase(client, admin, 9)
    deliverer.drain()
    row = endpoint_row(store_engine, made["id"])
    assert not row.enabled and "5 days" in row.disabled_reason


def test_a_rotated_secret_signs_beside_the_new_one_for_24_hours(
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: Clock,
) -> None:
    made = subscribe(client, admin, receiver.url)
    rotated = client.post(f"{WEBHOOKS}/{made['id']}/rotate-secret", headers=admin.auth).json()
    assert rotated["secret"] != made["secret"]
    erase(client, admin, 7)
    deliverer.drain()
    first = receiver.received[-1]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    Webhook(made["secret"]).verify(first.body, first.headers)
    Webhook(rotated["secret"]).verify(first.body, first.headers)
    clock.advance(timedelta(hours=24, minutes=1))
    erase(client, admin, 8)
    deliverer.drain()
    after = receiver.received[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    # Signed at the sender's clock (a day on): checked against the new secret alone.
    signed_at = datetime.fromtimestamp(int(after.headers["webhook-timestamp"]), UTC)
    new = Webhook(rotated["secret"]).sign(after.headers["webhook-id"], signed_at, after.body)
    old = Webhook(made["secret"]).sign(after.headers["webhook-id"], signed_at, after.body)
    assert after.headers["webhook-signature"] == new != old


def test_production_refuses_http_and_private_targets_at_saving_and_at_sending(
    make_settings: Callable[..., Any],
    store_engine: Engine,
    receiver: Receiver,
    make_deliverer: Callable[..., Deliverer],
    client: TestClient,
    admin: Agent,
) -> None:
    production = make_settings(app_env="production")
    assert production.webhook_targets_checked and not production.webhook_allow_private
    actor = endpoints.Actor(None)
    for url in (
        "http://receiver.example/hooks",
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://user:pw@receiver.example/hooks",
        "https://[::1/hooks",
    ):
        with store_engine.begin() as conn, pytest.raises(InvalidInput):
            endpoints.create(conn, production, actor, url=url, event_types=["user.erased"])
    allowed = make_settings(app_env="production", webhook_allow_private=True)
    with store_engine.begin() as conn:
        endpoints.create(
            conn, allowed, actor, url="https://10.1.2.3/x", event_types=["user.erased"]
        )
    # At sending: the address the name resolves to now is checked, whatever was saved.
    subscribe(client, admin, receiver.url)
    erase(client, admin, 7)
    checked = make_deliverer(private_allowed=False)
    checked.dispatch()
    assert checked.deliver_due() >= 1
    assert receiver.received == []
    with store_engine.connect() as conn:
        errors = list(conn.execute(text("SELECT error FROM webhook_attempts")).scalars())
    assert any("127.0.0.1" in e and "private" in e for e in errors), errors


def test_two_processes_delivering_at_once_never_send_an_attempt_twice(
    client: TestClient,
    admin: Agent,
    receiver: Receiver,
    store_url: str,
    replica_url: str,
    store_engine: Engine,
) -> None:
    subscribe(client, admin, receiver.url)
    erase(client, admin, *range(1000, 1300))
    receiver.default = Reply(200, delay=0.2)  # long enough for both to start
    env = {
        **os.environ,
        "DATABASE_URL": store_url,
        "REPLICA_DATABASE_URL": replica_url,
        "APP_ENV": "test",
        "CRON_SECRET": CRON_SECRET,
        "SUPPRESSION_KEY": SUPPRESSION_KEY,
    }
    command = [str(Path(sys.executable).with_name("callqueue")), "webhooks", "deliver"]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    made = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
        made.append(json.loads(out)["attempts"])
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == 300 and len(set(ids)) == 300, (len(ids), len(set(ids)))
    # Between them they made 300 attempts (how they split depends on when each got going).
    assert sum(made) == 300, made
    assert max(receiver.most_in_flight_per_id.values()) == 1
    with store_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
            ).scalar_one()
            == 300
        )
