-- The first due callback agent p_agent may serve from queue p_queue, locked (FOR UPDATE SKIP
-- LOCKED, like an entry), or no row (SPEC 7.2). In serving order, each step an index range:
--   1. the agent's own, oldest due_at first (ix_callbacks_scheduled_owner_due);
--   2. anyone's whose owner's personal window (p_personal_minutes after due_at) has passed,
--      oldest first (ix_callbacks_scheduled_queue_due, bounded by now() - the window);
--   3. those of deactivated owners still inside the window (the owner index, per owner).
-- Every callback of step 2 was due before any of step 3, so the order is oldest first across
-- both. A callback whose person moved to the other queue follows them there; one whose person is
-- gone, deactivated or in no queue is cancelled with that reason. Each of those changes its row,
-- so the walk goes on to the next. One whose person is at the weekly cap (a callback is exempt
-- from the daily one) is passed over and stays scheduled: it is served once the cap allows, and
-- shows as overdue meanwhile (SPEC 8.1).
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
    v_passed bigint[] := p_tried;
BEGIN
    LOOP
        SELECT c.id, c.user_id INTO v_callback
          FROM callbacks c
         WHERE c.status = 'scheduled' AND c.owner_agent_id = p_agent
           AND c.due_at <= now() AND c.queue_type = p_queue
           AND NOT c.user_id = ANY(v_passed)
         ORDER BY c.due_at, c.id
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            SELECT c.id, c.user_id INTO v_callback
              FROM callbacks c
             WHERE c.status = 'scheduled' AND c.queue_type = p_queue
               AND c.due_at <= now() - make_interval(mins => p_personal_minutes)
               AND NOT c.user_id = ANY(v_passed)
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
               AND NOT c.user_id = ANY(v_passed)
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
            -- At the weekly cap: the callback waits, untouched, until the cap allows.
            v_passed := v_passed || v_callback.user_id;
            CONTINUE;
        END IF;
        RETURN QUERY SELECT v_callback.id, v_callback.user_id, v_score.current_score;
        RETURN;
    END LOOP;
END $$
