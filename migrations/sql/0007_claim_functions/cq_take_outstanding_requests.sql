CREATE FUNCTION cq_take_outstanding_requests()
RETURNS TABLE (item_id uuid, user_id bigint, claim_id bigint, priority_score integer,
               queue_position integer, queue_reason text, details jsonb)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM cq_swap_lock_shared_outstanding_requests();
    RETURN QUERY
        SELECT e.id, e.user_id, e.claim_id, e.priority_score, e.queue_position, e.queue_reason,
               jsonb_build_object('requirement_types', e.requirement_types, 'total_requirements', e.total_requirements, 'pending_requirements', e.pending_requirements, 'completed_requirements', e.completed_requirements, 'oldest_requirement_date', e.oldest_requirement_date)
          FROM outstanding_requests_queue e
         WHERE e.status = 'pending'
         ORDER BY e.queue_position, e.id
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
END $$
