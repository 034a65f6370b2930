"""Signing in to the console in Chromium (SPEC 8.2): with a password, working a call and signing
out; through the company's identity provider (a real one, Canaille); the session cookie's flags
as the browser holds them; a session that ends mid-call losing none of the typed notes; and the
people page, where a supervisor adds an agent limited to one queue who then signs in."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import Engine, text

from tests.console.conftest import (
    EMAILS,
    PASSWORD,
    Book,
    Server,
    Tab,
    card_user,
    populate,
    same_origin_only,
    sign_in,
    words,
)


def test_a_password_sign_in_works_a_call_and_signs_out(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(2)
    populate(server, seeded.supervisor)
    tab = open_tab()
    page = tab.page
    page.goto(server.base + "/console")
    assert page.url == server.base + "/auth/login?next=/console"
    page.get_by_label("Email").fill(EMAILS[seeded.agents["agent-a"]])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_have_text("the email or the password is wrong")
    page.get_by_label("Email").fill(EMAILS[seeded.agents["agent-a"]])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.base + "/console")

    # The cookie as the browser holds it.
    [cookie] = [c for c in page.context.cookies() if c["name"] == "callqueue_session"]
    assert cookie["httpOnly"] and cookie["secure"]
    assert (cookie["sameSite"], cookie["path"], cookie["expires"]) == ("Lax", "/", -1)
    assert page.evaluate("document.cookie") == ""  # out of the page's reach
    # Who is signed in, in the header; no token anywhere in the page or its storage.
    expect(page.locator("#session-name")).to_have_text("Agent A")
    expect(page.locator("#session-role")).to_have_text("agent")
    assert page.evaluate("JSON.stringify(sessionStorage)") == "{}"

    page.locator("body[data-ready='yes']").wait_for(state="attached")
    page.keyboard.press("n")
    assert card_user(page) == seeded.people[0]["user_id"]
    page.keyboard.press("1")
    page.get_by_role("button", name="Record outcome").click()
    expect(page.locator("#last-result")).to_contain_text("Recorded “No answer”")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(server.base + "/auth/login")
    page.goto(server.base + "/console")
    assert page.url.startswith(server.base + "/auth/login")
    with store_engine.connect() as conn:
        ended = conn.execute(text("SELECT end_reason FROM sessions")).scalars().all()
    assert ended == ["signed_out"]
    assert same_origin_only(tab, server) == []
    assert tab.problems == []


def test_a_session_that_ends_mid_call_loses_no_typed_notes(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
) -> None:
    server = servers()
    seeded = book(2)
    populate(server, seeded.supervisor)
    tab = open_tab()
    page = sign_in(tab, server, seeded.agents["agent-a"])
    page.keyboard.press("n")
    user = card_user(page)
    notes = "Asked to be called after six; the claim form is with her accountant."
    page.get_by_label("Notes").fill(notes)
    page.keyboard.press("Escape")

    # The absolute timeout passes (the database's clock is the one the sessions keep).
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE sessions SET expires_at = now() - interval '1 second'"))
    page.keyboard.press("1")
    page.get_by_role("button", name="Record outcome").click()
    page.wait_for_url(server.base + "/auth/login?ended=1&next=%2Fconsole")
    expect(page.locator("#ended")).to_contain_text("Your session has ended")

    page.get_by_label("Email").fill(EMAILS[seeded.agents["agent-a"]])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.base + "/console")
    assert card_user(page) == user  # the call is still theirs
    expect(page.get_by_label("Notes")).to_have_value(notes)
    page.keyboard.press("Escape")
    page.locator("#call-title").focus()
    page.keyboard.press("1")
    page.get_by_role("button", name="Record outcome").click()
    expect(page.locator("#last-result")).to_contain_text("Recorded “No answer”")
    with store_engine.connect() as conn:
        kept = conn.execute(
            text("SELECT notes FROM assignments WHERE user_id = :u"), {"u": user}
        ).scalar_one()
    assert kept == notes
    # Sent, the notes leave the tab.
    assert page.evaluate("sessionStorage.getItem('callqueue.notes')") is None
    assert tab.problems == []


def test_signing_in_through_the_identity_provider(
    own_server: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    iam_server: Any,
    store_engine: Engine,
) -> None:
    client_id, secret = "callqueue-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    server = own_server(
        OIDC_ISSUER=iam_server.url.rstrip("/"),
        OIDC_CLIENT_ID=client_id,
        OIDC_CLIENT_SECRET=secret,
        OIDC_PROVIDER_NAME="Canaille",
        OIDC_TRUST_UNVERIFIED_EMAIL="true",
        AUTHLIB_INSECURE_TRANSPORT="1",  # the test provider speaks plain HTTP on localhost
    )
    iam_server.backend.save(
        iam_server.models.Client(
            client_id=client_id,
            client_secret=secret,
            client_name="callqueue",
            client_uri=server.base,
            redirect_uris=[f"{server.base}/auth/oidc/callback"],
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_basic",
            scope=["openid", "profile", "email"],
            id_token_signed_response_alg="RS256",
        )
    )
    seeded = book(1)
    user = iam_server.random_user(emails=[EMAILS[seeded.agents["agent-a"]]])
    iam_server.login(user)
    iam_server.consent(user)

    page = open_tab().page
    page.goto(server.base + "/console")
    page.get_by_role("link", name="Sign in with Canaille").click()
    page.wait_for_url(server.base + "/console")
    page.locator("body[data-ready='yes']").wait_for(state="attached")
    expect(page.locator("#session-name")).to_have_text("Agent A")
    with store_engine.connect() as conn:
        method = conn.execute(text("SELECT method FROM sessions")).scalar_one()
    assert method == "oidc"
    iam_server.logout()


def test_a_supervisor_adds_an_agent_for_one_queue_who_signs_in_and_is_refused_the_other(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
) -> None:
    server = servers()
    seeded = book(1)
    sup_tab = open_tab()
    sup = sign_in(sup_tab, server, seeded.supervisor, "/console/people")
    # A supervisor may give only the agent role.
    expect(sup.locator("#p-role option")).to_have_text(["agent"])
    sup.get_by_label("Email").fill("una@example.com")
    sup.get_by_label("Name").fill("Una Agent")
    sup.get_by_label("Outstanding requests").uncheck()
    sup.get_by_role("button", name="Add").click()
    expect(sup.locator("#link-box")).to_be_visible()
    link = words(sup, "#link-value")
    assert link.startswith(server.base + "/auth/set-password?token=cqp_")
    row = sup.locator("#people-table tbody tr", has_text="una@example.com")
    expect(row.locator("td").nth(2)).to_have_text("Unsigned users")

    una_tab = open_tab()
    una = una_tab.page
    una.goto(link)
    una.get_by_label("New password").fill("short")
    una.get_by_role("button", name="Set my password and sign in").click()
    # The browser's own check (minlength) keeps the form; a long enough one signs her in.
    assert una.url.startswith(server.base + "/auth/set-password")
    una.get_by_label("New password").fill("una's long enough passphrase")
    una.get_by_role("button", name="Set my password and sign in").click()
    una.wait_for_url(server.base + "/console")
    una.locator("body[data-ready='yes']").wait_for(state="attached")
    expect(una.locator('input[name="queue"]')).to_have_count(1)
    expect(una.get_by_label("Unsigned users")).to_be_checked()
    refused = una.evaluate(
        """async () => {
            const me = await (await fetch('/api/me')).json();
            const answer = await fetch('/api/queues/outstanding_requests/next-user',
                {method: 'POST', headers: {'X-CSRF-Token': me.csrf_token}});
            return [answer.status, (await answer.json()).error];
        }"""
    )
    assert refused == [403, "QueueNotAllowed"]

    # The supervisor deactivates her: her next request finds no session.
    row.get_by_role("button", name="Deactivate").click()
    sup.locator("#confirm-ok").click()
    expect(row).to_contain_text("deactivated")
    answer = una.evaluate("async () => (await fetch('/api/me')).status")
    assert answer == 401
    assert same_origin_only(sup_tab, server) == [] and sup_tab.problems == []
    assert una_tab.problems == []
