-- Mark callbacks that became overdue (still scheduled p_grace_minutes after due, SPEC 7.2) as
-- reported for their due time, at most p_limit of them; cq_callback_events writes
-- callback.overdue for each. SKIP LOCKED: a callback being handed out right now is not overdue.
-- Only while an enabled endpoint subscribes to callback.overdue: the marking locks the rows for
-- a moment, and a claim meeting one then serves the next source instead (SKIP LOCKED too).
-- Returns how many were marked.
CREATE FUNCTION cq_report_overdue(p_grace_minutes integer, p_limit integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_marked integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints e
                    WHERE e.enabled AND 'callback.overdue' = ANY(e.event_types)) THEN
        RETURN 0;
    END IF;
    UPDATE callbacks c SET overdue_reported_for = c.due_at
     WHERE c.id IN (SELECT o.id FROM callbacks o
                     WHERE o.status = 'scheduled'
                       AND o.due_at + make_interval(mins => p_grace_minutes) < now()
                       AND o.overdue_reported_for IS DISTINCT FROM o.due_at
                     ORDER BY o.due_at
                     LIMIT p_limit
                       FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_marked = ROW_COUNT;
    RETURN v_marked;
END $$
