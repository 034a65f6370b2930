CREATE FUNCTION cq_reclassify(p_users bigint[], p_to text[], p_reasons text[], p_from text,
                              p_source text, p_agent integer, p_run uuid)
RETURNS integer
LANGUAGE sql VOLATILE AS $$
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
        RETURNING 1
    )
    SELECT count(*)::integer FROM audited
$$
