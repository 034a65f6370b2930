"""queue fronts: claims start where the pending entries start

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 01:00:00

A claim takes the first pending entry in serving order through the partial index of pending
entries. Every entry handed out leaves a dead row version in that index until vacuum can remove
it, and while any snapshot older than the hand-out is open (a report, a backup, a long
transaction), vacuum cannot: every claim then steps over every entry handed out since the
snapshot was taken (0.73x of the flat-out rate with a snapshot held for 60 s).

New: ``queue_fronts`` (one row per queue type: a position no entry before which is pending but
those put back), the queue tables' ``put_back`` (an entry pending again after a hand-out) with a
partial index of the pending put-back entries, and ``cq_advance_front`` (moves a front up; each
server process calls it every few seconds). ``cq_claim`` looks from the lower of the front and
the first put-back entry; ``cq_set_entry_<queue>`` marks an entry made pending again as put
back; the swap sets the front back to 0 in its own transaction. ``cq_claim`` also finds the
agent's live assignment as their latest hand-out still active, looked up by agent and time
rather than through the partial index of live assignments (which the planner may read whole),
and looks for a lapsed lease as the earliest one (a range read of ix_assignments_lease).
The texts are in migrations/sql/0015_queue_fronts/up/; the downgrade restores the earlier ones
(down/).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations import sqlfiles

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0015_queue_fronts"
QUEUES = ("unsigned_users", "outstanding_requests")


def upgrade() -> None:
    op.create_table(
        "queue_fronts",
        sa.Column("queue_type", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "queue_type IN ('unsigned_users', 'outstanding_requests')",
            name=op.f("ck_queue_fronts_queue_type"),
        ),
        sa.PrimaryKeyConstraint("queue_type", name=op.f("pk_queue_fronts")),
    )
    op.execute(
        "INSERT INTO queue_fronts (queue_type) VALUES ('unsigned_users'), ('outstanding_requests')"
    )
    for queue in QUEUES:
        table = f"{queue}_queue"
        op.add_column(
            table,
            sa.Column("put_back", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        )
        op.create_index(
            f"ix_{table}_put_back",
            table,
            ["queue_position", "id"],
            postgresql_where=sa.text("status = 'pending' AND put_back"),
        )
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)


def downgrade() -> None:
    for statement in sqlfiles.install_statements(f"{SQL}/down"):
        op.execute(statement)
    op.execute("DROP FUNCTION cq_advance_front(text)")
    for queue in QUEUES:
        table = f"{queue}_queue"
        op.drop_index(f"ix_{table}_put_back", table_name=table)
        op.drop_column(table, "put_back")
    op.drop_table("queue_fronts")
