CREATE FUNCTION cq_take_unsigned_users()
RETURNS TABLE (item_id uuid, user_id bigint, claim_id bigint, priority_score integer,
               queue_position integer, queue_reason text, details jsonb)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM cq_swap_lock_shared_unsigned_users();
    RETURN QUERY
        SELECT e.id, e.user_id, e.claim_id, e.priority_score, e.queue_position, e.queue_reason,
               jsonb_build_object('signature_missing_since', e.signature_missing_since, 'signature_type', e.signature_type)
          FROM unsigned_users_queue e
         WHERE e.status = 'pending'
         ORDER BY e.queue_position, e.id
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
END $$
