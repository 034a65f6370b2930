"""The claims platform's tables, read-only. Never part of the service's migrations.

Defined with SQLAlchemy Core so the same queries compile for PostgreSQL and MySQL/MariaDB; the demo
command and the tests use ``replica_metadata.create_all`` to make them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, MetaData, String, Table, Text

replica_metadata = MetaData()

users = Table(
    "users",
    replica_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("is_enabled", Boolean, nullable=False),
    Column("current_signature_file_id", BigInteger, nullable=True),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("phone_number", Text),
    Column("email_address", Text),
    Column("status", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

claims = Table(
    "claims",
    replica_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", BigInteger, nullable=False),
    Column("status", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_claims_user_id", "user_id"),
)

claim_requirements = Table(
    "claim_requirements",
    replica_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("claim_id", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("status", String(64), nullable=False),
    Column("claim_requirement_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_claim_requirements_claim_id", "claim_id"),
)
