-- Hand the source's user to the agent, after its checks passed: the ledger row, then the score
-- row, locked and checked again in this same transaction, then the number. Results:
--   assigned      the ledger row is in (with the keyed hash of the number given to the agent,
--                 which a do_not_contact outcome suppresses), the entry (if any) 'assigned';
--   key_mismatch  this process's SUPPRESSION_KEY is not the list's (cq_key_matches): nothing
--                 was written, and the caller hands nobody out (SPEC 8.1);
--   user_taken    another agent holds the user: the source is marked 'already_assigned';
--   agent_busy    this agent got an assignment from a concurrent request (a double click);
--   invalid       the score row no longer allows it (an outcome since, a deactivation), the
--                 person is at an attempt cap (the source is then marked 'skipped'), has an open
--                 callback, which is the only way back (an entry, direct mode: SPEC 7.2), or the
--                 number is on the do-not-call list: the ledger row is removed again and the
--                 source marked with the problem;
--   retry         both conflicts ended in between: nothing was written.
CREATE FUNCTION cq_hand_out(p_agent integer, p_queue text, p_source text, p_item uuid,
                            p_user bigint, p_claim bigint, p_priority integer, p_position integer,
                            p_reason text, p_details jsonb, p_lease_seconds integer,
                            p_claim_ms integer, p_max_day integer, p_max_week integer,
                            p_daily_exempt boolean, p_phone_key text, p_key_fingerprint text)
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
    IF NOT cq_key_matches(p_key_fingerprint) THEN
        RETURN QUERY SELECT 'key_mismatch'::text, NULL::text, NULL::uuid, NULL::timestamptz,
                            NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;
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
                             callback_due_at, phone_hash)
    VALUES (p_agent, p_user, p_queue, p_source, CASE WHEN p_source = 'queue' THEN p_item END,
            p_claim, p_priority, p_position, p_reason, p_details, clock_timestamp(),
            clock_timestamp() + make_interval(secs => p_lease_seconds), p_claim_ms,
            CASE WHEN p_source = 'callback' THEN p_item END, v_due, p_phone_key)
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
    -- ledger's completed attempts; an outcome takes the score row too).
    IF v_problem IS NULL
       AND callqueue_attempt_cap(p_user, p_max_day, p_max_week, p_daily_exempt) IS NOT NULL THEN
        v_problem := 'attempt_cap';
    END IF;
    -- A callback booked since the entry was built (a completion books it under the score row's
    -- lock, which this transaction now holds shared): the callback is the way back. Busy with
    -- anything but this hand-out and the callback it serves.
    IF v_problem IS NULL
       AND EXISTS (SELECT 1 FROM cq_busy b
                    WHERE b.user_id = p_user AND b.id <> v_id
                      AND b.id IS DISTINCT FROM p_item) THEN
        v_problem := 'callback_booked';
    END IF;
    -- The do-not-call list, for the number about to be handed out, whoever else it belongs to:
    -- under the number's lock (cq_number_lock, taken last), so a do_not_contact of this number
    -- either committed before this check (and is seen) or waits for this transaction.
    IF v_problem IS NULL AND p_phone_key IS NOT NULL THEN
        PERFORM cq_number_lock(p_phone_key, false);
        IF EXISTS (SELECT 1 FROM suppressed_numbers sn WHERE sn.phone_hash = p_phone_key) THEN
            v_problem := 'suppressed';
        END IF;
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
