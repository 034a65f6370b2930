"""The people page's personal-data panel in Chromium (SPEC 8.3): an admin downloads a person's
copy of what we hold, then erases them after a confirmation that names the user id; a
supervisor is not offered the panel at all."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import expect
from sqlalchemy import Engine, text

from tests.console.conftest import (
    Book,
    Server,
    Tab,
    bearer,
    console_person,
    populate,
    same_origin_only,
    sign_in,
    words,
)

NOTES = "asked us to ring her sister instead"


def test_an_admin_exports_then_erases_a_person_from_the_people_page(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
    tmp_path: Path,
) -> None:
    server = servers()
    seeded = book(2)
    populate(server, seeded.supervisor)
    agent = seeded.agents["agent-a"]
    claim = httpx.post(
        f"{server.base}/api/queues/unsigned_users/next-user", headers=bearer(agent)
    ).json()
    person = claim["user_id"]
    done = httpx.post(
        f"{server.base}/api/assignments/{claim['assignment_id']}/complete",
        headers=bearer(agent),
        json={"outcome": "no_answer", "notes": NOTES},
    )
    assert done.status_code == 200, done.text

    # A supervisor manages people but is not offered personal data.
    sup_tab = open_tab()
    sup = sign_in(sup_tab, server, seeded.supervisor, "/console/people")
    expect(sup.locator("#people-table tbody tr").first).to_be_visible()
    expect(sup.locator("#personal-data")).to_have_count(0)

    tab = open_tab()
    page = sign_in(tab, server, console_person(store_engine, "dpo", "admin"), "/console/people")
    panel = page.locator("#personal-data")
    user_id = panel.get_by_label("User id")
    # Not a user id: said at the field, nothing asked of the service.
    user_id.fill("12ab")
    panel.get_by_role("button", name="Export").click()
    expect(page.locator("#d-user-error")).to_be_visible()
    expect(user_id).to_have_attribute("aria-invalid", "true")

    user_id.fill(str(person))
    panel.get_by_role("button", name="Export").click()
    expect(page.locator("#data-summary")).to_contain_text(f"User {person}:")
    expect(page.locator("#data-summary")).to_contain_text("1 calls in the ledger")
    with page.expect_download() as download:
        panel.get_by_role("link", name=f"Download callqueue-user-{person}.json").click()
    saved = tmp_path / "export.json"
    download.value.save_as(saved)
    document = json.loads(saved.read_text())
    assert document["user_id"] == person and document["erased"] is False
    assert [row["notes"] for row in document["ledger"]] == [NOTES]

    # Erase: the confirmation names the user id; cancelling changes nothing.
    panel.get_by_role("button", name="Erase…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Erase user {person}?")
    dialog.get_by_role("button", name="Cancel").click()
    assert held(store_engine, person) == 1
    panel.get_by_role("button", name="Erase…").click()
    page.get_by_role("dialog").get_by_role("button", name=f"Erase user {person}").click()
    expect(page.locator("#data-summary")).to_have_text(f"User {person} is erased.")
    counts = words(page, "#data-counts tbody")
    assert "score row 1" in counts and "calls in the ledger cleared 1" in counts
    assert held(store_engine, person) == 0

    # Asked again, the export is the tombstone alone.
    panel.get_by_role("button", name="Export").click()
    expect(page.locator("#data-summary")).to_contain_text(
        f"User {person} was erased on", use_inner_text=True
    )
    expect(page.locator("#data-download")).to_be_hidden()
    with store_engine.connect() as conn:
        asked = conn.execute(
            text("SELECT action FROM data_requests WHERE user_id = :u ORDER BY id"),
            {"u": person},
        ).scalars()
        assert list(asked) == ["export", "erase", "export"]
    assert same_origin_only(tab, server) == [] and tab.problems == []
    assert sup_tab.problems == []


def held(store: Engine, person: int) -> int:
    """Score rows left for the person (the erasure deletes theirs)."""
    with store.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM user_call_scores WHERE user_id = :u"), {"u": person}
            ).scalar_one()
        )
