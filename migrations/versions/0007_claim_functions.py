"""claim path as PL/pgSQL functions: one round trip per step, lock order written out

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:00:00

Why functions: a claim's steps (the swap lock, the source row, the ledger row, the score row) must
be taken in one order everywhere, and each step is a round trip when written as separate
statements. A PL/pgSQL function runs its statements in the order they are written, each with a
fresh snapshot (READ COMMITTED), in one round trip: the order is readable in one place and never
depends on how the planner evaluates a single query. This is the pattern of pgmq's and
graphile-worker's claim functions.

Why PL/pgSQL for anything with a statement the planner cannot inline (an UPDATE, a FOR UPDATE,
an aggregate): PostgreSQL before 18 plans such a SQL-language function afresh every time a
statement calls it (about 0.1 ms here), while PL/pgSQL keeps its plans for the session. The
SQL-language functions left are either inlined into their callers (a lock call, a CASE, the
candidates' SELECT) or off the hot path.

Lock order, everywhere (claims, completions, releases, sweeps, swaps):

    swap lock (per queue)  ->  source row  ->  ledger row  ->  score row

* swap lock: ``pg_advisory_xact_lock(1667329132, n)``, taken shared by every transaction that writes
  a queue's entries and exclusively by the population's swap of that queue, so no entry changes
  under a swap.
* source row: the queue entry (``FOR UPDATE``), the callback (``callbacks``, SPEC 7.2), or in
  direct mode a per-user advisory lock (``pg_try_advisory_xact_lock(1970496882,
  hashint8(user_id))``), which no transaction ever waits for: it only keeps two direct-mode
  claims from validating the same lead at once. A completion takes the entry, then the person's
  open callback; a sweep takes both with SKIP LOCKED, so it never waits for either.
* ledger row: the assignment (``assignments``), inserted or locked.
* score row: ``user_call_scores``, locked after the ledger row. A hand-out locks it (FOR SHARE)
  and re-checks it in the same transaction as its ledger insert; an outcome locks it (FOR UPDATE)
  before deciding whether a lapsed assignment may still be completed. So the check and the
  hand-out are one decision, and a late outcome and a new hand-out of the same person are
  serialised on the one row both must take.

The two queue tables differ only in their names and detail columns: the per-queue functions below
are written once, as a template, and instantiated for each table.

Changing a function later means a new migration that replaces it (CREATE OR REPLACE).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# queue type -> (table, swap lock id, detail columns). Frozen here on purpose: a migration must not
# follow later changes to app/queues/kinds.py.
QUEUES = {
    "unsigned_users": (
        "unsigned_users_queue",
        1,
        ("signature_missing_since", "signature_type"),
    ),
    "outstanding_requests": (
        "outstanding_requests_queue",
        2,
        (
            "requirement_types",
            "total_requirements",
            "pending_requirements",
            "completed_requirements",
            "oldest_requirement_date",
        ),
    ),
}
SWAP_NS = 1667329132  # 'call'
USER_NS = 1970496882  # 'user'


def _dispatch(queue_param: str, call: str) -> str:
    """``IF <queue> = 'a' THEN <call for a> ELSIF ... ELSE RAISE``; ``call`` has {q}."""
    branches = []
    for i, queue in enumerate(QUEUES):
        keyword = "IF" if i == 0 else "ELSIF"
        branches.append(f"{keyword} {queue_param} = '{queue}' THEN {call.format(q=queue)};")
    # No '%' placeholder: offline SQL (alembic --sql) would double it.
    branches.append(f"ELSE RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || {queue_param};")
    return "\n    ".join(branches) + "\n    END IF;"


def _per_queue(queue: str, table: str, lock_id: int, details: tuple[str, ...]) -> list[str]:
    detail_json = ", ".join(f"'{c}', e.{c}" for c in details)
    return [
        # The swap lock of one queue, shared. A function so the lock ids live in one place.
        f"""
CREATE FUNCTION cq_swap_lock_shared_{queue}() RETURNS void
LANGUAGE sql VOLATILE AS $$ SELECT pg_advisory_xact_lock_shared({SWAP_NS}, {lock_id}) $$
""",
        # The first pending entry in serving order, locked. The swap lock comes first: a claim that
        # meets a swap waits for it, and the SELECT that follows (a new snapshot) sees the new
        # snapshot instead of skipping every row the swap holds and answering "empty".
        # FOR UPDATE SKIP LOCKED on the partial index (queue_position, id) WHERE status = 'pending':
        # concurrent claims each take a different entry without queueing behind one another.
        f"""
CREATE FUNCTION cq_take_{queue}()
RETURNS TABLE (item_id uuid, user_id bigint, claim_id bigint, priority_score integer,
               queue_position integer, queue_reason text, details jsonb)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM cq_swap_lock_shared_{queue}();
    RETURN QUERY
        SELECT e.id, e.user_id, e.claim_id, e.priority_score, e.queue_position, e.queue_reason,
               jsonb_build_object({detail_json})
          FROM {table} e
         WHERE e.status = 'pending'
         ORDER BY e.queue_position, e.id
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
END $$
""",
        # Lock one entry (an action on an assignment that has one). The caller holds the swap lock.
        f"""
