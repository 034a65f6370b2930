"""cq_claim waits for a swap holding nothing the swap needs

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:00:00

A claim attempt that finds no entry waited, inside ``cq_claim``, for the queue's swap lock, so
that a refresh never answers an agent "empty" (SPEC 3.2). By then the attempt may hold rows: the
entries its sweep put back, or a row its search locked and then passed over because it changed
meanwhile. A swap that keeps the old snapshot's front takes such rows in its last statements,
under its lock, so the two could wait for each other (PostgreSQL's deadlock detector ended the
claim; seen under 64 agents with a refresh loop). ``cq_claim`` now only tries the lock
(``cq_swap_lock_try_shared``) and, when a swap holds it, answers source ``swap``: the caller
commits and waits for the lock at the start of its next attempt, holding nothing, then looks
again. What a claim answers is unchanged.

The new texts are in migrations/sql/0011_claim_waits_holding_nothing/up/; the downgrade restores
0009's ``cq_claim`` (down/) and drops the new function.
"""

from collections.abc import Sequence

from alembic import op

from migrations import sqlfiles

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0011_claim_waits_holding_nothing"


def upgrade() -> None:
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)


def downgrade() -> None:
    for statement in sqlfiles.install_statements(f"{SQL}/down"):
        op.execute(statement)
    op.execute("DROP FUNCTION cq_swap_lock_try_shared(text)")
