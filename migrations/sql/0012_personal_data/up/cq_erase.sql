-- Erase a person (SPEC 8.3), in one transaction; returns how many rows of each table were
-- deleted or cleared. Erasing again changes nothing and returns zeros.
--
-- The person's bucket lock first (cq_person_locks: no writer of score rows creates them again
-- after this commits), then the tombstone. A live hand-out ends through the one release path
-- (cq_release: its entry, callback, ledger row, score row), re-queued, with the reason 'erased'.
-- Then the rows, locked in the order every path takes them, each by a statement of its own:
-- the queue entries, the callbacks, the ledger rows, the score row, all in id order.
--
-- What is kept: ledger rows with what the compliance report counts (times, agent, queue,
-- source, outcome, the user id the caps and the record need), without notes, release reasons,
-- details, the queue's reason, the claim id or the number's hash; of each callback, its times
-- and how it stood (erased_callbacks, no user id: the report counts callbacks from callbacks
-- and erased_callbacks), an open one not yet overdue marked 'erased' so it never turns overdue;
-- transitions and invalidations with their reasons cleared, but the two the report counts
-- (suppressed, attempt_cap); the do-not-call list's hashes. The callbacks' change audit goes
-- with them (it names their reasons).
CREATE FUNCTION cq_erase(p_user bigint, p_agent integer, p_grace_minutes integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_live uuid;
    v_released uuid[] := '{}';
    v_callbacks uuid[];
    n_released integer;
    n_unsigned integer;
    n_outstanding integer;
    n_callbacks integer;
    n_changes integer;
    n_ledger integer;
    n_transitions integer;
    n_invalidations integer;
    n_scores integer;
    v_removed jsonb;
BEGIN
    PERFORM cq_person_locks(ARRAY[p_user], true);
    INSERT INTO erased_users (user_id, erased_by) VALUES (p_user, p_agent)
    ON CONFLICT (user_id) DO NOTHING;

    FOR v_live IN
        SELECT id FROM assignments WHERE user_id = p_user AND status = 'active' ORDER BY id
    LOOP
        IF cq_release(v_live, NULL, true, 'erased', 0) = 'released' THEN
            v_released := v_released || v_live;
        END IF;
    END LOOP;
    n_released := cardinality(v_released);

    PERFORM 1 FROM unsigned_users_queue WHERE user_id = p_user ORDER BY id FOR UPDATE;
    PERFORM 1 FROM outstanding_requests_queue WHERE user_id = p_user ORDER BY id FOR UPDATE;
    v_callbacks := ARRAY(SELECT id FROM callbacks WHERE user_id = p_user ORDER BY id FOR UPDATE);
    PERFORM 1 FROM assignments WHERE user_id = p_user ORDER BY id FOR UPDATE;
    PERFORM 1 FROM user_call_scores WHERE user_id = p_user FOR UPDATE;

    DELETE FROM unsigned_users_queue WHERE user_id = p_user;
    GET DIAGNOSTICS n_unsigned = ROW_COUNT;
    DELETE FROM outstanding_requests_queue WHERE user_id = p_user;
    GET DIAGNOSTICS n_outstanding = ROW_COUNT;

    INSERT INTO erased_callbacks (id, created_at, due_at, first_handed_out_at, status,
                                  finished_at)
    SELECT c.id, c.created_at, c.due_at, c.first_handed_out_at,
           CASE WHEN c.status IN ('scheduled', 'assigned')
                     AND c.due_at + make_interval(mins => p_grace_minutes) >= now()
                THEN 'erased' ELSE c.status END,
           c.finished_at
      FROM callbacks c WHERE c.id = ANY(v_callbacks)
    ON CONFLICT (id) DO NOTHING;
    SELECT count(*)::integer INTO n_changes
      FROM callback_changes WHERE callback_id = ANY(v_callbacks);
    DELETE FROM callbacks WHERE id = ANY(v_callbacks);  -- their change audit with them
    GET DIAGNOSTICS n_callbacks = ROW_COUNT;

    UPDATE assignments
       SET notes = NULL,
           release_reason = CASE WHEN id = ANY(v_released) OR release_reason = 'erased'
                                 THEN 'erased' END,
           details = '{}', queue_reason = NULL, claim_id = NULL, phone_hash = NULL,
           updated_at = now()
     WHERE user_id = p_user
       AND (notes IS NOT NULL OR details <> '{}' OR queue_reason IS NOT NULL
            OR claim_id IS NOT NULL OR phone_hash IS NOT NULL
            OR release_reason <> 'erased'
            OR (id = ANY(v_released) AND release_reason IS NULL));
    GET DIAGNOSTICS n_ledger = ROW_COUNT;

    DELETE FROM user_call_scores WHERE user_id = p_user;
    GET DIAGNOSTICS n_scores = ROW_COUNT;

    UPDATE queue_transitions SET reason = 'erased'
     WHERE user_id = p_user AND reason <> 'erased';
    GET DIAGNOSTICS n_transitions = ROW_COUNT;
    UPDATE entry_invalidations SET reason = 'erased'
     WHERE user_id = p_user AND reason NOT IN ('erased', 'suppressed', 'attempt_cap');
    GET DIAGNOSTICS n_invalidations = ROW_COUNT;

    v_removed := jsonb_build_object(
        'user_call_scores', n_scores,
        'unsigned_users_queue', n_unsigned,
        'outstanding_requests_queue', n_outstanding,
        'callbacks', n_callbacks,
        'callback_changes', n_changes,
        'assignments_released', n_released,
        'assignments_cleared', n_ledger,
        'queue_transitions_cleared', n_transitions,
        'entry_invalidations_cleared', n_invalidations);
    INSERT INTO data_requests (action, user_id, agent_id, removed)
    VALUES ('erase', p_user, p_agent, v_removed);
    RETURN v_removed;
END $$
