"""Logs at DEBUG over a full agent cycle carry no token, secret or personal data."""

from __future__ import annotations

import io
import logging

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.auth.people import create_agent
from app.logs import JsonFormatter, TextFormatter, configure_logging
from tests.conftest import CRON_SECRET
from tests.factories import Replica, add_scores

NOTE = "Mrs Example said call after the school run 4471"


def test_debug_logs_of_a_full_cycle_hold_no_secrets_or_personal_data(
    client: TestClient, replica: Replica, store_engine: Engine, cron_headers: dict[str, str]
) -> None:
    replica.unsigned(1, first_name="Philippa", last_name="Quarrington", phone="07700 900417")
    replica.outstanding(2, "payslip", phone="07700 900418")
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": "unsigned_users"},
            {"user_id": 2, "current_queue_type": "outstanding_requests"},
        ],
    )
    with store_engine.begin() as conn:
        token = create_agent(conn, "logged-agent")
        boss = create_agent(conn, "logged-boss", "supervisor")
    configure_logging("DEBUG", json_lines=True)
    json_out, text_out = io.StringIO(), io.StringIO()
    for stream, formatter in ((json_out, JsonFormatter()), (text_out, TextFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logging.getLogger().addHandler(handler)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/cron/populate-separated-queues", headers=cron_headers).is_success
        claimed = client.post("/api/queues/unsigned_users/next-user", headers=auth).json()
        assert claimed["user"]["phone_number"] == "07700 900417"
        assignment = claimed["assignment_id"]
        assert client.post(f"/api/assignments/{assignment}/extend", headers=auth).is_success
        done = client.post(
            f"/api/assignments/{assignment}/complete",
            json={"outcome": "call_back", "notes": NOTE},
            headers=auth,
        )
        assert done.is_success
        second = client.post("/api/queues/outstanding_requests/next-user", headers=auth).json()
        bad = client.post(
            f"/api/assignments/{second['assignment_id']}/complete",
            json={"outcome": "no_answer", "notes": NOTE + "x" * 2000},
            headers=auth,
        )
        assert bad.status_code == 422
        client.put(
            "/api/admin/flags",
            json={"MIGRATION_MODE": "dual"},
            headers={"Authorization": f"Bearer {boss}"},
        )
        client.get("/api/queues/stats", headers={"Authorization": "Bearer wrong-token-value"})
    finally:
        configure_logging("WARNING", json_lines=False)
    logs = json_out.getvalue() + text_out.getvalue()
    assert "claim.assigned" in logs and "assignment.completed" in logs  # it did log
    forbidden = [
        token,
        boss,
        CRON_SECRET,
        "wrong-token-value",
        "07700 900417",
        "07700 900418",
        "Philippa",
        "Quarrington",
        "user1@example.invalid",
        NOTE,
    ]
    leaked = [value for value in forbidden if value in logs]
    assert leaked == []
