"""What must never happen, checked after a run: a user held by two agents at once, an assignment
id handed out twice (from the agents' side), a user in two of this run's ledger rows from the
queue, a callback handed out twice (from the ledger)."""

from __future__ import annotations

from collections import Counter, defaultdict

import psycopg

from bench.harness.db import libpq_url
from bench.harness.load import Handout
from bench.harness.seed import TABLE

# The ledger rows of this run, not of the seeded history.
THIS_RUN = "assigned_at > now() - interval '1 day'"


def duplicates(handouts: list[Handout]) -> dict[str, int]:
    by_user: dict[int, list[Handout]] = defaultdict(list)
    by_assignment: Counter[str] = Counter()
    for ho in handouts:
        by_user[ho.user_id].append(ho)
        by_assignment[ho.assignment_id] += 1
    overlapping = 0
    for hos in by_user.values():
        for i, a in enumerate(hos):
            for b in hos[i + 1 :]:
                if a.agent != b.agent and a.received < b.released and b.received < a.released:
                    overlapping += 1
    return {
        "handouts": len(handouts),
        "users_held_by_two_agents_at_once": overlapping,
        "users_handed_out_more_than_once": sum(1 for hos in by_user.values() if len(hos) > 1),
        "assignment_ids_handed_out_twice": sum(1 for n in by_assignment.values() if n > 1),
        "resumed_responses": sum(1 for ho in handouts if ho.resumed),
    }


def ledger_check(store_url: str) -> dict[str, int]:
    """The ledger's duplicates in this run's rows (not the seeded history): a user handed out
    twice from the queue (a callback hands its user out again by design: those rows are counted
    apart), a callback handed out twice."""
    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        row = conn.execute(
            f"""WITH run AS (SELECT * FROM assignments WHERE {THIS_RUN})
               SELECT (SELECT count(*) FROM run),
                      (SELECT count(*) FROM (SELECT user_id FROM run
                                              WHERE source <> 'callback'
                                              GROUP BY user_id HAVING count(*) > 1) d),
                      (SELECT count(*) FROM run WHERE status = 'active'),
                      (SELECT count(*) FROM {TABLE} WHERE status = 'invalid'),
                      (SELECT count(*) FROM {TABLE} WHERE status = 'pending'),
                      (SELECT count(*) FROM run WHERE source = 'callback'),
                      (SELECT count(*) FROM (SELECT callback_id FROM run
                                              WHERE callback_id IS NOT NULL
                                              GROUP BY callback_id HAVING count(*) > 1) c),
                      (SELECT count(*) FROM callbacks
                        WHERE status IN ('scheduled', 'assigned'))"""
        ).fetchone()
    assert row is not None
    keys = (
        "ledger_rows",
        "users_in_two_ledger_rows",
        "still_active",
        "invalid",
        "pending",
        "callback_rows",
        "callbacks_handed_out_twice",
        "open_callbacks",
    )
    return dict(zip(keys, (int(v) for v in row), strict=True))


def duplicate_total(dup: dict[str, int], ledger: dict[str, int]) -> int:
    """The duplicates that break the promise (must be 0): a user held by two agents at once, an
    assignment id handed out twice, a user in two of the run's ledger rows from the queue."""
    return (
        dup["users_held_by_two_agents_at_once"]
        + dup["assignment_ids_handed_out_twice"]
        + ledger["users_in_two_ledger_rows"]
    )


def open_callbacks(store_url: str) -> int:
    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM callbacks WHERE status IN ('scheduled', 'assigned')"
        ).fetchone()
    assert row is not None
    return int(row[0])
