"""``callqueue webhooks``: the operator manages endpoints from a shell, audited with no admin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests.conftest import CRON_SECRET, SUPPRESSION_KEY


def run(store_url: str, replica_url: str, *args: str) -> Any:
    env = {
        **os.environ,
        "DATABASE_URL": store_url,
        "REPLICA_DATABASE_URL": replica_url,
        "APP_ENV": "test",
        "CRON_SECRET": CRON_SECRET,
        "SUPPRESSION_KEY": SUPPRESSION_KEY,
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("callqueue")), "webhooks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_operator_adds_rotates_disables_and_removes_an_endpoint(
    store_url: str, replica_url: str, store_engine: Engine
) -> None:
    made = run(
        store_url,
        replica_url,
        "add",
        "https://crm.example/hooks",
        "-e",
        "user.erased",
        "-e",
        "callback.booked",
        "--description",
        "CRM",
    )
    assert made["secret"].startswith("whsec_")
    assert made["event_types"] == ["callback.booked", "user.erased"]
    listed = run(store_url, replica_url, "list")
    assert [e["id"] for e in listed] == [made["id"]] and "secret" not in listed[0]
    rotated = run(store_url, replica_url, "rotate-secret", made["id"])
    assert rotated["secret"] != made["secret"]
    assert run(store_url, replica_url, "disable", made["id"])["enabled"] is False
    assert run(store_url, replica_url, "enable", made["id"])["enabled"] is True
    assert run(store_url, replica_url, "remove", made["id"]) == {"removed": made["id"]}
    assert run(store_url, replica_url, "list") == []
    with store_engine.connect() as conn:
        audit = conn.execute(text("SELECT action, actor_id FROM auth_events ORDER BY id")).all()
    assert [a for a, _ in audit] == [
        "webhook_created",
        "webhook_secret_rotated",
        "webhook_changed",
        "webhook_changed",
        "webhook_deleted",
    ]
    assert {actor for _, actor in audit} == {None}
    everything = json.dumps([list(r) for r in audit])
    assert made["secret"] not in everything and rotated["secret"] not in everything
