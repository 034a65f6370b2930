"""Where the service holds a person (a claims-platform user), and what erasure and an access
request do with each place. tests/privacy/test_coverage.py fails when a table with a ``user_id``
column is missing here, so a new table cannot hold people unnoticed.

docs/personal-data.md is the account of the same for a data-protection officer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Place:
    table: str
    holds: str
    # What erasure does: "deleted", "cleared" (kept without personal data) or "kept" (only what
    # the record needs, no personal data).
    erasure: str
    # The export's section holding its rows.
    export: str


PLACES: tuple[Place, ...] = (
    Place("user_call_scores", "scores, attempts, the next call, the queue", "deleted", "score"),
    Place("unsigned_users_queue", "entries: reason, claim, signature", "deleted", "queue_entries"),
    Place(
        "outstanding_requests_queue",
        "entries: reason, claim, documents owed",
        "deleted",
        "queue_entries",
    ),
    Place("callbacks", "promised calls: when, by whom, how they ended", "deleted", "callbacks"),
    Place(
        "assignments",
        "the ledger: each hand-out, its times, agent, outcome, notes, release reason, details",
        "cleared",
        "ledger",
    ),
    Place("queue_transitions", "moves between queues and their reasons", "cleared", "transitions"),
    Place("entry_invalidations", "hand-outs refused and why", "cleared", "invalidations"),
    Place(
        "webhook_events",
        "events told to other systems about them: ids, times, outcomes, and to whom",
        "kept",
        "events",
    ),
    Place("erased_users", "the tombstone: erased when, by whom", "kept", "erased"),
    Place("data_requests", "the audit of erasures and access requests", "kept", "requests"),
)

BY_TABLE = {place.table: place for place in PLACES}
