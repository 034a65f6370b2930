"""SPEC 3.1 evaluated by the replica in SQL: an accelerator for population, and only for it.

The rule is ``app.replica.classification.classify``; claims and outcomes use it, and so does
anything that reads one user. A population classifies hundreds of thousands of candidates, and
shipping each one's claims and requirements to Python as fact objects was most of its time. Here
the replica does the same work and sends one row per user, from which the same ``Verdict`` is
built. tests/replica/test_bulk.py generates more than 10,000 users covering every branch and
edge of the rule and proves both give identical verdicts, on PostgreSQL and on MariaDB; a change
to the rule must be made in both places, and that test is what says so.

Exactness, the reason the rule runs in Python in the first place:

* statuses compare case-insensitively as Python's ``str.lower()`` does. For ``pending``,
  ``completed`` and ``cancelled`` that is ASCII case folding (the only other characters Python
  lowers to ASCII are the Kelvin sign, to ``k``, and ``İ``, to ``i`` and a combining dot), so the
  SQL lowers ASCII only: PostgreSQL's ``lower()`` under the "C" collation, MySQL's over the value
  converted to ASCII (any other character becomes ``?``). A locale's ``lower()`` would fold
  ``PENDİNG`` to ``pending``; Python does not.
* requirement types and the reason text compare exactly: on MySQL as binary strings, since the
  default collations ignore case, accents and trailing spaces. A NULL reason is not the base one.
* the pending types are deduplicated and sorted in Python, never by a collation; on MySQL they
  travel hex-encoded, so that neither ``DISTINCT`` nor the list's separator depends on one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from app.db import pg_int_array
from app.replica.classification import (
    BASE_ID_DOCUMENT_REASON,
    EXCLUDED_REQUIREMENT_TYPES,
    Verdict,
)
from app.replica.reader import Replica
from app.timestamps import utc
from app.vocabulary import QueueType

_EXCLUDED = ", ".join(f"'{t}'" for t in sorted(EXCLUDED_REQUIREMENT_TYPES))
_BASE_REASON = f"'{BASE_ID_DOCUMENT_REASON}'"

# One row per user the replica knows: the rule's reason, the user's created_at, the oldest open
# claim, and the figures of the valid requirements (NULL unless the user is enabled and signed).
# Users the replica lacks return no row. Set-based, each part joined to the batch on its own: a
# LATERAL subquery per user, or a CTE shared by two parts, is what PostgreSQL plans worst without
# statistics (a freshly loaded replica), up to a scan of claim_requirements per user.
_POSTGRES = text(
    f"""
    WITH batch AS MATERIALIZED (
            SELECT u.id, u.is_enabled, u.current_signature_file_id, u.created_at
              FROM users u
             WHERE u.id = ANY(CAST(:ids AS bigint[]))),
         oldest_claim AS (
            SELECT DISTINCT ON (c.user_id) c.user_id, c.id
              FROM batch b
              JOIN claims c ON c.user_id = b.id
             WHERE b.is_enabled AND lower(c.status COLLATE "C") <> 'cancelled'
             ORDER BY c.user_id, c.created_at, c.id),
         figures AS (
            SELECT v.user_id,
                   count(*) AS total,
                   count(*) FILTER (WHERE v.pending) AS pending,
                   count(*) FILTER (WHERE v.completed) AS completed,
                   array_agg(v.type) FILTER (WHERE v.pending) AS types,
                   (array_agg(v.claim_id ORDER BY v.created_at, v.id)
                      FILTER (WHERE v.pending))[1] AS oldest_claim_id,
                   min(v.created_at) FILTER (WHERE v.pending) AS oldest_at
              FROM (SELECT c.user_id, r.id, r.claim_id, r.type, r.created_at,
                           lower(r.status COLLATE "C") = 'pending' AS pending,
                           lower(r.status COLLATE "C") = 'completed' AS completed
                      FROM batch b
                      JOIN claims c ON c.user_id = b.id
                      JOIN claim_requirements r ON r.claim_id = c.id
                     WHERE b.is_enabled AND b.current_signature_file_id IS NOT NULL
                       AND lower(c.status COLLATE "C") <> 'cancelled'
                       AND r.type NOT IN ({_EXCLUDED})
                       AND (r.type <> 'id_document'
                            OR r.claim_requirement_reason IS DISTINCT FROM {_BASE_REASON})
                   ) v
             GROUP BY v.user_id)
    SELECT b.id AS user_id,
           CASE WHEN NOT b.is_enabled THEN 'user_disabled'
                WHEN oc.id IS NULL THEN 'no_open_claim'
                WHEN b.current_signature_file_id IS NULL THEN 'missing_signature'
                WHEN f.pending > 0 THEN 'pending_requirements'
                ELSE 'nothing_outstanding' END AS reason,
           b.created_at, oc.id, f.types, f.total, f.pending, f.completed,
           f.oldest_claim_id, f.oldest_at
      FROM batch b
      LEFT JOIN oldest_claim oc ON oc.user_id = b.id
      LEFT JOIN figures f ON f.user_id = b.id
    """
)


def _mysql_lower(column: str) -> str:
    return f"CAST(LOWER(CONVERT({column} USING ascii)) AS BINARY)"


_MYSQL_PENDING = f"{_mysql_lower('r.status')} = 'pending'"
# The same, grouped per user over claims and requirements joined by their indexes: MariaDB
# computes a per-part derived table over every claim before joining it to the batch. A claim
# appears once per requirement joined to it, which leaves the first of its ordered ids, the only
# thing taken from it, unchanged; the first of an ordered GROUP_CONCAT would survive even a cut.
_MYSQL = text(
    f"""
    SELECT u.id AS user_id,
           CASE WHEN NOT u.is_enabled THEN 'user_disabled'
                WHEN COUNT(c.id) = 0 THEN 'no_open_claim'
                WHEN u.current_signature_file_id IS NULL THEN 'missing_signature'
                WHEN SUM({_MYSQL_PENDING}) > 0 THEN 'pending_requirements'
                ELSE 'nothing_outstanding' END AS reason,
           u.created_at,
           SUBSTRING_INDEX(GROUP_CONCAT(c.id ORDER BY c.created_at, c.id), ',', 1),
           GROUP_CONCAT(DISTINCT CASE WHEN {_MYSQL_PENDING}
                                      THEN HEX(CONVERT(r.type USING utf8mb4)) END),
           COUNT(r.id),
           SUM({_MYSQL_PENDING}),
           SUM({_mysql_lower("r.status")} = 'completed'),
           SUBSTRING_INDEX(GROUP_CONCAT(CASE WHEN {_MYSQL_PENDING} THEN r.claim_id END
                                        ORDER BY r.created_at, r.id), ',', 1),
           MIN(CASE WHEN {_MYSQL_PENDING} THEN r.created_at END)
      FROM users u
      LEFT JOIN claims c
             ON c.user_id = u.id AND {_mysql_lower("c.status")} <> 'cancelled'
      LEFT JOIN claim_requirements r
             ON r.claim_id = c.id
            AND u.is_enabled AND u.current_signature_file_id IS NOT NULL
            AND CAST(r.type AS BINARY) NOT IN ({_EXCLUDED})
            AND NOT (CAST(r.type AS BINARY) = 'id_document'
                     AND CAST(r.claim_requirement_reason AS BINARY) <=> {_BASE_REASON})
     WHERE u.id IN :ids
     GROUP BY u.id, u.is_enabled, u.current_signature_file_id, u.created_at
    """
).bindparams(bindparam("ids", expanding=True))

# Intake needs the reason alone: the same statement, read for two columns. PostgreSQL then plans
# without the unused aggregates, and neither driver decodes dates and lists nobody reads.
_POSTGRES_BRIEF = text(f"SELECT user_id, reason FROM ({_POSTGRES.text}) AS verdicts")
_MYSQL_BRIEF = text(f"SELECT user_id, reason FROM ({_MYSQL.text}) AS verdicts").bindparams(
    bindparam("ids", expanding=True)
)

# GROUP_CONCAT cuts its result at group_concat_max_len (1,024 bytes by default) with only a
# warning; a user's pending types must never be cut, so the session allows what a packet does.
_MYSQL_SESSION = "SET SESSION group_concat_max_len = @@max_allowed_packet"


def classify_in_sql(
    replica: Replica,
    user_ids: Sequence[int],
    *,
    details: bool = True,
    batch_size: int | None = None,
) -> dict[int, Verdict]:
    """The verdict of every id asked for, in the order asked, one statement per batch of
    ``batch_size`` (default ``replica.batch_size``): the same as ``replica.classify(user_ids)``,
    for bulk work only (population, intake).

    ``details=False`` leaves out the entry fields (claim, signature and requirement figures):
    intake needs only the queue type, and building the fields costs the client about as much as
    the statement costs the replica."""
    ids = list(dict.fromkeys(user_ids))
    size = batch_size or replica.batch_size
    verdicts: dict[int, Verdict] = {}
    for start in range(0, len(ids), size):
        verdicts.update(_classify_batch(replica, ids[start : start + size], details))
    return verdicts


_QUEUE_OF_REASON = {
    "missing_signature": QueueType.UNSIGNED_USERS,
    "pending_requirements": QueueType.OUTSTANDING_REQUESTS,
}


def _classify_batch(replica: Replica, ids: list[int], details: bool) -> dict[int, Verdict]:
    postgres = replica.engine.dialect.name == "postgresql"

    params: dict[str, Any] = {"ids": pg_int_array(ids) if postgres else ids}
    if postgres:
        statement = _POSTGRES if details else _POSTGRES_BRIEF
    else:
        statement = _MYSQL if details else _MYSQL_BRIEF

    def work(conn: Connection) -> Sequence[Any]:
        if not postgres:
            conn.exec_driver_sql(_MYSQL_SESSION)
        return conn.execute(statement, params).all()

    rows = replica.read("classify", work)
    if details:
        found = {row[0]: _verdict(postgres, *row[1:]) for row in rows}
    else:
        found = {row[0]: Verdict(_QUEUE_OF_REASON.get(row[1]), row[1]) for row in rows}
    return {uid: found.get(uid) or Verdict(None, "not_in_replica") for uid in ids}


def _verdict(
    postgres: bool,
    reason: str,
    user_created: datetime,
    claim_id: Any,
    types: Any,
    total: int,
    pending: Any,
    completed: Any,
    oldest_claim_id: Any,
    oldest_at: datetime,
) -> Verdict:
    if reason == "missing_signature":
        return Verdict(
            QueueType.UNSIGNED_USERS,
            reason,
            {
                "claim_id": int(claim_id),
                "signature_missing_since": utc(user_created),
                "signature_type": "initial",
            },
        )
    if reason != "pending_requirements":
        return Verdict(None, reason)
    if not postgres:
        types = [bytes.fromhex(t).decode() for t in types.split(",")]
    return Verdict(
        QueueType.OUTSTANDING_REQUESTS,
        reason,
        {
            "claim_id": int(oldest_claim_id),
            "requirement_types": sorted(set(types)),
            "total_requirements": int(total),
            "pending_requirements": int(pending),
            "completed_requirements": int(completed),
            "oldest_requirement_date": utc(oldest_at),
        },
    )
