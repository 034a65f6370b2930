"""claim path as PL/pgSQL functions: one round trip per step, lock order written out

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:00:00

Why functions: a claim's steps (the swap lock, the source row, the ledger row, the score row) must
be taken in one order everywhere, and each step is a round trip when written as separate
statements. A PL/pgSQL function runs its statements in the order they are written, each with a
fresh snapshot (READ COMMITTED), in one round trip: the order is readable in one place and never
depends on how the planner evaluates a single query. This is the pattern of pgmq's and
graphile-worker's claim functions.

Why PL/pgSQL for anything with a statement the planner cannot inline (an UPDATE, a FOR UPDATE,
an aggregate): PostgreSQL before 18 plans such a SQL-language function afresh every time a
statement calls it (about 0.1 ms here), while PL/pgSQL keeps its plans for the session. The
SQL-language functions left are either inlined into their callers (a lock call, a CASE, the
candidates' SELECT) or off the hot path.

Lock order, everywhere (claims, completions, releases, sweeps, swaps):

    swap lock (per queue)  ->  source row  ->  ledger row  ->  score row

* swap lock: ``pg_advisory_xact_lock(1667329132, n)``, taken shared by every transaction that writes
  a queue's entries and exclusively by the population's swap of that queue, so no entry changes
  under a swap.
* source row: the queue entry (``FOR UPDATE``), the callback (``callbacks``, SPEC 7.2), or in
  direct mode a per-user advisory lock (``pg_try_advisory_xact_lock(1970496882,
  hashint8(user_id))``), which no transaction ever waits for: it only keeps two direct-mode
  claims from validating the same lead at once. A completion takes the entry, then the person's
  open callback; a sweep takes both with SKIP LOCKED, so it never waits for either.
* ledger row: the assignment (``assignments``), inserted or locked.
* score row: ``user_call_scores``, locked after the ledger row. A hand-out locks it (FOR SHARE)
  and re-checks it in the same transaction as its ledger insert; an outcome locks it (FOR UPDATE)
  before deciding whether a lapsed assignment may still be completed. So the check and the
  hand-out are one decision, and a late outcome and a new hand-out of the same person are
  serialised on the one row both must take.

The two queue tables differ only in their names and detail columns: the per-queue functions
are the same text for each table.

Changing a function later means a new migration that replaces it (CREATE OR REPLACE).
"""

from collections.abc import Sequence

from alembic import op

from migrations import sqlfiles

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The functions' text: migrations/sql/0007_claim_functions/, one file per function.
SQL = "0007_claim_functions"


def upgrade() -> None:
    for statement in sqlfiles.install_statements(SQL):
        op.execute(statement)


def downgrade() -> None:
    for statement in sqlfiles.drop_statements(SQL):
        op.execute(statement)
