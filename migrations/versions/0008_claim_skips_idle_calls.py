"""cq_claim: the due-callback walk only when a callback is due, the queue's entry taken inline

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 21:30:00

Replaces 0007's ``cq_claim`` (every claim attempt runs it) with the same statements in the same
order, minus work that finds nothing; what it decides is unchanged:

* it looks for a due callback only when one probe of ``ix_callbacks_scheduled_queue_due`` finds
  a scheduled callback of the queue due now: every callback ``cq_take_callback`` may serve is one
  of those. With none due (the usual case) the set-returning call and its three index walks and
  scan of ``agents`` are skipped;
* it takes the queue's swap lock and then the first pending entry itself, one branch per queue,
  instead of through ``cq_take_<queue>()``, a set-returning function (dropped here).

Measured with pg_stat_statements on the claim benchmark's data, alternating 0007 and 0008 on the
same server: ``cq_claim`` 152 -> 120 µs of PostgreSQL's time per call, the whole cycle's store and
replica statements 662 -> 628 µs (README, Performance).

The new text is in migrations/sql/0008_claim_skips_idle_calls/up/; the downgrade restores the
texts in down/ (0007's cq_claim and the per-queue takes).
"""

from collections.abc import Sequence

from alembic import op

from migrations import sqlfiles

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0008_claim_skips_idle_calls"
QUEUES = ("unsigned_users", "outstanding_requests")


def upgrade() -> None:
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)
    for queue in QUEUES:
        op.execute(f"DROP FUNCTION cq_take_{queue}()")


def downgrade() -> None:
    for statement in sqlfiles.install_statements(f"{SQL}/down"):
        op.execute(statement)
