"""The people page's webhooks panel in Chromium (SPEC 8.4): an admin adds an endpoint (its
secret shown once), sends a test event to a real receiver, reads the delivery log, redelivers,
and disables it; a supervisor is not offered the panel."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine
from standardwebhooks import Webhook

from tests.console.conftest import Book, Server, Tab, console_person, same_origin_only, sign_in
from tests.webhooks.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as r:
        yield r


def test_an_admin_adds_tests_and_redelivers_a_webhook_from_the_people_page(
    servers: Callable[..., Server],
    open_tab: Callable[..., Tab],
    book: Callable[..., Book],
    store_engine: Engine,
    receiver: Receiver,
) -> None:
    server = servers()
    seeded = book(1)
    sup_tab = open_tab()
    sup = sign_in(sup_tab, server, seeded.supervisor, "/console/people")
    expect(sup.locator("#people-table tbody tr").first).to_be_visible()
    expect(sup.locator("#webhooks")).to_have_count(0)

    tab = open_tab()
    page = sign_in(
        tab, server, console_person(store_engine, "integrator", "admin"), "/console/people"
    )
    panel = page.locator("#webhooks")
    expect(panel.locator("#webhooks-empty")).to_be_visible()
    # Nothing chosen: said at the form, nothing asked of the service.
    panel.get_by_label("Receiver URL").fill(receiver.url)
    panel.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#w-error")).to_have_text("Choose at least one event type.")
    panel.get_by_label("user.erased").check()
    panel.get_by_label("callback.booked").check()
    panel.get_by_label("Description").fill("CRM")
    panel.get_by_role("button", name="Add endpoint").click()
    secret = page.locator("#w-secret-value")
    expect(secret).to_contain_text("whsec_")
    signing_secret = secret.inner_text()
    row = panel.locator("#webhooks-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("callback.booked, user.erased")
    expect(row).to_contain_text("enabled")

    row.get_by_role("button", name="Send a test").click()
    expect(page.get_by_role("alert")).to_contain_text("Test event delivered (200")
    assert len(receiver.received) == 1
    first = receiver.received[0]
    Webhook(signing_secret).verify(first.body, first.headers)

    row.get_by_role("button", name="Deliveries").click()
    log = page.locator("#webhook-log-table tbody tr")
    expect(log).to_have_count(1)
    expect(log).to_contain_text("webhook.test")
    log.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_role("alert")).to_contain_text("will be sent again")
    # The server's own sender sends it again, within about a second, with the same id.
    deadline = time.monotonic() + 15
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(receiver.received) == 2
    assert receiver.received[1].headers["webhook-id"] == first.headers["webhook-id"]

    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled: disabled by an admin")
    assert same_origin_only(tab, server) == [] and tab.problems == []
    assert sup_tab.problems == []