CREATE FUNCTION cq_lock_entry_{queue}(p_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM {table} WHERE id = p_id FOR UPDATE;
END $$
""",
        # Move one entry to a status, from one of the statuses it may be in. Assigning it records
        # the hand-out (agent p_agent at p_at, the ledger row's assigned_at); moving it on from
        # 'assigned' with p_at given changes it only while it is still that hand-out's.
        f"""
CREATE FUNCTION cq_set_entry_{queue}(p_id uuid, p_status text, p_from text[], p_agent integer,
                                     p_reason text, p_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE {table}
       SET status = p_status,
           assigned_to_agent = CASE p_status WHEN 'assigned' THEN p_agent
                                             WHEN 'completed' THEN assigned_to_agent END,
           assigned_at = CASE p_status WHEN 'assigned' THEN p_at
                                       WHEN 'completed' THEN assigned_at END,
           invalid_reason = CASE WHEN p_status IN ('invalid', 'skipped') THEN p_reason
                                 ELSE invalid_reason END,
           updated_at = now()
     WHERE id = p_id AND status = ANY(p_from)
       AND (p_status = 'assigned' OR p_at IS NULL
            OR (assigned_to_agent = p_agent AND assigned_at = p_at));
    RETURN FOUND;
END $$
""",
        # Of the given entries, those this transaction could lock (SKIP LOCKED), and those that
        # exist but are locked by another transaction (which will decide about them).
        f"""
CREATE FUNCTION cq_lock_entries_{queue}(p_ids uuid[], OUT locked uuid[], OUT busy uuid[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    locked := ARRAY(SELECT e.id FROM {table} e WHERE e.id = ANY(p_ids)
                     ORDER BY e.id FOR UPDATE SKIP LOCKED);
    busy := ARRAY(SELECT e.id FROM {table} e WHERE e.id = ANY(p_ids)
                   AND NOT e.id = ANY(locked));
END $$
""",
    ]


SET_ENTRY_CALL = "v_done := cq_set_entry_{q}(p_id, p_status, p_from, p_agent, p_reason, p_at)"


def _functions() -> list[str]:
    statements: list[str] = []
    for queue, (table, lock_id, details) in QUEUES.items():
        statements += _per_queue(queue, table, lock_id, details)

    statements.append(
        # The queue's swap lock, shared, by queue type.
        f"""
CREATE FUNCTION cq_swap_lock_shared(p_queue text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    {_dispatch("p_queue", "PERFORM cq_swap_lock_shared_{q}()")}
END $$
"""
    )
    statements.append(
        f"""
CREATE FUNCTION cq_lock_entry(p_queue text, p_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    {_dispatch("p_queue", "PERFORM cq_lock_entry_{q}(p_id)")}
END $$
"""
    )
    statements.append(
        f"""
CREATE FUNCTION cq_set_entry(p_queue text, p_id uuid, p_status text, p_from text[],
                             p_agent integer, p_reason text, p_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_done boolean;
BEGIN
    {_dispatch("p_queue", SET_ENTRY_CALL)}
    RETURN coalesce(v_done, false);
END $$
"""
    )

    # The leads of a queue type that may be called now (SPEC 3.2, below the attempt caps of
    # SPEC 7.3, without an open callback of SPEC 7.2): what a population walks and what direct
    # mode serves from, in serving order (score, newest first, user id). A SQL function the
    # planner inlines into the calling query, so the ORDER BY still walks the partial index
    # ix_user_call_scores_population and a population can stream it.
    #
    # A user with an active assignment is never a candidate. p_live_leases_only counts only
    # assignments whose lease still runs: a population sweeps lapsed ones before its swap, so
    # their users belong in the new snapshot; direct mode would collide with the lapsed
    # assignment, so it skips them until a sweep.
    statements.append(
        """
CREATE FUNCTION cq_candidates(p_queue text, p_cooling_minutes integer, p_live_leases_only boolean,
                              p_max_day integer, p_max_week integer)
RETURNS TABLE (user_id bigint, current_score integer, created_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.user_id, s.current_score, s.created_at
      FROM user_call_scores s
     WHERE s.current_queue_type = p_queue
       AND s.is_active
       AND (s.next_call_after IS NULL OR s.next_call_after <= now())
       AND s.created_at <= now() - make_interval(mins => p_cooling_minutes)
       AND NOT EXISTS (SELECT 1 FROM assignments a
                        WHERE a.user_id = s.user_id AND a.status = 'active'
                          AND (NOT p_live_leases_only OR a.lease_expires_at > now()))
       -- A person with an open callback comes back through the callback only (SPEC 7.2).
       AND NOT EXISTS (SELECT 1 FROM callbacks c
                        WHERE c.user_id = s.user_id AND c.status IN ('scheduled', 'assigned'))
       AND callqueue_attempt_cap(s.user_id, p_max_day, p_max_week) IS NULL
     ORDER BY s.current_score, s.created_at DESC, s.user_id
$$
"""
    )

    # Why a score row may not be handed out for queue p_queue now (NULL when it may).
    statements.append(
        """
CREATE FUNCTION cq_score_problem(p_is_active boolean, p_queue_type text,
                                 p_next_call_after timestamptz, p_queue text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_is_active IS NULL THEN 'score_row_missing'
                WHEN NOT p_is_active THEN 'inactive'
                WHEN p_queue_type IS DISTINCT FROM p_queue THEN 'queue_type_changed'
                WHEN p_next_call_after > now() THEN 'not_due' END
$$
"""
    )

    # Changing lead types, always with their audit rows (SPEC 3.1). The guard on the old value
    # means a concurrent outcome or another reclassification is never overwritten with a stale
    # verdict. Returns how many users moved.
    statements.append(
        """
CREATE FUNCTION cq_reclassify(p_users bigint[], p_to text[], p_reasons text[], p_from text,
                              p_source text, p_agent integer, p_run uuid)
RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH changes AS (
        SELECT * FROM unnest(p_users, p_to, p_reasons) AS c(user_id, to_type, reason)
    ), moved AS (
        UPDATE user_call_scores s
           SET current_queue_type = c.to_type, last_queue_check = now(), updated_at = now()
          FROM changes c
         WHERE s.user_id = c.user_id
           AND s.current_queue_type IS NOT DISTINCT FROM p_from
           AND s.current_queue_type IS DISTINCT FROM c.to_type
        RETURNING s.user_id, c.to_type, c.reason
    ), audited AS (
        INSERT INTO queue_transitions
               (user_id, from_queue_type, to_queue_type, reason, source, agent_id, run_id)
        SELECT user_id, p_from, to_type, reason, p_source, p_agent, p_run FROM moved
        RETURNING 1
    )
    SELECT count(*)::integer FROM audited
$$
"""
    )

    # Expire lapsed leases: the assignment becomes 'expired', its entry 'pending' again. Returns
    # how many per queue type, as a JSON object (for the lease-expiry metric).
    # Every queue's swap lock first (shared, in queue order): a sweep writes entries. Then the
    # entries of lapsed assignments and the lapsed ledger rows, each with SKIP LOCKED: when many
    # claims sweep at once, each expires what it could lock and none waits for another; what one
    # skips, the next sweep takes. An assignment whose entry another transaction holds is left
    # for later (that transaction may be completing it).
    lock_all = "\n    ".join(f"PERFORM cq_swap_lock_shared_{q}();" for q in QUEUES)
    lock_entries = "\n    ".join(
        f"SELECT * INTO v_lock FROM cq_lock_entries_{q}(v_entries);"
        f"\n    v_busy := v_busy || v_lock.busy;"
        for q in QUEUES
    )
    back = "\n    ".join(
        f"PERFORM cq_set_entry_{q}(r.entry_id, 'pending', ARRAY['assigned'], NULL, NULL, NULL)"
        f"\n       FROM unnest(v_types, v_back) AS r(queue_type, entry_id)"
        f"\n      WHERE r.queue_type = '{q}' AND r.entry_id IS NOT NULL;"
        for q in QUEUES
    )
    statements.append(
        f"""
CREATE FUNCTION cq_sweep(p_limit integer) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_overdue uuid[];
    v_entries uuid[];
    v_busy uuid[] := '{{}}';
    v_lock record;
    v_counts jsonb;
    v_types text[];
    v_back uuid[];
    v_callbacks uuid[];
    v_locked_callbacks uuid[];
    v_expired_callbacks uuid[];
    v_expired_hand_outs uuid[];
BEGIN
    {lock_all}
    v_overdue := ARRAY(SELECT id FROM assignments
                        WHERE status = 'active' AND lease_expires_at <= now()
                        ORDER BY lease_expires_at LIMIT p_limit);
    IF cardinality(v_overdue) = 0 THEN
        RETURN '{{}}';
    END IF;
    v_entries := ARRAY(SELECT queue_entry_id FROM assignments
                        WHERE id = ANY(v_overdue) AND queue_entry_id IS NOT NULL);
    {lock_entries}
    -- The callbacks being served, locked like the entries: one another transaction holds (a
    -- completion, a release, a supervisor) keeps its assignment for a later sweep.
    v_callbacks := ARRAY(SELECT callback_id FROM assignments
                          WHERE id = ANY(v_overdue) AND callback_id IS NOT NULL);
    v_locked_callbacks := ARRAY(SELECT c.id FROM callbacks c WHERE c.id = ANY(v_callbacks)
                                 ORDER BY c.id FOR UPDATE SKIP LOCKED);
    WITH lapsed AS (
        SELECT id FROM assignments
         WHERE id = ANY(v_overdue)
           AND (queue_entry_id IS NULL OR NOT queue_entry_id = ANY(v_busy))
           AND (callback_id IS NULL OR callback_id = ANY(v_locked_callbacks))
         ORDER BY id
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE assignments a
           SET status = 'expired', finished_at = clock_timestamp(), updated_at = clock_timestamp()
          FROM lapsed
         WHERE a.id = lapsed.id AND a.status = 'active' AND a.lease_expires_at <= now()
        RETURNING a.id, a.queue_type, a.queue_entry_id, a.callback_id
    )
    SELECT array_agg(queue_type), array_agg(queue_entry_id),
           array_agg(callback_id) FILTER (WHERE callback_id IS NOT NULL),
           array_agg(id) FILTER (WHERE callback_id IS NOT NULL)
      INTO v_types, v_back, v_expired_callbacks, v_expired_hand_outs FROM expired;
    {back}
    -- A callback whose hand-out lapsed is due again (SPEC 7.2); its due time stays.
    UPDATE callbacks c
       SET status = 'scheduled', updated_at = now()
      FROM unnest(v_expired_callbacks, v_expired_hand_outs) AS x(callback_id, assignment_id)
     WHERE c.id = x.callback_id AND c.assignment_id = x.assignment_id AND c.status = 'assigned';
    SELECT coalesce(jsonb_object_agg(t, n), '{{}}') INTO v_counts
      FROM (SELECT t, count(*) AS n FROM unnest(v_types) AS t GROUP BY t) AS per_queue;
    RETURN v_counts;
END $$
"""
    )

    # Add numbers (keyed hashes, app.rules.suppression) to the do-not-call list, each new one
    # audited; returns how many were new. One definition for the API, the import and the
    # do_not_contact outcome (cq_complete).
    statements.append(
        """
CREATE FUNCTION cq_suppress(p_hashes text[], p_source text, p_agent integer)
RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH added AS (
        INSERT INTO suppressed_numbers (phone_hash, source, added_by)
        SELECT h, p_source, p_agent FROM unnest(p_hashes) AS h
        ON CONFLICT (phone_hash) DO NOTHING
        RETURNING phone_hash
    ), audited AS (
        INSERT INTO suppression_changes (action, phone_hash, source, agent_id)
        SELECT 'add', phone_hash, p_source, p_agent FROM added
        RETURNING 1
    )
    SELECT count(*)::integer FROM audited
$$
"""
    )

    # Cancel an open callback with its reason (SPEC 7.2); false when it was no longer open.
    statements.append(
        """
CREATE FUNCTION cq_cancel_callback(p_id uuid, p_reason text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE callbacks
       SET status = 'cancelled', cancel_reason = p_reason, finished_at = clock_timestamp(),
           updated_at = now()
     WHERE id = p_id AND status IN ('scheduled', 'assigned');
    RETURN FOUND;
END $$
"""
    )

    # Record a source that failed its checks, so the next attempt moves on; and, when the
    # replica placed the user elsewhere, move the user (with the audit row). A queue entry
    # becomes p_status ('invalid', or 'skipped' for an attempt cap) with the reason. A callback
    # follows its person to the queue they belong to now, waits while someone else holds them,
    # and is otherwise cancelled with the reason (SPEC 7.2). Every source leaves a row in
    # entry_invalidations, which outlives refreshes.
    statements.append(
        """
CREATE FUNCTION cq_invalidate(p_agent integer, p_queue text, p_source text, p_item uuid,
                              p_user bigint, p_status text, p_reason text,
                              p_reclassify boolean, p_to text, p_to_reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_source = 'queue' THEN
        PERFORM cq_set_entry(p_queue, p_item, p_status, ARRAY['pending'], p_agent, p_reason,
                             NULL);
    ELSIF p_source = 'callback' AND p_reason <> 'already_assigned' THEN
        IF p_reclassify AND p_to IS NOT NULL THEN
            UPDATE callbacks SET queue_type = p_to, updated_at = now()
             WHERE id = p_item AND status = 'scheduled';
        ELSIF p_reason = 'queue_type_changed' THEN
            UPDATE callbacks c SET queue_type = s.current_queue_type, updated_at = now()
              FROM user_call_scores s
             WHERE c.id = p_item AND c.status = 'scheduled' AND s.user_id = c.user_id
               AND s.current_queue_type IS NOT NULL;
            IF NOT FOUND THEN
                PERFORM cq_cancel_callback(p_item, 'no_queue');
            END IF;
        ELSE
            PERFORM cq_cancel_callback(p_item, CASE WHEN p_reclassify THEN 'no_queue'
                                                    ELSE p_reason END);
        END IF;
    END IF;
    INSERT INTO entry_invalidations (queue_type, source, entry_id, user_id, reason, agent_id)
    VALUES (p_queue, p_source, CASE WHEN p_source = 'queue' THEN p_item END, p_user, p_reason,
            p_agent);
    IF p_reclassify THEN
        PERFORM cq_reclassify(ARRAY[p_user], ARRAY[p_to], ARRAY[p_to_reason], p_queue, 'claim',
                              p_agent, NULL);
    END IF;
END $$
"""
    )

    # The first due callback agent p_agent may serve from queue p_queue, locked (FOR UPDATE SKIP
    # LOCKED, like an entry), or no row (SPEC 7.2). In serving order, each step an index range:
    #   1. the agent's own, oldest due_at first (ix_callbacks_scheduled_owner_due);
    #   2. anyone's whose owner's personal window (p_personal_minutes after due_at) has passed,
    #      oldest first (ix_callbacks_scheduled_queue_due, bounded by now() - the window);
    #   3. those of deactivated owners still inside the window (the owner index, per owner).
    # Every callback of step 2 was due before any of step 3, so the order is oldest first across
    # both. A callback whose person moved to the other queue follows them there; one whose person
    # is gone, deactivated or in no queue is cancelled with that reason, and so is one at the
    # weekly cap (a callback is exempt from the daily one). Each of those changes its row, so the
    # walk goes on to the next.
    statements.append(
        """
CREATE FUNCTION cq_take_callback(p_agent integer, p_queue text, p_tried bigint[],
                                 p_personal_minutes integer, p_max_day integer,
                                 p_max_week integer)
RETURNS TABLE (item_id uuid, user_id bigint, current_score integer)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_callback record;
    v_score record;
    v_scored boolean;
BEGIN
    LOOP
        SELECT c.id, c.user_id INTO v_callback
          FROM callbacks c
         WHERE c.status = 'scheduled' AND c.owner_agent_id = p_agent
           AND c.due_at <= now() AND c.queue_type = p_queue
           AND NOT c.user_id = ANY(p_tried)
         ORDER BY c.due_at, c.id
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT c.id, c.user_id INTO v_callback
              FROM callbacks c
             WHERE c.status = 'scheduled' AND c.queue_type = p_queue
               AND c.due_at <= now() - make_interval(mins => p_personal_minutes)
               AND NOT c.user_id = ANY(p_tried)
             ORDER BY c.due_at, c.id
             LIMIT 1
               FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND THEN
            SELECT c.id, c.user_id INTO v_callback
              FROM callbacks c
             WHERE c.status = 'scheduled'
               AND c.owner_agent_id = ANY(ARRAY(SELECT o.id FROM agents o WHERE NOT o.is_active))
               AND c.queue_type = p_queue AND c.due_at <= now()
               AND NOT c.user_id = ANY(p_tried)
             ORDER BY c.due_at, c.id
             LIMIT 1
               FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        SELECT s.is_active, s.current_queue_type, s.current_score INTO v_score
          FROM user_call_scores s WHERE s.user_id = v_callback.user_id;
        v_scored := FOUND;
        IF NOT v_scored OR NOT v_score.is_active OR v_score.current_queue_type IS NULL THEN
            PERFORM cq_invalidate(p_agent, p_queue, 'callback', v_callback.id,
                                  v_callback.user_id, 'cancelled',
                                  CASE WHEN NOT v_scored THEN 'score_row_missing'
                                       WHEN NOT v_score.is_active THEN 'inactive'
                                       ELSE 'no_queue' END,
                                  false, NULL, NULL);
            CONTINUE;
        END IF;
        IF v_score.current_queue_type <> p_queue THEN
            UPDATE callbacks SET queue_type = v_score.current_queue_type, updated_at = now()
             WHERE id = v_callback.id;
            CONTINUE;
        END IF;
        IF callqueue_attempt_cap(v_callback.user_id, p_max_day, p_max_week, true)
           IS NOT NULL THEN
            PERFORM cq_invalidate(p_agent, p_queue, 'callback', v_callback.id,
                                  v_callback.user_id, 'cancelled', 'attempt_cap', false,
                                  NULL, NULL);
            CONTINUE;
        END IF;
        RETURN QUERY SELECT v_callback.id, v_callback.user_id, v_score.current_score;
        RETURN;
    END LOOP;
END $$
"""
    )

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
CREATE FUNCTION cq_claim(p_agent integer, p_queue text, p_source text, p_open boolean,
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

    SELECT * INTO v_callback
      FROM cq_take_callback(p_agent, p_queue, p_tried, p_personal_minutes, p_max_day,
                            p_max_week);
    IF v_callback.item_id IS NOT NULL THEN
        RETURN QUERY SELECT 'callback'::text, v_callback.item_id, v_callback.user_id,
                            NULL::bigint, v_callback.current_score, NULL::integer, NULL::text,
                            NULL::jsonb, NULL::text, v_swept;
        RETURN;
    END IF;

    IF p_source = 'queue' THEN
        {_dispatch("p_queue", "SELECT * INTO v_item FROM cq_take_{q}()")}
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

    # Hand the source's user to the agent, after its checks passed: the ledger row, then the
    # score row, locked and checked again in this same transaction. Results:
    #   assigned    the ledger row is in, the entry (if any) 'assigned';
    #   user_taken  another agent holds the user: the source is marked 'already_assigned';
    #   agent_busy  this agent got an assignment from a concurrent request (a double click);
    #   invalid     the score row no longer allows it (an outcome since, a deactivation), the
    #               person is at an attempt cap (the source is then marked 'skipped'), the
    #               number is on the do-not-call list, or (an entry, direct mode) the person has
    #               an open callback, which is the only way back (SPEC 7.2): the ledger row is
    #               removed again and the source marked with the problem;
    #   retry       both conflicts ended in between: nothing was written.
    statements.append(
        """
CREATE FUNCTION cq_hand_out(p_agent integer, p_queue text, p_source text, p_item uuid,
                            p_user bigint, p_claim bigint, p_priority integer, p_position integer,
                            p_reason text, p_details jsonb, p_lease_seconds integer,
                            p_claim_ms integer, p_max_day integer, p_max_week integer,
                            p_daily_exempt boolean, p_phone_key text)
RETURNS TABLE (result text, problem text, assignment_id uuid, assigned_at timestamptz,
               lease_expires_at timestamptz, callback_due_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_id uuid;
    v_at timestamptz;
    v_until timestamptz;
    v_problem text;
    v_due timestamptz;
BEGIN
    -- ON CONFLICT DO NOTHING covers both partial unique indexes (one active assignment per
    -- user, one per agent): losing the race returns no row instead of raising.
    -- assigned_at is the moment of the insert (clock_timestamp), not the transaction's start
    -- (now(), taken before the replica read): hand-outs of one user are then ordered as they
    -- happened, which "handed out since" (cq_complete) and the compliance record rely on.
    IF p_source = 'callback' THEN
        SELECT c.due_at INTO v_due FROM callbacks c WHERE c.id = p_item;  -- locked by cq_claim
    END IF;
    INSERT INTO assignments (agent_id, user_id, queue_type, source, queue_entry_id, claim_id,
                             priority_score, queue_position, queue_reason, details,
                             assigned_at, lease_expires_at, claim_ms, callback_id,
                             callback_due_at)
    VALUES (p_agent, p_user, p_queue, p_source, CASE WHEN p_source = 'queue' THEN p_item END,
            p_claim, p_priority, p_position, p_reason, p_details, clock_timestamp(),
            clock_timestamp() + make_interval(secs => p_lease_seconds), p_claim_ms,
            CASE WHEN p_source = 'callback' THEN p_item END, v_due)
    ON CONFLICT DO NOTHING
    RETURNING id, assignments.assigned_at, assignments.lease_expires_at
         INTO v_id, v_at, v_until;

    IF v_id IS NULL THEN
        -- Which index said no? The insert waited for the other transaction, so it has ended.
        IF EXISTS (SELECT 1 FROM assignments a WHERE a.agent_id = p_agent AND a.status = 'active')
        THEN
            RETURN QUERY SELECT 'agent_busy'::text, NULL::text, NULL::uuid, NULL::timestamptz,
                                NULL::timestamptz, NULL::timestamptz;
        ELSIF EXISTS (SELECT 1 FROM assignments a WHERE a.user_id = p_user AND a.status = 'active')
        THEN
            PERFORM cq_invalidate(p_agent, p_queue, p_source, p_item, p_user, 'invalid',
                                  'already_assigned', false, NULL, NULL);
            RETURN QUERY SELECT 'user_taken'::text, 'already_assigned'::text, NULL::uuid,
                                NULL::timestamptz, NULL::timestamptz, NULL::timestamptz;
        ELSE
            RETURN QUERY SELECT 'retry'::text, NULL::text, NULL::uuid, NULL::timestamptz,
                                NULL::timestamptz, NULL::timestamptz;
        END IF;
        RETURN;
    END IF;

    -- The score row, locked after the ledger row: an outcome committed on this user since the
    -- attempt began is seen here; one that comes later waits for this transaction and then
    -- sees the hand-out.
    -- A due callback is served at its due time, whatever next_call_after says since.
    SELECT cq_score_problem(s.is_active, s.current_queue_type,
                            CASE WHEN p_source = 'callback' THEN NULL ELSE s.next_call_after END,
                            p_queue)
      INTO v_problem
      FROM user_call_scores s WHERE s.user_id = p_user
       FOR SHARE;
    IF NOT FOUND THEN
        v_problem := 'score_row_missing';
    END IF;
    -- The calling rules on this person, decided under the same lock: the attempt caps (the
    -- ledger's completed attempts; an outcome takes the score row too) and the do-not-call list
    -- for the number about to be handed out, whoever else it belongs to.
    IF v_problem IS NULL
       AND callqueue_attempt_cap(p_user, p_max_day, p_max_week, p_daily_exempt) IS NOT NULL THEN
        v_problem := 'attempt_cap';
    END IF;
    IF v_problem IS NULL
       AND EXISTS (SELECT 1 FROM suppressed_numbers sn WHERE sn.phone_hash = p_phone_key) THEN
        v_problem := 'suppressed';
    END IF;
    -- A callback booked since the entry was built (a completion books it under the score row's
    -- lock, which this transaction now holds shared): the callback is the way back.
    IF v_problem IS NULL AND p_source <> 'callback'
       AND EXISTS (SELECT 1 FROM callbacks c
                    WHERE c.user_id = p_user AND c.status IN ('scheduled', 'assigned')) THEN
        v_problem := 'callback_booked';
    END IF;
    IF v_problem IS NOT NULL THEN
        DELETE FROM assignments WHERE id = v_id;
        PERFORM cq_invalidate(p_agent, p_queue, p_source, p_item, p_user,
                              CASE v_problem WHEN 'attempt_cap' THEN 'skipped' ELSE 'invalid' END,
                              v_problem, false, NULL, NULL);
        RETURN QUERY SELECT 'invalid'::text, v_problem, NULL::uuid, NULL::timestamptz,
                            NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;

    IF p_source = 'queue' THEN
        PERFORM cq_set_entry(p_queue, p_item, 'assigned', ARRAY['pending'], p_agent, NULL, v_at);
    ELSIF p_source = 'callback' THEN
        UPDATE callbacks
           SET status = 'assigned', assignment_id = v_id,
               first_handed_out_at = coalesce(first_handed_out_at, v_at), updated_at = now()
         WHERE callbacks.id = p_item;
    END IF;
    RETURN QUERY SELECT 'assigned'::text, NULL::text, v_id, v_at, v_until, v_due;
END $$
"""
    )

    # Record an outcome (SPEC 3.4) and reclassify the user as the replica said (p_verdict_known),
    # in one transaction. The caller has read the assignment's unchanging head (queue, entry,
    # assigned_at). Results:
    #   completed          the outcome is recorded (score columns returned);
    #   not_found          no such assignment for this agent;
    #   already_completed  it was completed before;
    #   not_active         it is no longer active and the user was handed out since (or it was
    #                      released): nothing written;
    #   late_deactivation  as not_active, but the outcome asks never to call again: the score row
    #                      is deactivated and the outcome recorded on the assignment anyway.
    #
    # The usual case, a live assignment, writes in the order everywhere else takes its locks: the
    # entry's queue swap lock, the entry (only while it is still this hand-out's), the ledger row
    # (only while it is live and this agent's), the score row. Anything else is decided on the
    # ledger row locked (FOR UPDATE) after the entry; a lapsed assignment (active with its lease
    # run out, or expired by a sweep) may still be completed while nobody else has had the
    # user, decided with the score row locked, which a hand-out of the same user also takes: a
    # hand-out still in flight either finishes first (and is seen) or waits and then sees this
    # outcome. (When the entry was changed above, the assignment is one whose lease ran out but
    # which no sweep has expired: nobody can have had the user since, so it is completed.)
    statements.append(
        """
CREATE FUNCTION cq_complete(p_agent integer, p_assignment uuid, p_queue text, p_entry uuid,
                            p_user bigint, p_assigned_at timestamptz, p_outcome text,
                            p_callback_at timestamptz, p_notes text, p_change integer,
                            p_delay_seconds integer, p_successful boolean,
                            p_deactivates boolean, p_min_score integer, p_max_score integer,
                            p_verdict_known boolean, p_verdict_type text, p_verdict_reason text,
                            p_suppress_key text)
RETURNS TABLE (result text, id uuid, status text, queue_type text, source text,
               queue_entry_id uuid, user_id bigint, claim_id bigint, priority_score integer,
               queue_position integer, queue_reason text, assigned_at timestamptz,
               lease_expires_at timestamptz, outcome text, details jsonb,
               score_found boolean, current_score integer, next_call_after timestamptz,
               is_active boolean, current_queue_type text, booked_callback_id uuid,
               booked_callback_due_at timestamptz, callback_id uuid,
               callback_due_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    a assignments;
    s record;
    v_found boolean;
    v_booked uuid;
BEGIN
    IF p_entry IS NOT NULL THEN
        PERFORM cq_swap_lock_shared(p_queue);
        PERFORM cq_set_entry(p_queue, p_entry, 'completed', ARRAY['assigned'], p_agent, NULL,
                             p_assigned_at);
    END IF;
    -- The person's open callback, a source row too: the one this assignment serves, or one a
    -- new booking replaces. Locked before the ledger row, as a claim of it does.
    PERFORM 1 FROM callbacks c
      WHERE c.user_id = p_user AND c.status IN ('scheduled', 'assigned')
        FOR UPDATE;
    -- Times of the moment it happened (clock_timestamp), under the locks, not the statement's
    -- start: the ledger orders a user's hand-outs and outcomes as they happened.
    UPDATE assignments
       SET status = 'completed', outcome = p_outcome, callback_at = p_callback_at,
           notes = p_notes, finished_at = clock_timestamp(), updated_at = clock_timestamp()
     WHERE assignments.id = p_assignment AND agent_id = p_agent
       AND assignments.status = 'active' AND assignments.lease_expires_at > clock_timestamp()
    RETURNING * INTO a;

    IF NOT FOUND THEN
        IF p_entry IS NOT NULL THEN
            PERFORM cq_lock_entry(p_queue, p_entry);
        END IF;
        SELECT * INTO a FROM assignments WHERE assignments.id = p_assignment FOR UPDATE;
        IF NOT FOUND OR a.agent_id <> p_agent THEN
            RETURN QUERY SELECT 'not_found'::text, NULL::uuid, NULL::text, NULL::text,
                NULL::text, NULL::uuid, NULL::bigint, NULL::bigint, NULL::integer,
                NULL::integer, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text,
                NULL::jsonb, NULL::boolean, NULL::integer, NULL::timestamptz, NULL::boolean,
                NULL::text, NULL::uuid, NULL::timestamptz, NULL::uuid, NULL::timestamptz;
            RETURN;
        END IF;
        IF a.status = 'completed' THEN
            RETURN QUERY SELECT 'already_completed'::text, a.id, a.status, a.queue_type,
                a.source, a.queue_entry_id, a.user_id, a.claim_id, a.priority_score,
                a.queue_position, a.queue_reason, a.assigned_at, a.lease_expires_at, a.outcome,
                a.details, NULL::boolean, NULL::integer, NULL::timestamptz, NULL::boolean,
                NULL::text, NULL::uuid, NULL::timestamptz, a.callback_id, a.callback_due_at;
            RETURN;
        END IF;
        PERFORM 1 FROM user_call_scores WHERE user_call_scores.user_id = a.user_id FOR UPDATE;
        IF a.status NOT IN ('active', 'expired')
           OR EXISTS (SELECT 1 FROM assignments o
                       WHERE o.user_id = a.user_id AND o.id <> a.id
                         AND (o.status = 'active' OR o.assigned_at >= a.assigned_at)) THEN
            IF NOT p_deactivates THEN
                RETURN QUERY SELECT 'not_active'::text, a.id, a.status, a.queue_type, a.source,
                    a.queue_entry_id, a.user_id, a.claim_id, a.priority_score, a.queue_position,
                    a.queue_reason, a.assigned_at, a.lease_expires_at, a.outcome, a.details,
                    NULL::boolean, NULL::integer, NULL::timestamptz, NULL::boolean, NULL::text,
                    NULL::uuid, NULL::timestamptz, a.callback_id, a.callback_due_at;
                RETURN;
            END IF;
            -- Someone asked never to be called again: that sticks, whatever happened to the
            -- assignment.
            UPDATE assignments
               SET outcome = p_outcome, updated_at = clock_timestamp(),
                   status = CASE WHEN assignments.status = 'active' THEN 'expired'
                                 ELSE assignments.status END,
                   finished_at = coalesce(finished_at, clock_timestamp())
             WHERE assignments.id = a.id
            RETURNING * INTO a;
            UPDATE user_call_scores
               SET is_active = false, last_outcome = p_outcome, updated_at = now()
             WHERE user_call_scores.user_id = a.user_id;
            PERFORM cq_cancel_callback(c.id, p_outcome)
               FROM callbacks c
              WHERE c.user_id = a.user_id AND c.status IN ('scheduled', 'assigned');
            IF p_suppress_key IS NOT NULL THEN
                PERFORM cq_suppress(ARRAY[p_suppress_key], 'do_not_contact', p_agent);
            END IF;
            RETURN QUERY SELECT 'late_deactivation'::text, a.id, a.status, a.queue_type,
                a.source, a.queue_entry_id, a.user_id, a.claim_id, a.priority_score,
                a.queue_position, a.queue_reason, a.assigned_at, a.lease_expires_at, a.outcome,
                a.details, NULL::boolean, NULL::integer, NULL::timestamptz, NULL::boolean,
                NULL::text, NULL::uuid, NULL::timestamptz, a.callback_id, a.callback_due_at;
            RETURN;
        END IF;
        -- Lapsed, and nobody has had the user since: the outcome counts.
        UPDATE assignments
           SET status = 'completed', outcome = p_outcome, callback_at = p_callback_at,
               notes = p_notes, finished_at = clock_timestamp(), updated_at = clock_timestamp()
         WHERE assignments.id = a.id
        RETURNING * INTO a;
        IF a.queue_entry_id IS NOT NULL THEN
            PERFORM cq_set_entry(a.queue_type, a.queue_entry_id, 'completed',
                                 ARRAY['assigned', 'pending'], NULL, NULL, NULL);
        END IF;
    END IF;

    -- Relative and clamped, in one statement, so a concurrent upstream write to the score is
    -- never lost. The attempt penalty looks at total_attempts after this increment.
    UPDATE user_call_scores
       SET total_attempts = total_attempts + 1,
           successful_calls = successful_calls + CASE WHEN p_successful THEN 1 ELSE 0 END,
           last_call_at = now(),
           last_outcome = p_outcome,
           last_queue_check = now(),
           current_score = LEAST(p_max_score, GREATEST(p_min_score, current_score + p_change
               + CASE WHEN total_attempts + 1 > 10 THEN 3
                      WHEN total_attempts + 1 > 5 THEN 1
                      ELSE 0 END)),
           next_call_after = CASE
               WHEN p_callback_at IS NOT NULL THEN p_callback_at
               WHEN p_delay_seconds IS NULL THEN NULL
               ELSE now() + make_interval(secs => p_delay_seconds) END,
           is_active = is_active AND NOT p_deactivates,
           updated_at = now()
     WHERE user_call_scores.user_id = a.user_id
    RETURNING user_call_scores.current_score, user_call_scores.next_call_after,
              user_call_scores.is_active, user_call_scores.current_queue_type
         INTO s;
    v_found := FOUND;
    -- do_not_contact: the number goes on the do-not-call list, for every user who has it.
    IF p_suppress_key IS NOT NULL THEN
        PERFORM cq_suppress(ARRAY[p_suppress_key], 'do_not_contact', p_agent);
    END IF;
    IF v_found AND p_verdict_known
       AND s.current_queue_type IS DISTINCT FROM p_verdict_type THEN
        PERFORM cq_reclassify(ARRAY[a.user_id], ARRAY[p_verdict_type], ARRAY[p_verdict_reason],
                              s.current_queue_type, 'outcome', p_agent, NULL);
        s.current_queue_type := p_verdict_type;
    END IF;
    -- Callbacks (SPEC 7.2): the one this assignment served is kept (also when its lease ran
    -- out and a sweep put it back: nobody has had the person since); a new callback_at books
    -- the next one, in the queue the person belongs to now, replacing any other open one; a
    -- deactivating outcome cancels what is open.
    IF a.callback_id IS NOT NULL THEN
        UPDATE callbacks c
           SET status = 'completed', finished_at = clock_timestamp(), updated_at = now()
         WHERE c.id = a.callback_id AND c.assignment_id = a.id
           AND c.status IN ('assigned', 'scheduled');
    END IF;
    IF p_deactivates THEN
        PERFORM cq_cancel_callback(c.id, p_outcome)
           FROM callbacks c
          WHERE c.user_id = a.user_id AND c.status IN ('scheduled', 'assigned');
    ELSIF p_callback_at IS NOT NULL AND v_found AND s.is_active
          AND s.current_queue_type IS NOT NULL THEN
        PERFORM cq_cancel_callback(c.id, 'rebooked')
           FROM callbacks c
          WHERE c.user_id = a.user_id AND c.status IN ('scheduled', 'assigned');
        INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id,
                               booked_by_assignment_id)
        VALUES (a.user_id, s.current_queue_type, p_callback_at, p_agent, a.id)
        RETURNING callbacks.id INTO v_booked;
    END IF;
    RETURN QUERY SELECT 'completed'::text, a.id, a.status, a.queue_type, a.source,
        a.queue_entry_id, a.user_id, a.claim_id, a.priority_score, a.queue_position,
        a.queue_reason, a.assigned_at, a.lease_expires_at, a.outcome, a.details, v_found,
        s.current_score, s.next_call_after, s.is_active, s.current_queue_type::text, v_booked,
        CASE WHEN v_booked IS NOT NULL THEN p_callback_at END, a.callback_id, a.callback_due_at;
END $$
"""
    )
    return statements


FUNCTION_SIGNATURES = [
    *(
        sig
        for q in QUEUES
        for sig in (
            f"cq_swap_lock_shared_{q}()",
            f"cq_take_{q}()",
            f"cq_lock_entry_{q}(uuid)",
            f"cq_set_entry_{q}(uuid, text, text[], integer, text, timestamptz)",
            f"cq_lock_entries_{q}(uuid[])",
        )
    ),
    "cq_swap_lock_shared(text)",
    "cq_lock_entry(text, uuid)",
    "cq_set_entry(text, uuid, text, text[], integer, text, timestamptz)",
    "cq_candidates(text, integer, boolean, integer, integer)",
    "cq_score_problem(boolean, text, timestamptz, text)",
    "cq_reclassify(bigint[], text[], text[], text, text, integer, uuid)",
    "cq_sweep(integer)",
    "cq_suppress(text[], text, integer)",
    "cq_cancel_callback(uuid, text)",
    "cq_invalidate(integer, text, text, uuid, bigint, text, text, boolean, text, text)",
    "cq_take_callback(integer, text, bigint[], integer, integer, integer)",
    "cq_claim(integer, text, text, boolean, bigint[], integer, integer, integer, integer, integer)",
    "cq_hand_out(integer, text, text, uuid, bigint, bigint, integer, integer, text, jsonb,"
    " integer, integer, integer, integer, boolean, text)",
    "cq_complete(integer, uuid, text, uuid, bigint, timestamptz, text, timestamptz, text,"
    " integer, integer, boolean, boolean, integer, integer, boolean, text, text, text)",
]


def upgrade() -> None:
    for statement in _functions():
        op.execute(statement)


def downgrade() -> None:
    for signature in reversed(FUNCTION_SIGNATURES):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
