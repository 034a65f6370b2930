CREATE FUNCTION cq_sweep(p_limit integer) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_overdue uuid[];
    v_entries uuid[];
    v_busy uuid[] := '{}';
    v_lock record;
    v_counts jsonb;
    v_types text[];
    v_back uuid[];
    v_callbacks uuid[];
    v_locked_callbacks uuid[];
    v_expired_callbacks uuid[];
    v_expired_hand_outs uuid[];
BEGIN
    PERFORM cq_swap_lock_shared_unsigned_users();
    PERFORM cq_swap_lock_shared_outstanding_requests();
    v_overdue := ARRAY(SELECT id FROM assignments
                        WHERE status = 'active' AND lease_expires_at <= now()
                        ORDER BY lease_expires_at LIMIT p_limit);
    IF cardinality(v_overdue) = 0 THEN
        RETURN '{}';
    END IF;
    v_entries := ARRAY(SELECT queue_entry_id FROM assignments
                        WHERE id = ANY(v_overdue) AND queue_entry_id IS NOT NULL);
    SELECT * INTO v_lock FROM cq_lock_entries_unsigned_users(v_entries);
    v_busy := v_busy || v_lock.busy;
    SELECT * INTO v_lock FROM cq_lock_entries_outstanding_requests(v_entries);
    v_busy := v_busy || v_lock.busy;
    -- The callbacks being served, locked like the entries: one another transaction holds (a
    -- completion, a release, a supervisor) keeps its assignment for a later sweep.
    v_callbacks := ARRAY(SELECT callback_id FROM assignments
                          WHERE id = ANY(v_overdue) AND callback_id IS NOT NULL);
    v_locked_callbacks := ARRAY(SELECT c.id FROM callbacks c WHERE c.id = ANY(v_callbacks)
                                 ORDER BY c.id FOR UPDATE SKIP LOCKED);
    WITH lapsed AS (
        SELECT id FROM assignments
         WHERE id = ANY(v_overdue)
           AND (queue_entry_id IS NULL OR NOT queue_entry_id = ANY(v_busy))
           AND (callback_id IS NULL OR callback_id = ANY(v_locked_callbacks))
         ORDER BY id
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        UPDATE assignments a
           SET status = 'expired', finished_at = clock_timestamp(), updated_at = clock_timestamp()
          FROM lapsed
         WHERE a.id = lapsed.id AND a.status = 'active' AND a.lease_expires_at <= now()
        RETURNING a.id, a.queue_type, a.queue_entry_id, a.callback_id
    )
    SELECT array_agg(queue_type), array_agg(queue_entry_id),
           array_agg(callback_id) FILTER (WHERE callback_id IS NOT NULL),
           array_agg(id) FILTER (WHERE callback_id IS NOT NULL)
      INTO v_types, v_back, v_expired_callbacks, v_expired_hand_outs FROM expired;
    PERFORM cq_set_entry_unsigned_users(r.entry_id, 'pending', ARRAY['assigned'], NULL, NULL, NULL)
       FROM unnest(v_types, v_back) AS r(queue_type, entry_id)
      WHERE r.queue_type = 'unsigned_users' AND r.entry_id IS NOT NULL;
    PERFORM cq_set_entry_outstanding_requests(r.entry_id, 'pending', ARRAY['assigned'], NULL, NULL, NULL)
       FROM unnest(v_types, v_back) AS r(queue_type, entry_id)
      WHERE r.queue_type = 'outstanding_requests' AND r.entry_id IS NOT NULL;
    -- A callback whose hand-out lapsed is due again (SPEC 7.2); its due time stays.
    UPDATE callbacks c
       SET status = 'scheduled', updated_at = now()
      FROM unnest(v_expired_callbacks, v_expired_hand_outs) AS x(callback_id, assignment_id)
     WHERE c.id = x.callback_id AND c.assignment_id = x.assignment_id AND c.status = 'assigned';
    SELECT coalesce(jsonb_object_agg(t, n), '{}') INTO v_counts
      FROM (SELECT t, count(*) AS n FROM unnest(v_types) AS t GROUP BY t) AS per_queue;
    RETURN v_counts;
END $$
