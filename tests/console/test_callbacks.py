"""Callbacks on the supervisor's screen (SPEC 7.2, 7.4): the due and the overdue ones listed with
their owner, one cancelled and one reassigned to another agent, each only after confirmation,
and the API's state afterwards is what the screen said."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, text

from tests.console.conftest import (
    Book,
    Server,
    Tab,
    bearer,
    book_callback,
    make_due,
    populate,
    same_origin_only,
    sign_in,
)


def agent_id(store_engine: Engine, name: str) -> int:
    with store_engine.connect() as conn:
        found = conn.execute(text("SELECT id FROM agents WHERE name = :n"), {"n": name})
        return int(found.scalar_one())


def row_of(page: Page, user_id: int) -> Any:
    return page.locator(f'#callbacks-table tbody tr[data-user="{user_id}"]')


def test_a_supervisor_sees_due_and_overdue_callbacks_cancels_one_and_reassigns_another(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(4, agents=("agent-a", "agent-b"))
    populate(server, seeded.supervisor)
    due = book_callback(server, seeded.agents["agent-a"])
    overdue = book_callback(server, seeded.agents["agent-a"])
    later = book_callback(server, seeded.agents["agent-a"])
    make_due(store_engine, due["user_id"], minutes_ago=5)
    make_due(store_engine, overdue["user_id"], minutes_ago=40)  # past grace (15) and personal (30)
    b_id = agent_id(store_engine, "agent-b")

    tab = open_tab()
    sup = sign_in(tab, server, seeded.supervisor, "/console/supervisor")
    expect(sup.locator("#session-role")).to_have_text("supervisor")

    # Listed oldest first, with the owner's name; the one booked for later is not listed.
    rows = sup.locator("#callbacks-table tbody tr")
    expect(rows).to_have_count(2)
    first, second = rows.nth(0), rows.nth(1)
    expect(first).to_have_attribute("data-user", str(overdue["user_id"]))
    expect(first.locator("td").nth(1)).to_have_text("agent-a")
    expect(first.locator("td").nth(4)).to_have_text(
        re.compile(r"^overdue by 40 min \d\d s; any agent may take it$")
    )
    expect(first.locator("td").nth(4)).to_have_class("status-overdue")
    expect(second).to_have_attribute("data-user", str(due["user_id"]))
    expect(second.locator("td").nth(4)).to_have_text(re.compile(r"^due 5 min \d\d s ago$"))
    expect(row_of(sup, later["user_id"])).to_have_count(0)
    expect(sup.locator('#callbacks-summary li[data-queue="unsigned_users"]')).to_have_text(
        "Unsigned users: 2 due (1 overdue), 1 booked for later, 0 being called, 0 kept late in"
        " the last hour."
    )

    # Cancel the overdue one: asked first; "Cancel" on the question keeps it.
    dialog = sup.get_by_role("dialog")
    sup.get_by_role("button", name=f"Cancel the callback of user {overdue['user_id']}").click()
    expect(dialog).to_contain_text(f"Cancel the callback of user {overdue['user_id']}?")
    expect(dialog).to_contain_text("by agent-a")
    expect(dialog.get_by_role("button", name="Cancel", exact=True)).to_be_focused()
    dialog.get_by_role("button", name="Cancel", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(sup.locator("#announcer")).to_have_text("The callback was kept.")
    expect(rows).to_have_count(2)

    sup.get_by_role("button", name=f"Cancel the callback of user {overdue['user_id']}").click()
    dialog.get_by_label("Reason").fill("Rang us back themselves")
    dialog.get_by_role("button", name="Cancel the callback").click()
    expect(sup.locator("#announcer")).to_have_text(
        f"The callback of user {overdue['user_id']} was cancelled."
    )
    expect(rows).to_have_count(1)
    expect(row_of(sup, overdue["user_id"])).to_have_count(0)

    # Reassign the due one to agent-b, by id, after confirming.
    sup.get_by_role("button", name=f"Reassign the callback of user {due['user_id']}").click()
    expect(dialog).to_contain_text("now agent-a's")
    dialog.get_by_label("The id of the agent who should keep it").fill(str(b_id))
    dialog.get_by_role("button", name="Reassign").click()
    expect(sup.locator("#announcer")).to_contain_text(
        f"The callback of user {due['user_id']} now belongs to"
    )
    expect(row_of(sup, due["user_id"]).locator("td").nth(1)).to_have_text(f"agent {b_id}")

    # An id that is no agent: the API's 422, said in words; nothing changes.
    sup.get_by_role("button", name=f"Reassign the callback of user {due['user_id']}").click()
    dialog.get_by_label("The id of the agent who should keep it").fill("999")
    dialog.get_by_role("button", name="Reassign").click()
    expect(sup.locator("#alert")).to_contain_text(
        "Not reassigned: agent 999 cannot take callbacks (unknown or deactivated)."
    )

    # The API agrees: one cancelled by a supervisor, one open and agent-b's, one still agent-a's.
    auth = bearer(seeded.supervisor)
    cancelled = httpx.get(
        f"{server.base}/api/callbacks", params={"status": "cancelled"}, headers=auth
    ).json()
    assert [(c["id"], c["cancel_reason"]) for c in cancelled["items"]] == [
        (overdue["id"], "supervisor")
    ]
    open_ = httpx.get(f"{server.base}/api/callbacks", headers=auth).json()
    owners = {c["id"]: (c["agent_id"], c["status"]) for c in open_["items"]}
    a_id = agent_id(store_engine, "agent-a")
    assert owners == {due["id"]: (b_id, "scheduled"), later["id"]: (a_id, "scheduled")}
    mine_b = httpx.get(
        f"{server.base}/api/callbacks/mine", headers=bearer(seeded.agents["agent-b"])
    )
    assert [c["id"] for c in mine_b.json()["items"]] == [due["id"]]
    # ...and agent-b's next claim is that callback, before the queue.
    claim = httpx.post(
        f"{server.base}/api/queues/unsigned_users/next-user",
        headers=bearer(seeded.agents["agent-b"]),
    ).json()
    assert (claim["source"], claim["callback_id"], claim["user_id"]) == (
        "callback",
        due["id"],
        due["user_id"],
    )
    with store_engine.connect() as conn:
        audit = conn.execute(text("SELECT count(*) FROM callback_changes")).scalar_one()
    assert audit == 2
    assert same_origin_only(tab, server) == []
    assert tab.problems == []
