CREATE FUNCTION cq_candidates(p_queue text, p_cooling_minutes integer, p_live_leases_only boolean,
                              p_max_day integer, p_max_week integer)
RETURNS TABLE (user_id bigint, current_score integer, created_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.user_id, s.current_score, s.created_at
      FROM user_call_scores s
     WHERE s.current_queue_type = p_queue
       AND s.is_active
       AND (s.next_call_after IS NULL OR s.next_call_after <= now())
       AND s.created_at <= now() - make_interval(mins => p_cooling_minutes)
       AND NOT EXISTS (SELECT 1 FROM assignments a
                        WHERE a.user_id = s.user_id AND a.status = 'active'
                          AND (NOT p_live_leases_only OR a.lease_expires_at > now()))
       -- A person with an open callback comes back through the callback only (SPEC 7.2).
       AND NOT EXISTS (SELECT 1 FROM callbacks c
                        WHERE c.user_id = s.user_id AND c.status IN ('scheduled', 'assigned'))
       AND callqueue_attempt_cap(s.user_id, p_max_day, p_max_week) IS NULL
     ORDER BY s.current_score, s.created_at DESC, s.user_id
$$
