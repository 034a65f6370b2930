-- Why a score row may not be handed out for queue p_queue now (NULL when it may).
CREATE FUNCTION cq_score_problem(p_is_active boolean, p_queue_type text,
                                 p_next_call_after timestamptz, p_queue text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_is_active IS NULL THEN 'score_row_missing'
                WHEN NOT p_is_active THEN 'inactive'
                WHEN p_queue_type IS DISTINCT FROM p_queue THEN 'queue_type_changed'
                WHEN p_next_call_after > now() THEN 'not_due' END
$$
