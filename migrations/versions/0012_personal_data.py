"""personal data: erasure's tombstones, what the compliance report keeps of erased callbacks,
the daily compliance figures kept past retention, the audit of data requests (SPEC 8.3)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 19:00:00

New tables: ``erased_users`` (the tombstones), ``erased_callbacks`` (an erased person's
callbacks as the compliance report counts them, without a user id), ``compliance_days`` (a
day's figures kept before retention deletes its ledger rows) and ``data_requests`` (the audit of
erasures and access requests), ``retention_state`` (how far retention has cleared notes). New
functions, in migrations/sql/0012_personal_data/up/:
``cq_person_locks`` (the per-person bucket lock writers of score rows and erasures share) and
``cq_erase``. An index on queue_transitions and entry_invalidations by time, for retention.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import sqlfiles

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0012_personal_data"


def _timestamp(name: str, *, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if default else None,
        nullable=nullable,
    )


def upgrade() -> None:
    # Retention clears notes in (finished_at, id) order, going on from where it stopped: the
    # ledger's index on finished_at gains the id (and the old one goes). Built without blocking
    # writes, first, as migration 0004 builds its index (a failed build leaves an INVALID
    # index: drop it and run the upgrade again).
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_assignments_finished_at_id",
            "assignments",
            ["finished_at", "id"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_assignments_finished_at",
            table_name="assignments",
            postgresql_concurrently=True,
        )
    op.create_table(
        "erased_users",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        _timestamp("erased_at", nullable=False, default=True),
        sa.Column("erased_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["erased_by"], ["agents.id"], name=op.f("fk_erased_users_erased_by_agents")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_erased_users")),
    )
    op.create_table(
        "erased_callbacks",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("due_at", nullable=False),
        _timestamp("first_handed_out_at"),
        sa.Column("status", sa.Text(), nullable=False),
        _timestamp("finished_at"),
        sa.CheckConstraint(
            "status IN ('scheduled', 'assigned', 'completed', 'cancelled', 'erased')",
            name=op.f("ck_erased_callbacks_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erased_callbacks")),
    )
    op.create_index("ix_erased_callbacks_due_at", "erased_callbacks", ["due_at"])
    op.create_index("ix_erased_callbacks_created_at", "erased_callbacks", ["created_at"])
    op.create_table(
        "compliance_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _timestamp("summarised_at", nullable=False, default=True),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_compliance_days")),
    )
    op.create_table(
        "data_requests",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        _timestamp("at", nullable=False, default=True),
        sa.Column("removed", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint("action IN ('erase', 'export')", name=op.f("ck_data_requests_action")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_data_requests_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_requests")),
    )
    op.create_index("ix_data_requests_user_id", "data_requests", ["user_id"])
    op.create_table(
        "retention_state",
        sa.Column("name", sa.Text(), nullable=False),
        _timestamp("through_at", nullable=False),
        sa.Column("through_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_state")),
    )
    op.create_index("ix_queue_transitions_created_at", "queue_transitions", ["created_at"])
    op.create_index("ix_entry_invalidations_user_id", "entry_invalidations", ["user_id"])
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)


def downgrade() -> None:
    for statement in sqlfiles.drop_statements(f"{SQL}/up"):
        op.execute(statement)
    op.drop_index("ix_entry_invalidations_user_id", table_name="entry_invalidations")
    op.drop_index("ix_queue_transitions_created_at", table_name="queue_transitions")
    op.drop_table("retention_state")
    op.drop_index("ix_data_requests_user_id", table_name="data_requests")
    op.drop_table("data_requests")
    op.drop_table("compliance_days")
    op.drop_index("ix_erased_callbacks_created_at", table_name="erased_callbacks")
    op.drop_index("ix_erased_callbacks_due_at", table_name="erased_callbacks")
    op.drop_table("erased_callbacks")
    op.drop_table("erased_users")
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_assignments_finished_at",
            "assignments",
            ["finished_at"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_assignments_finished_at_id",
            table_name="assignments",
            postgresql_concurrently=True,
        )
