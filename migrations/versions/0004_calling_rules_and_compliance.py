"""calling rules and compliance (issue 14): run-time calling rules and their audit, the
suppression list, and the ledger index behind the attempt caps

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:41:03.206050
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The attempt caps for one user, for the claim path's own statements and functions (SPEC 7.3):
# 'weekly' or 'daily' when the user is at that cap, else null. Counted from the ledger on the
# database's clock; a due callback passes p_daily_exempt => true (exempt from the daily cap only).
# The one definition of the rule: the candidates (cq_candidates) and the hand-out call it.
# PL/pgSQL, not SQL: PostgreSQL (before 18) plans a SQL function that it cannot inline (this one
# aggregates) afresh in every statement that calls it, about 0.1 ms each time, and the claim path
# calls it in every attempt; PL/pgSQL keeps its plan for the session.
ATTEMPT_CAP_FUNCTION = """
CREATE FUNCTION callqueue_attempt_cap(
    p_user_id bigint, p_max_day integer, p_max_week integer,
    p_daily_exempt boolean DEFAULT false
) RETURNS text LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (
        SELECT CASE
                 WHEN count(*) >= p_max_week THEN 'weekly'
                 WHEN NOT p_daily_exempt
                      AND count(*) FILTER (WHERE a.finished_at > now() - interval '24 hours')
                          >= p_max_day THEN 'daily'
               END
          FROM assignments a
         WHERE a.user_id = p_user_id AND a.status = 'completed'
           AND a.finished_at > now() - interval '168 hours');
END $$
"""


def upgrade() -> None:
    # The ledger is the biggest table and takes an insert with every hand-out: build the index
    # without blocking writes (outside the migration's transaction, as CONCURRENTLY requires).
    # First, so that if it fails nothing else has been done; a failed build leaves an INVALID
    # index behind, which the next attempt's CREATE reports: drop it and run the upgrade again.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_assignments_completed_user_id_finished_at",
            "assignments",
            ["user_id", "finished_at"],
            unique=False,
            postgresql_where=sa.text("status = 'completed'"),
            postgresql_concurrently=True,
        )
    op.create_table(
        "suppression_key_check",
        sa.Column("id", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_suppression_key_check_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression_key_check")),
    )
    op.create_table(
        "calling_rules",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=True),
        sa.Column("hours", sa.Text(), nullable=True),
        sa.Column("holidays", postgresql.ARRAY(sa.Date()), nullable=True),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_calling_rules_single_row")),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["agents.id"], name=op.f("fk_calling_rules_updated_by_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calling_rules")),
    )
    op.create_table(
        "calling_rules_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("old_rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("new_rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("changed_by", sa.Integer(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["changed_by"],
            ["agents.id"],
            name=op.f("fk_calling_rules_changes_changed_by_agents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calling_rules_changes")),
    )
    op.create_table(
        "suppressed_numbers",
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("added_by", sa.Integer(), nullable=True),
        sa.Column(
            "added_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "phone_hash ~ '^[0-9a-f]{64}$'", name=op.f("ck_suppressed_numbers_phone_hash")
        ),
        sa.ForeignKeyConstraint(
            ["added_by"], ["agents.id"], name=op.f("fk_suppressed_numbers_added_by_agents")
        ),
        sa.PrimaryKeyConstraint("phone_hash", name=op.f("pk_suppressed_numbers")),
    )
    op.create_table(
        "suppression_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("phone_hash", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "action IN ('add', 'remove')", name=op.f("ck_suppression_changes_action")
        ),
        sa.CheckConstraint(
            "phone_hash ~ '^[0-9a-f]{64}$'", name=op.f("ck_suppression_changes_phone_hash")
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_suppression_changes_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression_changes")),
    )
    op.create_index(
        "ix_suppression_changes_phone_hash", "suppression_changes", ["phone_hash"], unique=False
    )
    op.execute(ATTEMPT_CAP_FUNCTION)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_assignments_completed_user_id_finished_at",
            table_name="assignments",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.execute("DROP FUNCTION IF EXISTS callqueue_attempt_cap(bigint, integer, integer, boolean)")
    op.drop_index("ix_suppression_changes_phone_hash", table_name="suppression_changes")
    op.drop_table("suppression_changes")
    op.drop_table("suppressed_numbers")
    op.drop_table("calling_rules_changes")
    op.drop_table("calling_rules")
    op.drop_table("suppression_key_check")
