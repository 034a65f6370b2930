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

The queues' frozen facts (tables, swap lock ids, detail columns) and the lock namespaces are
0007's, read from that migration, so the two can never disagree.
"""

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _claim_functions() -> ModuleType:
    """Migration 0007, whose queue facts and function texts this one builds on."""
    path = Path(__file__).with_name("0007_claim_functions.py")
    spec = importlib.util.spec_from_file_location("claim_functions_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0007 = _claim_functions()
QUEUES: dict[str, tuple[str, int, tuple[str, ...]]] = _0007.QUEUES
USER_NS: int = _0007.USER_NS


def _by_queue(
    queue_param: str, branch: Callable[[str, str, tuple[str, ...]], str], indent: int
) -> str:
    """``IF <queue> = 'a' THEN <branch for a> ELSIF ... ELSE RAISE ... END IF;``, its first line
    where the template puts it and the rest at ``indent``; ``branch(queue, table, detail
    columns)`` gives one queue's statements."""
    pad = " " * indent
    lines = []
    for i, (queue, (table, _lock_id, details)) in enumerate(QUEUES.items()):
        keyword = "IF" if i == 0 else "ELSIF"
        lines.append(f"{keyword} {queue_param} = '{queue}' THEN")
        lines += [f"    {line}" for line in branch(queue, table, details).splitlines()]
    # No '%' placeholder: offline SQL (alembic --sql) would double it.
    lines += [
        "ELSE",
        f"    RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || {queue_param};",
    ]
    lines.append("END IF;")
    return lines[0] + "".join(f"\n{pad}{line}" for line in lines[1:])


def _take(queue: str, table: str, details: tuple[str, ...]) -> str:
    detail_json = ", ".join(f"'{c}', e.{c}" for c in details)
    return f"""PERFORM cq_swap_lock_shared_{queue}();
SELECT e.id AS item_id, e.user_id, e.claim_id, e.priority_score, e.queue_position,
       e.queue_reason, jsonb_build_object({detail_json}) AS details
  INTO v_item
  FROM {table} e
 WHERE e.status = 'pending'
 ORDER BY e.queue_position, e.id
 LIMIT 1
   FOR UPDATE SKIP LOCKED;"""


