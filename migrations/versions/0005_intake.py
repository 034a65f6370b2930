"""intake: discovery's state and run history, the scorer role, the scorer's outcome marker

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:42:35.638786
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "discovery_runs",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("full_walk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("resumed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("scanned_users", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("scanned_claims", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "scanned_requirements", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("created", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("reclassified", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_discovery_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discovery_runs")),
    )
    op.create_index("ix_discovery_runs_started_at", "discovery_runs", ["started_at"], unique=False)
    op.create_table(
        "discovery_state",
        sa.Column("id", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_phase", sa.Text(), nullable=True),
        sa.Column("pass_after_id", sa.BigInteger(), nullable=True),
        sa.Column("pass_max_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_users_max_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "pass_phase IN ('users', 'claims', 'requirements')",
            name=op.f("ck_discovery_state_pass_phase"),
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_discovery_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discovery_state")),
    )
    # A constant default: no table rewrite, instant on a book of millions.
    op.add_column(
        "user_call_scores",
        sa.Column("scored_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.drop_constraint(op.f("ck_agents_role"), "agents", type_="check")
    op.create_check_constraint(
        op.f("ck_agents_role"), "agents", "role IN ('agent', 'supervisor', 'scorer')"
    )


def downgrade() -> None:
    op.execute("UPDATE agents SET is_active = false WHERE role = 'scorer'")
    op.execute("UPDATE agents SET role = 'agent' WHERE role = 'scorer'")
    op.drop_constraint(op.f("ck_agents_role"), "agents", type_="check")
    op.create_check_constraint(op.f("ck_agents_role"), "agents", "role IN ('agent', 'supervisor')")
    op.drop_column("user_call_scores", "scored_attempts")
    op.drop_table("discovery_state")
    op.drop_index("ix_discovery_runs_started_at", table_name="discovery_runs")
    op.drop_table("discovery_runs")
