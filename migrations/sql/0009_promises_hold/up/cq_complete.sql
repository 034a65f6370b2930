-- Record an outcome (SPEC 3.4) and reclassify the user as the replica said (p_verdict_known),
-- in one transaction. The caller has read the assignment's unchanging head (queue, entry,
-- assigned_at). Results:
--   completed          the outcome is recorded (score columns returned);
--   not_found          no such assignment for this agent;
--   already_completed  it was completed before;
--   not_active         it is no longer active and the user was handed out since (or it was
--                      released): nothing written;
--   late_deactivation  as not_active, but the outcome asks never to call again: the score row
--                      is deactivated and the outcome recorded on the assignment anyway.
-- A do_not_contact (p_suppresses) puts the number that was handed out (the ledger row's
-- phone_hash) on the do-not-call list in this same transaction, whatever the replica says now.
--
-- The usual case, a live assignment, writes in the order everywhere else takes its locks: the
-- entry (only while it is still this hand-out's), the person's open callback, the ledger row
-- (only while it is live and this agent's), the score row, last the number (cq_suppress).
-- Anything else is decided on the ledger row locked (FOR UPDATE) after the entry; a lapsed
-- assignment (active with its lease run out, or expired by a sweep) may still be completed while
-- nobody else has had the user, decided with the score row locked, which a hand-out of the same
-- user also takes: a hand-out still in flight either finishes first (and is seen) or waits and
-- then sees this outcome. (When the entry was changed above, the assignment is one whose lease
-- ran out but which no sweep has expired: nobody can have had the user since, so it is
-- completed.)
CREATE FUNCTION cq_complete(p_agent integer, p_assignment uuid, p_queue text, p_entry uuid,
                            p_user bigint, p_assigned_at timestamptz, p_outcome text,
                            p_callback_at timestamptz, p_notes text, p_change integer,
                            p_delay_seconds integer, p_successful boolean,
                            p_deactivates boolean, p_min_score integer, p_max_score integer,
                            p_verdict_known boolean, p_verdict_type text, p_verdict_reason text,
                            p_suppresses boolean)
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
            IF p_suppresses AND a.phone_hash IS NOT NULL THEN
                PERFORM cq_suppress(ARRAY[a.phone_hash], 'do_not_contact', p_agent);
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
    -- do_not_contact: the number that was handed out goes on the do-not-call list, for every
    -- user who has it (its lock is the last one this transaction takes).
    IF p_suppresses AND a.phone_hash IS NOT NULL THEN
        PERFORM cq_suppress(ARRAY[a.phone_hash], 'do_not_contact', p_agent);
    END IF;
    -- The callback this assignment served is kept (also when its lease ran out and a sweep put
    -- it back: nobody has had the person since), before any reclassification, which moves or
    -- cancels only what is still open.
    IF a.callback_id IS NOT NULL THEN
        UPDATE callbacks c
           SET status = 'completed', finished_at = clock_timestamp(), updated_at = now()
         WHERE c.id = a.callback_id AND c.assignment_id = a.id
           AND c.status IN ('assigned', 'scheduled');
    END IF;
    IF v_found AND p_verdict_known
       AND s.current_queue_type IS DISTINCT FROM p_verdict_type THEN
        PERFORM cq_reclassify(ARRAY[a.user_id], ARRAY[p_verdict_type], ARRAY[p_verdict_reason],
                              s.current_queue_type, 'outcome', p_agent, NULL);
        s.current_queue_type := p_verdict_type;
    END IF;
    -- A new callback_at books the next callback, in the queue the person belongs to now,
    -- replacing any other open one; a deactivating outcome cancels what is open (SPEC 7.2).
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