def _functions() -> list[str]:
    statements: list[str] = []

    # The start of one claim attempt: the source row for agent p_agent, locked, with what the
    # score row says now (read, not locked: the hand-out re-checks it under its lock). With
    # p_open (the request's first attempt) it first expires lapsed leases (when there are any;
    # ``swept`` says how many per queue type) and returns the agent's live assignment, if any, as
    # source 'held'. Source NULL: nothing left to take.
    #
    # Direct mode walks the candidates in serving order and takes the first one whose per-user
    # advisory lock it gets (pg_try_advisory_xact_lock never waits), skipping users the request
    # already rejected (p_tried) and users handed out since the walk's snapshot was taken. A
    # queue entry whose user is at an attempt cap is reported as 'attempt_cap' (the caller marks
    # it skipped), before the replica is read.
    #
    # Whatever the source, a due callback comes first (SPEC 7.2, cq_take_callback): the attempt
    # then returns source 'callback' with the callback's id, in the same round trip.
    statements.append(
        f"""
CREATE OR REPLACE FUNCTION cq_claim(p_agent integer, p_queue text, p_source text, p_open boolean,
                         p_tried bigint[], p_cooling_minutes integer, p_sweep_limit integer,
                         p_max_day integer, p_max_week integer, p_personal_minutes integer)
RETURNS TABLE (source text, item_id uuid, user_id bigint, claim_id bigint,
               priority_score integer, queue_position integer, queue_reason text,
               details jsonb, problem text, swept jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_held uuid;
    v_item record;
    v_lead record;
    v_swept jsonb;
    v_callback record;
BEGIN
    IF p_open THEN
        IF EXISTS (SELECT 1 FROM assignments
                    WHERE status = 'active' AND lease_expires_at <= now()) THEN
            v_swept := cq_sweep(p_sweep_limit);
        END IF;
        SELECT a.id INTO v_held FROM assignments a
         WHERE a.agent_id = p_agent AND a.status = 'active' AND a.lease_expires_at > now();
        IF FOUND THEN
            RETURN QUERY SELECT 'held'::text, v_held, NULL::bigint, NULL::bigint, NULL::integer,
                                NULL::integer, NULL::text, NULL::jsonb, NULL::text, v_swept;
            RETURN;
        END IF;
    END IF;

    -- Every callback cq_take_callback may serve is scheduled, of this queue and due: one probe
    -- of ix_callbacks_scheduled_queue_due says whether there is any, and only then does the
    -- walk run.
    IF EXISTS (SELECT 1 FROM callbacks c
                WHERE c.status = 'scheduled' AND c.queue_type = p_queue
                  AND c.due_at <= now()) THEN
        SELECT * INTO v_callback
          FROM cq_take_callback(p_agent, p_queue, p_tried, p_personal_minutes, p_max_day,
                                p_max_week);
        IF v_callback.item_id IS NOT NULL THEN
            RETURN QUERY SELECT 'callback'::text, v_callback.item_id, v_callback.user_id,
                                NULL::bigint, v_callback.current_score, NULL::integer,
                                NULL::text, NULL::jsonb, NULL::text, v_swept;
            RETURN;
        END IF;
    END IF;

    IF p_source = 'queue' THEN
        -- The queue's swap lock, shared, then the first pending entry in serving order, locked:
        -- the lock first, so a claim that meets a swap waits for it, and the SELECT that
        -- follows (a new snapshot) sees the new entries instead of skipping every row the swap
        -- holds and answering "empty". FOR UPDATE SKIP LOCKED on the partial index
        -- (queue_position, id) WHERE status = 'pending': concurrent claims each take a
        -- different entry without queueing behind one another.
        {_by_queue("p_queue", _take, 8)}
        IF v_item.item_id IS NULL THEN
            RETURN QUERY SELECT NULL::text, NULL::uuid, NULL::bigint, NULL::bigint,
                                NULL::integer, NULL::integer, NULL::text, NULL::jsonb,
                                NULL::text, v_swept;
            RETURN;
        END IF;
        RETURN QUERY
            SELECT 'queue'::text, v_item.item_id, v_item.user_id, v_item.claim_id,
                   v_item.priority_score, v_item.queue_position, v_item.queue_reason,
                   v_item.details,
                   coalesce(
                       cq_score_problem(s.is_active, s.current_queue_type, s.next_call_after,
                                        p_queue),
                       CASE WHEN callqueue_attempt_cap(v_item.user_id, p_max_day, p_max_week)
                                 IS NOT NULL THEN 'attempt_cap' END),
                   v_swept
              FROM (SELECT 1) one
              LEFT JOIN user_call_scores s ON s.user_id = v_item.user_id;
        RETURN;
    END IF;

    IF p_source = 'direct' THEN
        FOR v_lead IN
            SELECT c.user_id, c.current_score
              FROM cq_candidates(p_queue, p_cooling_minutes, false, p_max_day, p_max_week) c
             WHERE NOT c.user_id = ANY(p_tried)
        LOOP
            CONTINUE WHEN NOT pg_try_advisory_xact_lock({USER_NS}, hashint8(v_lead.user_id));
            -- The walk's snapshot predates the lock: skip a user handed out since.
            CONTINUE WHEN EXISTS (SELECT 1 FROM assignments a
                                   WHERE a.user_id = v_lead.user_id AND a.status = 'active');
            RETURN QUERY SELECT 'direct'::text, NULL::uuid, v_lead.user_id, NULL::bigint,
                                v_lead.current_score, NULL::integer, NULL::text, NULL::jsonb,
                                NULL::text, v_swept;
            RETURN;
        END LOOP;
        RETURN QUERY SELECT NULL::text, NULL::uuid, NULL::bigint, NULL::bigint, NULL::integer,
                            NULL::integer, NULL::text, NULL::jsonb, NULL::text, v_swept;
        RETURN;
    END IF;

    RAISE EXCEPTION USING MESSAGE = 'unknown source ' || p_source;
END $$
"""
    )

    return statements


REPLACED = ("cq_claim",)


def upgrade() -> None:
    for statement in _functions():
        op.execute(statement)
    for queue in QUEUES:
        op.execute(f"DROP FUNCTION cq_take_{queue}()")


def downgrade() -> None:
    """0007's text of cq_claim, and the per-queue takes this one dropped."""
    for statement in _0007._functions():
        name = statement.split("(", 1)[0].split()[-1]
        if name in REPLACED:
            op.execute(statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
        elif name.startswith("cq_take_") and name != "cq_take_callback":
            op.execute(statement)
