-- Record a source that failed its checks, so the next attempt moves on; and, when the replica
-- placed the user elsewhere, move the user (with the audit row; cq_reclassify moves their open
-- callback with them, or cancels it when they belong to no queue). A queue entry becomes p_status
-- ('invalid', or 'skipped' for an attempt cap) with the reason. A callback stays as it is while
-- someone else holds the person or while they are at an attempt cap: a promised call is kept,
-- late if need be, never cancelled for a cap (SPEC 8.1). One whose person is in another queue
-- than the callback follows them; otherwise it is cancelled with the reason. Every source leaves a
-- row in entry_invalidations, which outlives refreshes.
CREATE FUNCTION cq_invalidate(p_agent integer, p_queue text, p_source text, p_item uuid,
                              p_user bigint, p_status text, p_reason text,
                              p_reclassify boolean, p_to text, p_to_reason text)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_source = 'queue' THEN
        PERFORM cq_set_entry(p_queue, p_item, p_status, ARRAY['pending'], p_agent, p_reason,
                             NULL);
    ELSIF p_source = 'callback' AND NOT p_reclassify
          AND p_reason NOT IN ('already_assigned', 'attempt_cap') THEN
        IF p_reason = 'queue_type_changed' THEN
            UPDATE callbacks c SET queue_type = s.current_queue_type, updated_at = now()
              FROM user_call_scores s
             WHERE c.id = p_item AND c.status = 'scheduled' AND s.user_id = c.user_id
               AND s.current_queue_type IS NOT NULL;
            IF NOT FOUND THEN
                PERFORM cq_cancel_callback(p_item, 'no_queue');
            END IF;
        ELSE
            PERFORM cq_cancel_callback(p_item, p_reason);
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
