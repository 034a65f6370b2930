"""webhook_events.user_id: the person an event is about, for access requests

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 00:00:00

An access request (SPEC 8.3) lists everything the service holds about a person, and the outbox
holds events about them (ids, times, outcomes) for ``WEBHOOK_RETENTION_DAYS``. ``cq_emit`` now
copies the payload's ``user_id`` into a column of its own, indexed where it is set, so the export
finds a person's events without reading the whole outbox; events already written get theirs
here. The new ``cq_emit`` is in migrations/sql/0014_events_name_people/up/; the downgrade puts
back 0013's (down/) and drops the column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations import sqlfiles

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = "0014_events_name_people"


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("user_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE webhook_events SET user_id = (data ->> 'user_id')::bigint WHERE data ? 'user_id'"
    )
    op.create_index(
        "ix_webhook_events_user_id",
        "webhook_events",
        ["user_id"],
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    for statement in sqlfiles.install_statements(f"{SQL}/up"):
        op.execute(statement)


def downgrade() -> None:
    for statement in sqlfiles.install_statements(f"{SQL}/down"):
        op.execute(statement)
    op.drop_index("ix_webhook_events_user_id", table_name="webhook_events")
    op.drop_column("webhook_events", "user_id")
