-- The start of one claim attempt (SPEC 3.3): the source row for agent p_agent, locked, with what
-- the score row says now (read, not locked: the hand-out re-checks it under its lock). With
-- p_open (the request's first attempt) it first expires lapsed leases (when there are any;
-- ``swept`` says how many per queue type) and returns the agent's live assignment, if any, as
-- source 'held'. Source NULL: nothing left to take.
--
-- Whatever the source, a due callback comes first (SPEC 7.2, cq_take_callback): the attempt then
-- returns source 'callback' with the callback's id, in the same round trip. Every callback
-- cq_take_callback may serve is scheduled, of this queue and due: one probe of
-- ix_callbacks_scheduled_queue_due says whether there is any, and only then does the walk run.
--
-- A queue entry: the first pending one in serving order, FOR UPDATE SKIP LOCKED on the partial
-- index (queue_position, id) WHERE status = 'pending', so concurrent claims each take a
-- different entry without queueing behind one another. The look starts at the lower of the
-- queue's front (cq_advance_front: no entry before it is pending but those put back) and the
-- first put-back entry, so it does not step over every entry handed out since the last vacuum
-- could remove them (a snapshot held open for minutes keeps them all). Nothing else is held
-- while the caller reads the replica: no swap lock. When there is no entry to take, a refresh may be swapping the
-- queue (its swap holds the old entries, and its new ones are not visible yet). The attempt
-- never waits for the swap here: it may hold rows the swap takes after its lock (the entries its
-- sweep put back; a row its search locked and then passed over, changed meanwhile), and waiting
-- would close a cycle. It tries the queue's swap lock: free, it looks once more, in a new
-- snapshot; held, it answers source 'swap', and the caller waits for the lock at the start of
-- its next attempt, holding nothing, then looks again. So a claim that meets a swap answers
-- from the new snapshot and never "empty" because of it (SPEC 3.2). An entry whose user is at
-- an attempt cap is reported as 'attempt_cap' (the caller marks it skipped), before the replica
-- is read.
--
-- Direct mode walks the candidates in serving order and takes the first one nobody holds whose
-- per-user advisory lock it gets (pg_try_advisory_xact_lock never waits; namespace 1970496882,
-- 'user'), skipping users the request already rejected (p_tried) and users handed out since the
-- walk's snapshot was taken.
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
    v_look integer;
    v_from integer;
BEGIN
    IF p_open THEN
        -- Any lapsed lease? The earliest, through ix_assignments_lease (a range read that stops
        -- at now(): the dead versions a long-open snapshot keeps are all of leases still
        -- running). As an EXISTS the planner may read a whole partial index of live
        -- assignments instead, when the last ANALYZE saw none live.
        PERFORM 1 FROM assignments
          WHERE status = 'active' AND lease_expires_at <= now()
          ORDER BY lease_expires_at LIMIT 1;
        IF FOUND THEN
            v_swept := cq_sweep(p_sweep_limit);
        END IF;
        -- The agent's latest hand-out, if still active and in its lease: the one they hold,
        -- if any (at most one, and nothing is handed to them meanwhile). Looked up by agent and
        -- time, not through the partial index of live assignments, which the planner may read
        -- whole when the last ANALYZE saw none live (dead versions a held snapshot keeps too).
        SELECT a.id INTO v_held
          FROM (SELECT l.id, l.status, l.lease_expires_at FROM assignments l
                 WHERE l.agent_id = p_agent ORDER BY l.assigned_at DESC LIMIT 1) a
         WHERE a.status = 'active' AND a.lease_expires_at > now();
        IF FOUND THEN
            RETURN QUERY SELECT 'held'::text, v_held, NULL::bigint, NULL::bigint, NULL::integer,
                                NULL::integer, NULL::text, NULL::jsonb, NULL::text, v_swept;
            RETURN;
        END IF;
    END IF;

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
        FOR v_look IN 1..2 LOOP
            IF p_queue = 'unsigned_users' THEN
                SELECT least(f.position,
                             (SELECT min(e.queue_position) FROM unsigned_users_queue e
                               WHERE e.status = 'pending' AND e.put_back))
                  INTO v_from FROM queue_fronts f WHERE f.queue_type = p_queue;
                SELECT e.id AS item_id, e.user_id, e.claim_id, e.priority_score,
                       e.queue_position, e.queue_reason,
                       jsonb_build_object('signature_missing_since', e.signature_missing_since,
                                          'signature_type', e.signature_type) AS details
                  INTO v_item
                  FROM unsigned_users_queue e
                 WHERE e.status = 'pending' AND e.queue_position >= coalesce(v_from, 0)
                 ORDER BY e.queue_position, e.id
                 LIMIT 1
                   FOR UPDATE SKIP LOCKED;
            ELSIF p_queue = 'outstanding_requests' THEN
                SELECT least(f.position,
                             (SELECT min(e.queue_position) FROM outstanding_requests_queue e
                               WHERE e.status = 'pending' AND e.put_back))
                  INTO v_from FROM queue_fronts f WHERE f.queue_type = p_queue;
                SELECT e.id AS item_id, e.user_id, e.claim_id, e.priority_score,
                       e.queue_position, e.queue_reason,
                       jsonb_build_object('requirement_types', e.requirement_types,
                                          'total_requirements', e.total_requirements,
                                          'pending_requirements', e.pending_requirements,
                                          'completed_requirements', e.completed_requirements,
                                          'oldest_requirement_date',
                                          e.oldest_requirement_date) AS details
                  INTO v_item
                  FROM outstanding_requests_queue e
                 WHERE e.status = 'pending' AND e.queue_position >= coalesce(v_from, 0)
                 ORDER BY e.queue_position, e.id
                 LIMIT 1
                   FOR UPDATE SKIP LOCKED;
            ELSE
                RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
            END IF;
            EXIT WHEN v_item.item_id IS NOT NULL OR v_look = 2;
            IF NOT cq_swap_lock_try_shared(p_queue) THEN
                RETURN QUERY SELECT 'swap'::text, NULL::uuid, NULL::bigint, NULL::bigint,
                                    NULL::integer, NULL::integer, NULL::text, NULL::jsonb,
                                    NULL::text, v_swept;
                RETURN;
            END IF;
        END LOOP;
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
              FROM cq_candidates(p_queue, p_cooling_minutes, p_max_day, p_max_week) c
             WHERE NOT c.held AND NOT c.user_id = ANY(p_tried)
        LOOP
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(1970496882, hashint8(v_lead.user_id));
            -- The walk's snapshot predates the lock: skip a user handed out (or given a
            -- callback) since, or whose lapsed lease no sweep has expired yet.
            CONTINUE WHEN EXISTS (SELECT 1 FROM cq_busy b WHERE b.user_id = v_lead.user_id);
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
