"""The do-not-call list's promises (SPEC 8.1), each shown at the point where it used to fail:

* a process whose SUPPRESSION_KEY is not the list's hands nobody out and writes no hash
  (next-user 503 SuppressionKeyMismatch, /readyz 503 "mismatch", the import exits non-zero);
* a do_not_contact outcome suppresses the number that was handed out, in the completion's own
  transaction, whatever the replica does at that moment (down, or holding another number now);
* a do_not_contact and a hand-out of another person with the same number are serialised: a
  hand-out racing the outcome either commits before it or is refused.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.rules.outcomes import Outcome
from app.rules.suppression import SuppressionList
from app.services import Services
from app.vocabulary import QueueType
from tests.conftest import SUPPRESSION_KEY
from tests.factories import Replica, add_scores, new_agent
from tests.processes import clean_env, command
from tests.proxy import FaultProxy
from tests.queues.test_claims import flags, in_thread, make_agents
from tests.queues.test_interleavings import pause, wait_until_paused

UNSIGNED = "unsigned_users"
QUEUE = QueueType.UNSIGNED_USERS
NEXT = f"/api/queues/{UNSIGNED}/next-user"
POPULATE = "/api/admin/populate"
OTHER_KEY = "another-suppression-key-0123456789abcdef-XYZ"
SHARED = "07700 900777"


@pytest.fixture
def make_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """These promises hold at any hour: the window is open whenever the tests run (the calling
    rules' own tests start from the contract's default hours)."""

    def make(**overrides: Any) -> Settings:
        return make_settings(**{"calling_hours": "always", **overrides})

    return make


def queue_users(replica: Replica, store: Engine, phones: dict[int, str]) -> None:
    for user_id, phone in phones.items():
        replica.unsigned(user_id, phone=phone)
    add_scores(
        store,
        [
            {"user_id": u, "current_queue_type": UNSIGNED, "current_score": i}
            for i, u in enumerate(phones)
        ],
    )


def listed(store: Engine) -> set[str]:
    with store.connect() as conn:
        return set(conn.execute(text("SELECT phone_hash FROM suppressed_numbers")).scalars())


def key_of(phone: str) -> str:
    key = SuppressionList(SUPPRESSION_KEY.encode()).phone_key(phone)
    assert key is not None
    return key


# -- the key -------------------------------------------------------------------------------------


def test_a_process_with_another_key_hands_nobody_out_and_says_so(
    make_client: Callable[..., TestClient], replica: Replica, store_engine: Engine
) -> None:
    queue_users(replica, store_engine, {1: "07700 900001", 2: "07700 900002"})
    with store_engine.connect() as conn:  # no process has needed the list's key yet
        assert SuppressionList(SUPPRESSION_KEY.encode()).key_state(conn) == "unset"
    right = make_client()  # records it as it starts
    assert right.get("/readyz").json()["suppression_key"] == "ok"
    boss = new_agent(store_engine, "boss", "supervisor")
    alice, bob = new_agent(store_engine, "alice"), new_agent(store_engine, "bob")
    assert right.post(POPULATE, headers=boss.auth).status_code == 200
    first = right.post(NEXT, headers=alice.auth)
    assert first.status_code == 200, first.text

    wrong = make_client(suppression_key=OTHER_KEY)
    refused = wrong.post(NEXT, headers=bob.auth)

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "SuppressionKeyMismatch"
    assert OTHER_KEY not in refused.text and SUPPRESSION_KEY not in refused.text
    with store_engine.connect() as conn:
        assert conn.execute(text("SELECT user_id FROM assignments")).scalars().all() == [1]
        assert (
            conn.execute(
                text("SELECT status FROM unsigned_users_queue WHERE user_id = 2")
            ).scalar_one()
            == "pending"
        )
    ready = wrong.get("/readyz")
    assert (ready.status_code, ready.json()["status"], ready.json()["suppression_key"]) == (
        503,
        "not_ready",
        "mismatch",
    )
    added = wrong.post(
        "/api/admin/suppression", headers=boss.auth, json={"phones": ["07700 900003"]}
    )
    assert (added.status_code, added.json()["error"]) == (503, "SuppressionKeyMismatch")
    assert listed(store_engine) == set()


def test_the_import_with_another_key_exits_non_zero_and_writes_nothing(
    store_url: str, replica_url: str, store_engine: Engine, tmp_path: Path
) -> None:
    with store_engine.begin() as conn:  # the list's key is recorded
        SuppressionList(SUPPRESSION_KEY.encode()).check_key(conn)
    path = tmp_path / "dnc.txt"
    path.write_text("07700 900101\n07700 900102\n")
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        SUPPRESSION_KEY=OTHER_KEY,
    )
    result = subprocess.run(
        [*command(), "suppression", "import", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SUPPRESSION_KEY" in result.stderr and OTHER_KEY not in result.stderr
    assert listed(store_engine) == set()


# -- do_not_contact suppresses the number that was dialled --------------------------------------


def test_do_not_contact_suppresses_the_dialled_number_whatever_the_replica_says_now(
    make_client: Callable[..., TestClient],
    replica: Replica,
    replica_engine: Engine,
    replica_url: str,
    store_engine: Engine,
) -> None:
    """Two calls: for the first the replica holds another number by the time of the outcome;
    for the second it is down. Each time the number the agent was given is suppressed."""
    queue_users(replica, store_engine, {1: "07700 900011", 2: "07700 900022"})
    target = make_url(replica_url)
    with FaultProxy(target.port or 5432) as proxy:
        proxied = target.set(host="127.0.0.1", port=proxy.port)
        client = make_client(replica_database_url=proxied.render_as_string(hide_password=False))
        boss, alice = new_agent(store_engine, "boss", "supervisor"), new_agent(store_engine, "a")
        assert client.post(POPULATE, headers=boss.auth).status_code == 200

        first = client.post(NEXT, headers=alice.auth).json()
        assert first["user"]["phone_number"] == "07700 900011"
        with replica_engine.begin() as conn:  # the person's number changes meanwhile
            conn.execute(text("UPDATE users SET phone_number = '07700 900099' WHERE id = 1"))
        done = client.post(
            f"/api/assignments/{first['assignment_id']}/complete",
            headers=alice.auth,
            json={"outcome": "do_not_contact"},
        )
        assert done.status_code == 200, done.text
        assert listed(store_engine) == {key_of("07700 900011")}

        second = client.post(NEXT, headers=alice.auth).json()
        assert second["user"]["phone_number"] == "07700 900022"
        proxy.cut()  # the replica goes down before the outcome
        done = client.post(
            f"/api/assignments/{second['assignment_id']}/complete",
            headers=alice.auth,
            json={"outcome": "do_not_contact"},
        )
        assert done.status_code == 200, done.text
    assert listed(store_engine) == {key_of("07700 900011"), key_of("07700 900022")}
    with store_engine.connect() as conn:
        audit = conn.execute(text("SELECT action, source FROM suppression_changes")).all()
    assert [tuple(a) for a in audit] == [("add", "do_not_contact")] * 2


# -- a do_not_contact and a hand-out of the same number -----------------------------------------


def timed(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """``in_thread``, noting when the work returned (time.monotonic)."""

    def run() -> Any:
        result = work()
        finished.append(time.monotonic())
        return result

    finished: list[float] = []
    thread, out = in_thread(run)
    out["finished"] = finished
    return thread, out


def test_a_hand_out_racing_a_do_not_contact_of_the_same_number_is_refused(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    """Two people share a number. One's do_not_contact is paused after it wrote the number to
    the list, before it commits; meanwhile another agent asks for the next user, the other
    person. The hand-out waits for the outcome and then refuses the number (before, its check
    did not see the uncommitted row and the number was handed out: dialled after the person
    asked never to be called)."""
    queue_users(replica, store_engine, {1: SHARED, 2: SHARED, 3: "07700 900333"})
    assert services.population().run(trigger="test").queues[QUEUE].populated == 3
    first, second = make_agents(store_engine, 2)
    held = services.claims.next_user(first, QUEUE, flags())
    assert held is not None and held.assignment.user_id == 1

    with pause(store_engine, "suppressed_numbers", "AFTER INSERT", seconds=2):
        outcome, outcome_out = in_thread(
            lambda: services.assignments.complete(
                first, held.assignment.id, Outcome.DO_NOT_CONTACT, None, None
            )
        )
        wait_until_paused(store_engine)
        got = services.claims.next_user(second, QUEUE, flags())
        outcome.join(10)

    assert "error" not in outcome_out, outcome_out.get("error")
    assert got is not None and got.assignment.user_id == 3
    with store_engine.connect() as conn:
        refused = conn.execute(
            text("SELECT status, invalid_reason FROM unsigned_users_queue WHERE user_id = 2")
        ).one()
        handed = conn.execute(text("SELECT user_id FROM assignments ORDER BY user_id")).all()
    assert tuple(refused) == ("invalid", "suppressed")
    assert [h.user_id for h in handed] == [1, 3]


def test_a_hand_out_that_checked_the_number_first_commits_before_the_do_not_contact(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    """The other order: the hand-out of the second person has checked the number and is paused
    before it commits; the do_not_contact of the first person waits for it, and only then lists
    the number. The hand-out stands (it committed first: before, the outcome committed during
    the pause and the hand-out after it) and every later one is refused."""
    queue_users(replica, store_engine, {1: SHARED, 2: SHARED, 3: SHARED})
    services.population().run(trigger="test")
    first, second, third = make_agents(store_engine, 3)
    held = services.claims.next_user(first, QUEUE, flags())
    assert held is not None and held.assignment.user_id == 1

    with pause(
        store_engine,
        "unsigned_users_queue",
        "AFTER UPDATE",
        seconds=2,
        when="NEW.status = 'assigned' AND NEW.user_id = 2",
    ):
        hand_out, hand_out_out = timed(lambda: services.claims.next_user(second, QUEUE, flags()))
        wait_until_paused(store_engine)
        outcome, outcome_out = timed(
            lambda: services.assignments.complete(
                first, held.assignment.id, Outcome.DO_NOT_CONTACT, None, None
            )
        )
        hand_out.join(10)
        outcome.join(10)

    assert "error" not in hand_out_out and "error" not in outcome_out
    assert hand_out_out["result"].assignment.user_id == 2
    assert hand_out_out["finished"][0] <= outcome_out["finished"][0], (
        "the do_not_contact committed before a hand-out of its number that was still open"
    )
    assert listed(store_engine) == {key_of(SHARED)}
    assert services.claims.next_user(third, QUEUE, flags()) is None
    with store_engine.connect() as conn:
        reason = conn.execute(
            text("SELECT invalid_reason FROM unsigned_users_queue WHERE user_id = 3")
        ).scalar_one()
    assert reason == "suppressed"
