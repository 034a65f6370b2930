-- Changing lead types, always with their audit rows (SPEC 3.1), and the people's open callbacks
-- with them (SPEC 8.1): moved to the new queue type, or cancelled ('no_queue') for someone who
-- belongs to no queue any more. The guard on the old value (p_from) means a concurrent outcome or
-- another reclassification is never overwritten with a stale verdict. Returns how many moved.
--
-- The locks, each by a statement of its own, in the order every path takes them: the people's
-- open callbacks (source rows) by id, then their score rows by user id. Two reclassifications,
-- or one and a scores upsert (which locks score rows by user id too), queue up on the first row
-- they share instead of deadlocking.
CREATE FUNCTION cq_reclassify(p_users bigint[], p_to text[], p_reasons text[], p_from text,
                              p_source text, p_agent integer, p_run uuid)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_users bigint[];
    v_types text[];
BEGIN
    PERFORM 1 FROM callbacks c
      WHERE c.user_id = ANY(p_users) AND c.status IN ('scheduled', 'assigned')
      ORDER BY c.id
        FOR UPDATE;
    PERFORM 1 FROM user_call_scores s
      WHERE s.user_id = ANY(p_users)
      ORDER BY s.user_id
        FOR UPDATE;
    WITH changes AS (
        SELECT * FROM unnest(p_users, p_to, p_reasons) AS c(user_id, to_type, reason)
    ), moved AS (
        UPDATE user_call_scores s
           SET current_queue_type = c.to_type, last_queue_check = now(), updated_at = now()
          FROM changes c
         WHERE s.user_id = c.user_id
           AND s.current_queue_type IS NOT DISTINCT FROM p_from
           AND s.current_queue_type IS DISTINCT FROM c.to_type
        RETURNING s.user_id, c.to_type, c.reason
    ), audited AS (
        INSERT INTO queue_transitions
               (user_id, from_queue_type, to_queue_type, reason, source, agent_id, run_id)
        SELECT user_id, p_from, to_type, reason, p_source, p_agent, p_run FROM moved
        RETURNING user_id, to_queue_type
    )
    SELECT coalesce(array_agg(user_id), '{}'), coalesce(array_agg(to_queue_type), '{}')
      INTO v_users, v_types
      FROM audited;
    UPDATE callbacks c
       SET queue_type = m.to_type, updated_at = now()
      FROM unnest(v_users, v_types) AS m(user_id, to_type)
     WHERE c.user_id = m.user_id AND c.status IN ('scheduled', 'assigned')
       AND m.to_type IS NOT NULL;
    PERFORM cq_cancel_callback(c.id, 'no_queue')
       FROM callbacks c
       JOIN unnest(v_users, v_types) AS m(user_id, to_type) ON m.user_id = c.user_id
      WHERE c.status IN ('scheduled', 'assigned') AND m.to_type IS NULL;
    RETURN cardinality(v_users);
END $$
