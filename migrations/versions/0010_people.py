"""people: named sign-in with passwords and the company's identity provider, sessions, API
tokens of their own, allowed queues and the audit (SPEC 8.2)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 17:00:00

``agents`` become people: an email (unique whatever its case), a display name, the ``admin``
role, the queues they may work, an optional argon2id password hash and an optional identity
provider subject. Bearer tokens move to ``api_tokens`` (named, owned, optionally expiring,
revocable): every existing agent's token is carried over, so scripts and dashboards keep
working. New tables: ``sessions``, ``password_links``, ``sign_in_failures``, ``oidc_logins``
and ``auth_events``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BOTH = "'{unsigned_users,outstanding_requests}'"


def _timestamp(name: str, *, nullable: bool = True, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if default else None,
        nullable=nullable,
    )


def upgrade() -> None:
    op.add_column("agents", sa.Column("email", sa.Text(), nullable=True))
    op.add_column("agents", sa.Column("display_name", sa.Text(), nullable=True))
    op.execute("UPDATE agents SET display_name = name")
    op.alter_column("agents", "display_name", nullable=False)
    op.add_column(
        "agents",
        sa.Column(
            "allowed_queues",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text(BOTH),
            nullable=False,
        ),
    )
    op.add_column("agents", sa.Column("password_hash", sa.Text(), nullable=True))
    op.add_column("agents", sa.Column("oidc_subject", sa.Text(), nullable=True))
    op.add_column("agents", _timestamp("updated_at", nullable=False, default=True))
    op.create_unique_constraint(op.f("uq_agents_oidc_subject"), "agents", ["oidc_subject"])
    op.create_index("uq_agents_email", "agents", [sa.text("lower(email)")], unique=True)
    op.drop_constraint(op.f("ck_agents_role"), "agents", type_="check")
    op.create_check_constraint(
        op.f("ck_agents_role"), "agents", "role IN ('agent', 'supervisor', 'admin', 'scorer')"
    )
    op.create_check_constraint(
        op.f("ck_agents_allowed_queues"),
        "agents",
        "allowed_queues <@ ARRAY['unsigned_users', 'outstanding_requests']::text[]",
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False, default=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _timestamp("expires_at"),
        _timestamp("revoked_at"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_api_tokens_agent_id_agents")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["agents.id"], name=op.f("fk_api_tokens_created_by_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index("ix_api_tokens_agent_id", "api_tokens", ["agent_id"])
    # Every agent's token, carried over under its agent's name.
    op.execute(
        "INSERT INTO api_tokens (agent_id, name, token_hash, created_at)"
        " SELECT id, name, token_hash, created_at FROM agents"
    )
    op.drop_constraint(op.f("uq_agents_token_hash"), "agents", type_="unique")
    op.drop_column("agents", "token_hash")

    op.create_table(
        "sessions",
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=True),
            server_default=sa.text("gen_random_uuid()"),
            nullable=False,
        ),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False, default=True),
        _timestamp("last_seen_at", nullable=False, default=True),
        _timestamp("expires_at", nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("method", sa.Text(), nullable=False),
        _timestamp("ended_at"),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("method IN ('password', 'oidc')", name=op.f("ck_sessions_method")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_sessions_agent_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
    )
    op.create_index(
        "ix_sessions_agent_id_live",
        "sessions",
        ["agent_id"],
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "password_links",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False, default=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _timestamp("expires_at", nullable=False),
        _timestamp("used_at"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_password_links_agent_id_agents")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["agents.id"], name=op.f("fk_password_links_created_by_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_links_token_hash")),
    )
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        _timestamp("failed_at", nullable=False, default=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_failures")),
    )
    op.create_index(
        "ix_sign_in_failures_email_failed_at", "sign_in_failures", ["email", "failed_at"]
    )
    op.create_table(
        "oidc_logins",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("browser_hash", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        _timestamp("expires_at", nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_oidc_logins")),
    )
    op.create_table(
        "auth_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        _timestamp("at", nullable=False, default=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["agents.id"], name=op.f("fk_auth_events_actor_id_agents")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["agents.id"], name=op.f("fk_auth_events_subject_id_agents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_events")),
    )
    op.create_index("ix_auth_events_at", "auth_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_auth_events_at", table_name="auth_events")
    op.drop_table("auth_events")
    op.drop_table("oidc_logins")
    op.drop_index("ix_sign_in_failures_email_failed_at", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    op.drop_table("password_links")
    op.drop_index("ix_sessions_agent_id_live", table_name="sessions")
    op.drop_table("sessions")
    # Each agent keeps its newest live token (people without one get a random, unknown hash:
    # they cannot sign in with a token, as before they could not sign in at all).
    op.add_column("agents", sa.Column("token_hash", sa.Text(), nullable=True))
    op.execute(
        "UPDATE agents a SET token_hash = coalesce("
        " (SELECT t.token_hash FROM api_tokens t WHERE t.agent_id = a.id AND t.revoked_at IS NULL"
        "   ORDER BY t.created_at DESC LIMIT 1),"
        " md5(random()::text) || md5(random()::text))"
    )
    op.alter_column("agents", "token_hash", nullable=False)
    op.create_unique_constraint(op.f("uq_agents_token_hash"), "agents", ["token_hash"])
    op.drop_index("ix_api_tokens_agent_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_constraint(op.f("ck_agents_allowed_queues"), "agents", type_="check")
    op.drop_constraint(op.f("ck_agents_role"), "agents", type_="check")
    op.execute("UPDATE agents SET role = 'supervisor' WHERE role = 'admin'")
    op.create_check_constraint(
        op.f("ck_agents_role"), "agents", "role IN ('agent', 'supervisor', 'scorer')"
    )
    op.drop_index("uq_agents_email", table_name="agents")
    op.drop_constraint(op.f("uq_agents_oidc_subject"), "agents", type_="unique")
    for column in ("updated_at", "oidc_subject", "password_hash", "allowed_queues"):
        op.drop_column("agents", column)
    op.drop_column("agents", "display_name")
    op.drop_column("agents", "email")
