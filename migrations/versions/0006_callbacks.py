"""callbacks (SPEC 7.2): the promised calls, their supervisors' audit, and the ledger's link

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:13:36.953845

One open (scheduled or assigned) callback per person is the unique partial index
uq_callbacks_open_user. The claim functions (the next migration) serve, book and expire them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("queue_type", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner_agent_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'scheduled'"), nullable=False),
        sa.Column("booked_by_assignment_id", sa.UUID(), nullable=True),
        sa.Column("assignment_id", sa.UUID(), nullable=True),
        sa.Column("first_handed_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "queue_type IN ('unsigned_users', 'outstanding_requests')",
            name=op.f("ck_callbacks_queue_type"),
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'assigned', 'completed', 'cancelled')",
            name=op.f("ck_callbacks_status"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_agent_id"], ["agents.id"], name=op.f("fk_callbacks_owner_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
    )
    op.create_index("ix_callbacks_due_at", "callbacks", ["due_at"], unique=False)
    op.create_index(
        "ix_callbacks_scheduled_owner_due",
        "callbacks",
        ["owner_agent_id", "due_at"],
        unique=False,
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.create_index(
        "ix_callbacks_scheduled_queue_due",
        "callbacks",
        ["queue_type", "due_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.create_index(
        "uq_callbacks_open_user",
        "callbacks",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('scheduled', 'assigned')"),
    )
    op.create_table(
        "callback_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("callback_id", sa.UUID(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("old_owner_agent_id", sa.Integer(), nullable=True),
        sa.Column("new_owner_agent_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "action IN ('cancel', 'reassign')", name=op.f("ck_callback_changes_action")
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_callback_changes_agent_id_agents")
        ),
        sa.ForeignKeyConstraint(
            ["callback_id"],
            ["callbacks.id"],
            name=op.f("fk_callback_changes_callback_id_callbacks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_changes")),
    )
    op.create_index(
        "ix_callback_changes_callback_id", "callback_changes", ["callback_id"], unique=False
    )
    op.add_column("assignments", sa.Column("callback_id", sa.UUID(), nullable=True))
    op.add_column(
        "assignments", sa.Column("callback_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.drop_constraint(op.f("ck_assignments_source"), "assignments", type_="check")
    op.create_check_constraint(
        op.f("ck_assignments_source"), "assignments", "source IN ('queue', 'direct', 'callback')"
    )
    op.create_check_constraint(
        op.f("ck_assignments_callback_source"),
        "assignments",
        "(source = 'callback') = (callback_id IS NOT NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_assignments_callback_source"), "assignments", type_="check")
    op.execute("DELETE FROM assignments WHERE source = 'callback'")
    op.drop_constraint(op.f("ck_assignments_source"), "assignments", type_="check")
    op.create_check_constraint(
        op.f("ck_assignments_source"), "assignments", "source IN ('queue', 'direct')"
    )
    op.drop_column("assignments", "callback_due_at")
    op.drop_column("assignments", "callback_id")
    op.drop_index("ix_callback_changes_callback_id", table_name="callback_changes")
    op.drop_table("callback_changes")
    op.drop_index(
        "uq_callbacks_open_user",
        table_name="callbacks",
        postgresql_where=sa.text("status IN ('scheduled', 'assigned')"),
    )
    op.drop_index(
        "ix_callbacks_scheduled_queue_due",
        table_name="callbacks",
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.drop_index(
        "ix_callbacks_scheduled_owner_due",
        table_name="callbacks",
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.drop_index("ix_callbacks_due_at", table_name="callbacks")
    op.drop_table("callbacks")
