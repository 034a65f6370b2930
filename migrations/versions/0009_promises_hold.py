"""promises that hold: the dialled number's hash in the ledger, callbacks that follow their person,
claims that hold nothing across the replica read, one mechanism for every change to an assignment

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:00:00

The whole set of claim functions is replaced (migrations/sql/0009_promises_hold/up/, one file per
function; the downgrade restores down/, the set as 0008 left it):

* a hand-out keeps the keyed hash of the number it gave the agent (``assignments.phone_hash``), and
  a do_not_contact outcome suppresses exactly that hash in the completion's own transaction;
* a hand-out and an addition to the do-not-call list are serialised on the number
  (``cq_number_lock``), and a process whose SUPPRESSION_KEY is not the list's hands nobody out
  (``cq_key_matches``);
* a reclassified person's open callback moves with them, or is cancelled when they belong to no
  queue (``cq_reclassify``); a due callback at the weekly cap waits instead of being cancelled;
* claims no longer hold the queue's swap lock (only a claim that finds no entry waits for a swap
  in progress), nor do completions, releases and sweeps: the swap works under their row locks;
* release, extend and a supervisor's callback changes are functions too (``cq_release``,
  ``cq_extend``, ``cq_change_callback``), taking their locks in the claim's order;
* "busy" (a live hand-out or an open callback) is one view, ``cq_busy``.

``user_call_scores.scored_attempts`` goes: the scores API now writes scores as given.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations import sqlfiles

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0009_promises_hold"


def upgrade() -> None:
    op.add_column("assignments", sa.Column("phone_hash", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_assignments_phone_hash"),
        "assignments",
        "phone_hash ~ '^[0-9a-f]{64}$'",
    )
    op.drop_column("user_call_scores", "scored_attempts")
    for statement in sqlfiles.drop_statements(f"{SQL}/down"):
        op.execute(statement)
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)


def downgrade() -> None:
    for statement in sqlfiles.drop_statements(f"{SQL}/up"):
        op.execute(statement)
    for statement in sqlfiles.install_statements(f"{SQL}/down"):
        op.execute(statement)
    op.add_column(
        "user_call_scores",
        sa.Column("scored_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.drop_constraint(op.f("ck_assignments_phone_hash"), "assignments", type_="check")
    op.drop_column("assignments", "phone_hash")
