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
