"""Access requests (SPEC 8.3): one document with everything held about the person, each item
with when it was recorded; an erased person's is the tombstone alone; every export audited; and
every table with a user_id column covered by both erasure and the export."""

from __future__ import annotations

from datetime import datetime

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.privacy import export as exporting
from app.privacy.tables import PLACES
from tests.privacy.conftest import (
    CHANGE_REASON,
    CRM_URL,
    NOTES,
    RELEASE_REASON,
    History,
    user_id_tables,
)


def test_the_export_holds_each_item_of_a_full_history(
    client: TestClient, store_engine: Engine, history: History
) -> None:
    with store_engine.begin() as conn:  # the events go out to the CRM (pending there)
        conn.execute(text("SELECT cq_webhook_dispatch(100)"))
    answer = client.get(f"/api/admin/users/{history.person}/export", headers=history.admin.auth)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    doc = answer.json()
    assert (doc["user_id"], doc["erased"]) == (history.person, False)
    assert doc["score"]["user_id"] == history.person and doc["score"]["created_at"]
    assert [e["queue_type"] for e in doc["queue_entries"]] == ["unsigned_users"]
    [callback] = doc["callbacks"]
    assert callback["id"] == history.callback_id and callback["created_at"]
    assert [c["reason"] for c in callback["changes"]] == [CHANGE_REASON]
    ledger = {row["id"]: row for row in doc["ledger"]}
    assert ledger[history.completed_assignment]["notes"] == NOTES
    assert RELEASE_REASON in [row["release_reason"] for row in doc["ledger"]]
    assert history.live_assignment in ledger
    assert all(row["assigned_at"] for row in doc["ledger"])
    assert "claim 77" in doc["transitions"][0]["reason"]
    assert sorted(i["reason"] for i in doc["invalidations"])[1] == "suppressed"
    assert doc["number"]["suppressed"] is True and doc["number"]["since"]
    assert [r["action"] for r in doc["requests"]] == ["export"]
    # What other systems were told about them, when, and to whom.
    events = [(e["type"], e["data"].get("assignment_id")) for e in doc["events"]]
    assert events == [
        ("assignment.started", history.completed_assignment),
        ("callback.booked", None),
        ("assignment.started", [row["id"] for row in doc["ledger"]][1]),
        ("assignment.started", history.live_assignment),
    ]
    assert all(e["occurred_at"] and e["data"]["user_id"] == history.person for e in doc["events"])
    for event in doc["events"]:
        [(url, status)] = [(d["url"], d["status"]) for d in event["deliveries"]]
        assert (url, status) == (CRM_URL, "pending")
    # Nothing is left out: every place that holds people has its section.
    sections = {p.export for p in PLACES} - {"erased"}
    assert sections <= set(doc)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_an_erased_persons_export_is_the_tombstone_alone(
    client: TestClient, store_engine: Engine, history: History
) -> None:
    erased = client.post(f"/api/admin/users/{history.person}/erase", headers=history.admin.auth)
    answer = client.get(f"/api/admin/users/{history.person}/export", headers=history.admin.auth)
    assert answer.status_code == 200
    document = answer.json()
    assert set(document) == {"user_id", "erased", "erased_at"}
    assert (document["user_id"], document["erased"]) == (history.person, True)
    assert at(document["erased_at"]) == at(erased.json()["erased_at"])
    with store_engine.connect() as conn:
        audit = conn.execute(
            text("SELECT action, agent_id FROM data_requests WHERE user_id = :u ORDER BY id"),
            {"u": history.person},
        ).all()
    assert [tuple(a) for a in audit] == [
        ("erase", history.admin.id),
        ("export", history.admin.id),
    ]


def test_only_admins_erase_and_export(client: TestClient, history: History) -> None:
    for who in (history.supervisor, history.holder):
        for method, path in (("POST", "erase"), ("GET", "export")):
            answer = client.request(
                method, f"/api/admin/users/{history.person}/{path}", headers=who.auth
            )
            assert answer.status_code == 403, (who.name, path)


def test_every_table_with_a_user_id_is_covered_by_erasure_and_the_export(
    store_engine: Engine,
) -> None:
    """A new table that can hold a person must say what erasure and the export do with it
    (app/privacy/tables.py), and they must do it: cq_erase names every table it deletes or
    clears, and the export reads every section."""
    with store_engine.connect() as conn:
        tables = set(user_id_tables(conn))
        erase_text = conn.execute(
            text("SELECT prosrc FROM pg_proc WHERE proname = 'cq_erase'")
        ).scalar_one()
    assert tables == {p.table for p in PLACES}
    for place in PLACES:
        if place.erasure in ("deleted", "cleared"):
            assert place.table in erase_text, place.table
        if place.export != "erased":
            assert place.table in exporting.SECTIONS[place.export], place.table
