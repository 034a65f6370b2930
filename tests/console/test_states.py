"""A replica outage on the agent's screen (issue 15): said in words, nothing assigned, and the
next claim works again once the link heals. The test cuts its own server's replica link, so it
runs on a server of its own."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect
from sqlalchemy import Engine, text

from tests.console.conftest import Book, Server, Tab, card_user, populate, sign_in, words


def test_an_unreachable_replica_is_shown_as_such_and_nothing_is_assigned(
    own_server: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = own_server(REPLICA_PROXY="1")
    assert server.proxy is not None
    seeded = book(2)
    populate(server, seeded.supervisor)
    tab = open_tab()
    page = sign_in(tab, server, seeded.agents["agent-a"])

    server.proxy.cut()
    page.keyboard.press("n")
    state = page.locator("#state")
    expect(state).to_contain_text("Claims platform unreachable")
    assert words(page, "#state-text") == (
        "The claims platform's database (the replica) is not answering, so nobody can be"
        " checked and handed out. Nothing was assigned to you. Try again in a moment; if it"
        " lasts, tell your supervisor."
    )
    expect(page.get_by_role("button", name="Try again now")).to_be_visible()
    expect(page.locator("#call")).to_be_hidden()
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM assignments")).scalar_one() == 0

    # Healed: the agent tries again (the first request may still meet a dead pooled link).
    server.proxy.heal()
    for _ in range(3):
        page.get_by_role("button", name="Try again now").click()
        try:
            page.locator("#call").wait_for(state="visible", timeout=3000)
            break
        except PlaywrightTimeoutError:
            continue
    assert card_user(page) == seeded.people[0]["user_id"]
    assert tab.problems == []
