-- The leads of a queue type that may be called now (SPEC 3.2, below the attempt caps of
-- SPEC 7.3, without an open callback of SPEC 7.2): what a population walks and what direct
-- mode serves from, in serving order (score, newest first, user id). A SQL function the planner
-- inlines into the calling query, so the ORDER BY still walks the partial index
-- ix_user_call_scores_population and a population can stream it.
--
-- held: someone holds the lead now (an active assignment whose lease runs). Direct mode skips
-- them. A population classifies them too but does not count them towards the queue's size: if
-- they are given back while it builds its snapshot (released with re-queue, or their lease
-- lapses), the swap puts them in the new snapshot; if they are still held, it leaves them out
-- (SPEC 8.1, nobody falls out of the queue). A lead whose lease has lapsed is an ordinary
-- candidate: the swap sweeps the lapsed lease first (direct mode skips them until a sweep).
CREATE FUNCTION cq_candidates(p_queue text, p_cooling_minutes integer, p_max_day integer,
                              p_max_week integer)
RETURNS TABLE (user_id bigint, current_score integer, created_at timestamptz, held boolean)
LANGUAGE sql STABLE AS $$
    SELECT s.user_id, s.current_score, s.created_at,
           EXISTS (SELECT 1 FROM assignments a
                    WHERE a.user_id = s.user_id AND a.status = 'active'
                      AND a.lease_expires_at > now()) AS held
      FROM user_call_scores s
     WHERE s.current_queue_type = p_queue
       AND s.is_active
       AND (s.next_call_after IS NULL OR s.next_call_after <= now())
       AND s.created_at <= now() - make_interval(mins => p_cooling_minutes)
       AND NOT EXISTS (SELECT 1 FROM callbacks c
                        WHERE c.user_id = s.user_id AND c.status IN ('scheduled', 'assigned'))
       AND callqueue_attempt_cap(s.user_id, p_max_day, p_max_week) IS NULL
     ORDER BY s.current_score, s.created_at DESC, s.user_id
$$
