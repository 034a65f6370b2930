"""The supervisor's screen in a real browser (issue 15): flags changed only after confirmation and
followed by the agents' next claim, forced release seen on the agent's screen, a population run
on demand with its report, live assignments and the 24-hour chart."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect
from sqlalchemy import Engine, text

from tests.console.conftest import (
    Book,
    Server,
    Tab,
    card_user,
    populate,
    same_origin_only,
    sign_in,
    words,
)

# A short lease: the agent's page extends (and so learns it lost the user) every 10 s.
LEASE = "30"


def supervisor_page(open_tab: Callable[..., Tab], server: Server, token: str) -> tuple[Tab, Page]:
    tab = open_tab()
    page = sign_in(tab, server, token, "/console/supervisor")
    expect(page.locator("#session-name")).to_have_text("Supervisor S")
    expect(page.locator("#session-role")).to_have_text("supervisor")
    return tab, page


def test_a_supervisor_flips_migration_mode_after_confirming_and_the_next_claim_follows(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(4)
    populate(server, seeded.supervisor)
    sup_tab, sup = supervisor_page(open_tab, server, seeded.supervisor)
    expect(sup.locator("#serving-mode")).to_have_text("from the queues")
    agent = sign_in(open_tab(), server, seeded.agents["agent-a"])

    # Cancelled: nothing changes.
    sup.get_by_label("MIGRATION_MODE").select_option("legacy-only")
    sup.get_by_role("button", name="Apply changes…").first.click()
    dialog = sup.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM feature_flags")).scalar_one() == 0
    agent.keyboard.press("n")
    assert card_user(agent) == seeded.people[0]["user_id"]
    expect(agent.locator("#c-source")).to_have_text("the queue")
    agent.keyboard.press("1")
    agent.keyboard.press("Enter")
    expect(agent.locator("#last-result")).to_contain_text("Recorded")

    # Confirmed: the flag changes, and the agent's very next claim is served in direct mode.
    sup.get_by_role("button", name="Apply changes…").first.click()
    expect(dialog).to_contain_text("MIGRATION_MODE: new-only → legacy-only")
    dialog.get_by_role("button", name="Apply").click()
    expect(sup.locator("#serving-mode")).to_have_text("direct mode (straight from the scored list)")
    expect(sup.locator("#announcer")).to_contain_text("Flags changed.")

    agent.keyboard.press("n")
    card_user(agent)
    expect(agent.locator("#c-source")).to_have_text("direct mode (straight from the scored list)")
    with store_engine.connect() as conn:
        sources = conn.execute(text("SELECT source FROM assignments ORDER BY assigned_at")).all()
        changes = conn.execute(
            text("SELECT name, old_value, new_value FROM feature_flag_changes")
        ).all()
    assert [s for (s,) in sources] == ["queue", "direct"]
    assert [tuple(c) for c in changes] == [("MIGRATION_MODE", "new-only", "legacy-only")]
    assert same_origin_only(sup_tab, server) == []
    assert sup_tab.problems == []


def test_a_forced_release_shows_on_the_agents_screen(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers(LEASE_SECONDS=LEASE)
    seeded = book(3)
    populate(server, seeded.supervisor)
    agent = sign_in(open_tab(), server, seeded.agents["agent-a"])
    agent.keyboard.press("n")
    user = card_user(agent)
    name = seeded.people[0]["name"]

    _, sup = supervisor_page(open_tab, server, seeded.supervisor)
    row = sup.locator("#live-table tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text("agent-a")
    expect(row.locator("td").nth(2)).to_have_text(str(user))
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^\d+ s$"))
    release = sup.get_by_role("button", name=f"Release user {user} from agent-a")
    release.click()
    dialog = sup.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Take user {user} back from agent-a?")
    dialog.get_by_role("button", name="Release").click()
    expect(sup.locator("#announcer")).to_contain_text(f"User {user} was taken back from agent-a")
    expect(sup.locator("#live-empty")).to_be_visible()

    # Within one heartbeat (a third of the lease), the agent's page learns and says so.
    state = agent.locator("#state")
    expect(state).to_contain_text("This person was taken back", timeout=20_000)
    assert words(agent, "#state-text").startswith(
        f"{name} is no longer yours: a supervisor released them, or they were finished in another"
        " tab (the service answered 409 Conflict: the assignment is no longer active)."
    )
    expect(agent.locator("#call")).to_be_hidden()
    with store_engine.connect() as conn:
        status = conn.execute(
            text("SELECT status FROM assignments WHERE user_id = :u"), {"u": user}
        ).scalar_one()
        entry = conn.execute(
            text("SELECT status FROM unsigned_users_queue WHERE user_id = :u"), {"u": user}
        ).scalar_one()
    assert (status, entry) == ("released", "pending")


def test_a_supervisor_runs_a_population_and_reads_its_report_runs_and_chart(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(5)
    tab, sup = supervisor_page(open_tab, server, seeded.supervisor)
    expect(sup.locator("#runs-empty")).to_be_visible()
    expect(
        sup.locator('#queues-table tr[data-queue="unsigned_users"] [data-col="last"]')
    ).to_have_text("never")

    sup.get_by_role("button", name="Populate now").click()
    result = sup.locator("#populate-result")
    expect(result).to_contain_text("The population succeeded.")
    expect(result).to_be_focused()
    unsigned = result.locator("tbody tr").nth(0)
    expect(unsigned.locator("th")).to_have_text("Unsigned users")
    expect(unsigned.locator("td").nth(0)).to_have_text("succeeded")
    expect(unsigned.locator("td").nth(3)).to_have_text("5")  # queued
    runs = sup.locator("#runs-table tbody tr")
    expect(runs).to_have_count(1)
    expect(runs.locator("td").nth(1)).to_have_text("supervisor")
    expect(runs.locator("td").nth(3)).to_have_text("succeeded: 5 queued, 0 moved out")
    expect(
        sup.locator('#queues-table tr[data-queue="unsigned_users"] [data-col="pending"]')
    ).to_have_text("5", timeout=15_000)

    # Three hand-outs and two outcomes this hour: the chart's last hour shows them.
    agent = sign_in(open_tab(), server, seeded.agents["agent-a"])
    for key, label in (("1", "No answer"), ("2", "Hung up")):
        agent.keyboard.press("n")
        card_user(agent)
        agent.keyboard.press(key)
        agent.keyboard.press("Enter")
        expect(agent.locator("#last-result")).to_contain_text(f"Recorded “{label}”")
    agent.keyboard.press("n")
    card_user(agent)
    sup.reload()
    bars = sup.locator("#chart svg g")
    expect(bars).to_have_count(24)
    last = bars.nth(23)
    expect(last.locator("rect.bar-handed")).to_have_attribute("data-value", "3")
    expect(last.locator("rect.bar-done")).to_have_attribute("data-value", "2")
    expect(last.locator("title")).to_contain_text("3 handed out, 2 outcomes, 0 released, 0 lapsed")
    table_last = sup.locator("#activity-table tbody tr").nth(23)
    expect(table_last.locator("td").nth(1)).to_have_text("hung up 1, no answer 1")
    expect(sup.locator("#live-table tbody tr")).to_have_count(1)
    assert same_origin_only(tab, server) == []
    assert tab.problems == []


def test_an_agent_is_refused_the_supervisor_view_in_words(
    servers: Callable[..., Server], open_tab: Callable[..., Tab], book: Callable[..., Book]
) -> None:
    server = servers()
    seeded = book(0)
    page = sign_in(open_tab(), server, seeded.agents["agent-a"])
    # The header offers an agent no supervisor's view...
    expect(page.get_by_role("link", name="Supervisor")).to_have_count(0)
    # ... and the address typed by hand is refused in words.
    answer = page.goto(server.base + "/console/supervisor")
    assert answer is not None and answer.status == 403
    expect(page.locator("#message-text")).to_have_text(
        "The supervisor view is for supervisors and admins."
    )
