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
