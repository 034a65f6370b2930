"""Erasure (SPEC 8.3): the person gone from every table that holds them (every table with a
user_id column scanned, and the ledger's text columns), the compliance report unchanged, a live
assignment ended first, nothing upstream able to bring them back, and erasing again changing
nothing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.intake.csv_import import import_scores
from app.intake.rows import ScoreRow, UpsertCounts, upsert_scores
from app.privacy.tables import PLACES
from app.services import Services
from tests.factories import Replica
from tests.privacy.conftest import (
    CHANGE_REASON,
    NOTES,
    OTHERS,
    RELEASE_REASON,
    History,
    rows_of,
)
from tests.queues.test_interleavings import pause, wait_until_paused

KEPT = {place.table for place in PLACES if place.erasure != "deleted"}


def report(client: TestClient, who: dict[str, str]) -> dict[str, object]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    answer = client.get(
        "/api/reports/compliance", params={"from": "2026-01-01", "to": today}, headers=who
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return {"days": body["days"], "totals": body["totals"]}


def test_erasure_removes_the_person_and_keeps_the_record(
    client: TestClient, store_engine: Engine, history: History
) -> None:
    before = report(client, history.supervisor.auth)
    assert before["totals"]["callbacks_booked"] == 1  # type: ignore[index]
    held = rows_of(store_engine, history.person)
    assert all(held[t] for t in ("user_call_scores", "unsigned_users_queue", "callbacks"))

    erased = client.post(f"/api/admin/users/{history.person}/erase", headers=history.admin.auth)
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["user_id"] == history.person
    assert body["removed"] == {
        "user_call_scores": 1,
        "unsigned_users_queue": 1,
        "outstanding_requests_queue": 0,
        "callbacks": 1,
        "callback_changes": 1,
        "assignments_released": 1,
        "assignments_cleared": 3,
        "queue_transitions_cleared": 1,
        "entry_invalidations_cleared": 1,
    }

    left = rows_of(store_engine, history.person)
    for table, rows in left.items():
        if table not in KEPT:
            assert rows == [], f"{table} still holds the person"
    # The ledger: times, agent, queue, source, outcome and the user id; nothing else of theirs.
    ledger = left["assignments"]
    assert len(ledger) == 3
    for row in ledger:
        assert row["notes"] is None and row["details"] == {} and row["queue_reason"] is None
        assert row["claim_id"] is None and row["phone_hash"] is None
        assert row["release_reason"] in (None, "erased")
        assert row["assigned_at"] is not None and row["agent_id"] is not None
    by_id = {str(r["id"]): r for r in ledger}
    live = by_id[history.live_assignment]
    assert (live["status"], live["release_reason"]) == ("released", "erased")
    assert by_id[history.completed_assignment]["outcome"] == "call_back"
    assert [r["reason"] for r in left["queue_transitions"]] == ["erased"]
    assert sorted(r["reason"] for r in left["entry_invalidations"]) == ["erased", "suppressed"]
    # What the CRM was told stays as it was told (ids, times, outcomes) until its retention.
    assert sorted(e["type"] for e in left["webhook_events"]) == ["assignment.started"] * 3 + [
        "callback.booked"
    ]
    # No personal text anywhere in the database.
    with store_engine.connect() as conn:
        dump = json.dumps(
            [
                [dict(r) for r in conn.execute(text(f'SELECT * FROM "{table}"')).mappings()]
                for table in left
            ],
            default=str,
        )
    for said in (NOTES, RELEASE_REASON, CHANGE_REASON, "claim 77"):
        assert said not in dump

    # The compliance report's figures are the same for every day.
    assert report(client, history.supervisor.auth) == before
    # The agent who held the person learns it is gone; a supervisor's listing shows no trace.
    answer = client.post(
        f"/api/assignments/{history.live_assignment}/complete",
        json={"outcome": "no_answer"},
        headers=history.holder.auth,
    )
    assert answer.status_code == 409
    # The erasure itself is audited by user id, with no personal data.
    with store_engine.connect() as conn:
        audit = conn.execute(
            text("SELECT action, agent_id, removed FROM data_requests WHERE user_id = :u"),
            {"u": history.person},
        ).all()
    assert [(a.action, a.agent_id) for a in audit] == [("erase", history.admin.id)]


def test_erasing_again_changes_nothing_and_counts_zero(
    client: TestClient, history: History
) -> None:
    first = client.post(f"/api/admin/users/{history.person}/erase", headers=history.admin.auth)
    again = client.post(f"/api/admin/users/{history.person}/erase", headers=history.admin.auth)
    assert again.status_code == 200
    assert again.json()["erased_at"] == first.json()["erased_at"]
    assert set(again.json()["removed"].values()) == {0}
    never = client.post("/api/admin/users/999999/erase", headers=history.admin.auth)
    assert never.status_code == 200 and set(never.json()["removed"].values()) == {0}


def test_nothing_upstream_brings_an_erased_person_back(
    client: TestClient,
    services: Services,
    store_engine: Engine,
    replica: Replica,
    history: History,
    tmp_path: Path,
    cron_headers: dict[str, str],
) -> None:
    client.post(f"/api/admin/users/{history.person}/erase", headers=history.admin.auth)
    # The scores API: the row is an error, the others go in.
    scorer = {"Authorization": history.supervisor.auth["Authorization"]}
    answer = client.put(
        "/api/scores",
        json={
            "scores": [
                {"user_id": OTHERS[0], "current_score": 5},
                {"user_id": history.person, "current_score": 50},
            ]
        },
        headers=scorer,
    )
    assert answer.status_code == 200
    assert answer.json()["errors"] == [{"index": 1, "user_id": history.person, "error": "Erased"}]
    # The CSV import: the line is rejected with the reason.
    csv = tmp_path / "scores.csv"
    csv.write_text(f"user_id,current_score\n{OTHERS[1]},7\n{history.person},60\n")
    summary = import_scores(services.engine, services.replica, csv)
    assert summary.rejected == 1
    rejected = (tmp_path / "scores.rejected.csv").read_text().splitlines()
    assert rejected[1:] == [f"3,{history.person},Erased"]
    # Discovery: the claims platform still has them, and a new claim; nothing is created.
    replica.claim(history.person)
    run = services.discovery().run(trigger="test")
    assert run.success
    with store_engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM user_call_scores WHERE user_id = :u"),
                {"u": history.person},
            ).scalar_one()
            == 0
        )
    # Nobody is handed them: not from a queue, nor from direct mode.
    assert client.get("/api/cron/populate-separated-queues", headers=cron_headers).is_success
    assert rows_of(store_engine, history.person)["unsigned_users_queue"] == []


def test_an_erasure_and_an_upsert_of_the_same_person_never_leave_a_score_row(
    services: Services,
    store_engine: Engine,
    client: TestClient,
    history: History,
    replica: Replica,
) -> None:
    """The upsert is paused after its tombstone check, just before it inserts the score row;
    the erasure meanwhile waits for it (the person's lock), then deletes what it wrote. Without
    the lock the erasure would finish first and the paused insert bring the person back."""
    erased = client.post(f"/api/admin/users/{OTHERS[0]}/erase", headers=history.admin.auth)
    assert erased.status_code == 200  # a first, unrelated erasure: the path is warm
    person = 5555
    with pause(store_engine, "user_call_scores", "BEFORE INSERT", seconds=1.5, level="STATEMENT"):
        out: dict[str, UpsertCounts] = {}

        def upsert() -> None:
            out["counts"] = upsert_scores(services.engine, services.replica, [ScoreRow(person, 10)])

        replica.unsigned(person)
        writer = threading.Thread(target=upsert)
        writer.start()
        wait_until_paused(store_engine)
        with store_engine.begin() as conn:
            conn.execute(text("SELECT cq_erase(:u, NULL, 15)"), {"u": person})
        writer.join(10)
    assert out["counts"].created == 1
    with store_engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM user_call_scores WHERE user_id = :u"), {"u": person}
        ).scalar_one()
    assert left == 0


@pytest.mark.parametrize("user_id", ["0", "-3", "abc", str(2**63)])
def test_a_bad_user_id_is_422(client: TestClient, history: History, user_id: str) -> None:
    for method, path in (("POST", "erase"), ("GET", "export")):
        answer = client.request(
            method, f"/api/admin/users/{user_id}/{path}", headers=history.admin.auth
        )
        assert answer.status_code == 422, (method, user_id)
