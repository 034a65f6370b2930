"""webhooks: endpoints, the outbox, deliveries and their attempts; the triggers that write events
in the transaction of the change they report (SPEC 8.4)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 22:00:00

New tables: ``webhook_endpoints``, ``webhook_events`` (the outbox), ``webhook_deliveries`` (one
event to one endpoint) and ``webhook_attempts`` (the delivery log). ``callbacks`` gains
``overdue_reported_for``. New functions, in migrations/sql/0013_webhooks/up/: ``cq_emit``, the
trigger functions ``cq_assignment_events``, ``cq_callback_events``, ``cq_erasure_events`` and
``cq_run_events``, ``cq_report_overdue`` and ``cq_webhook_dispatch``; the triggers that call the
trigger functions are created here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import sqlfiles

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0013_webhooks"

NEW_ID = sa.text("gen_random_uuid()")

# (trigger, table, when it fires, its function). Each event comes from the one table every path
# writes, whichever path it is.
TRIGGERS = (
    ("cq_assignment_started", "assignments", "AFTER INSERT", "cq_assignment_events"),
    (
        "cq_assignment_ended",
        "assignments",
        "AFTER UPDATE OF status",
        "cq_assignment_events",
        "OLD.status = 'active' AND NEW.status <> 'active'",
    ),
    ("cq_callback_booked", "callbacks", "AFTER INSERT", "cq_callback_events"),
    (
        "cq_callback_changed",
        "callbacks",
        "AFTER UPDATE OF status, overdue_reported_for",
        "cq_callback_events",
        "OLD.status IS DISTINCT FROM NEW.status"
        " OR OLD.overdue_reported_for IS DISTINCT FROM NEW.overdue_reported_for",
    ),
    ("cq_user_erased", "erased_users", "AFTER INSERT", "cq_erasure_events"),
    (
        "cq_population_finished",
        "population_runs",
        "AFTER UPDATE OF status",
        "cq_run_events",
        "OLD.status = 'running' AND NEW.status <> 'running'",
    ),
    (
        "cq_discovery_finished",
        "discovery_runs",
        "AFTER UPDATE OF status",
        "cq_run_events",
        "OLD.status = 'running' AND NEW.status <> 'running'",
    ),
)


def _timestamp(name: str, *, nullable: bool = True, default: str | None = None) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text(default) if default else None,
        nullable=nullable,
    )


def _uuid(name: str, *, nullable: bool = False, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        postgresql.UUID(as_uuid=True),
        server_default=NEW_ID if default else None,
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        _uuid("id", default=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        _timestamp("previous_secret_until"),
        sa.Column("next_seq", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        _timestamp("failing_since"),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _timestamp("created_at", nullable=False, default="now()"),
        _timestamp("updated_at", nullable=False, default="now()"),
        sa.CheckConstraint(
            "cardinality(event_types) >= 1", name=op.f("ck_webhook_endpoints_event_types")
        ),
        sa.CheckConstraint(
            "enabled OR disabled_reason IS NOT NULL",
            name=op.f("ck_webhook_endpoints_disabled_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["agents.id"], name=op.f("fk_webhook_endpoints_created_by_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "webhook_events",
        _uuid("id", default=True),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        _timestamp("occurred_at", nullable=False, default="clock_timestamp()"),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dispatched", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _uuid("endpoint_id", nullable=True),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_events_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("position", name=op.f("uq_webhook_events_position")),
    )
    op.create_index(
        "ix_webhook_events_undispatched",
        "webhook_events",
        ["position"],
        postgresql_where=sa.text("NOT dispatched"),
    )
    op.create_index("ix_webhook_events_occurred_at", "webhook_events", ["occurred_at"])
    op.create_table(
        "webhook_deliveries",
        _uuid("id", default=True),
        _uuid("event_id"),
        _uuid("endpoint_id"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("round_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _timestamp("next_attempt_at", nullable=False),
        _timestamp("locked_until"),
        _timestamp("finished_at"),
        _timestamp("created_at", nullable=False, default="now()"),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_webhook_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "endpoint_id", "seq", name=op.f("uq_webhook_deliveries_endpoint_id_seq")
        ),
        sa.UniqueConstraint(
            "event_id", "endpoint_id", name=op.f("uq_webhook_deliveries_event_id_endpoint_id")
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        _uuid("id", default=True),
        _uuid("delivery_id"),
        _uuid("endpoint_id"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _timestamp("attempted_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_attempts_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    op.create_index(
        "ix_webhook_attempts_endpoint_attempted_at",
        "webhook_attempts",
        ["endpoint_id", "attempted_at"],
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.add_column("callbacks", _timestamp("overdue_reported_for"))
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)
    for name, table, when, function, *condition in TRIGGERS:
        only = f" WHEN ({condition[0]})" if condition else ""
        op.execute(
            f"CREATE TRIGGER {name} {when} ON {table} FOR EACH ROW{only}"
            f" EXECUTE FUNCTION {function}()"
        )


def downgrade() -> None:
    for name, table, *_ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for statement in sqlfiles.drop_statements(f"{SQL}/up"):
        op.execute(statement)
    op.drop_column("callbacks", "overdue_reported_for")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
