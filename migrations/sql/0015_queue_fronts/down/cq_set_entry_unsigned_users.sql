-- Move one entry of unsigned_users_queue to a status, from one of the statuses it may be in. Assigning it
-- records the hand-out (agent p_agent at p_at, the ledger row's assigned_at); moving it on from
-- 'assigned' with p_at given changes it only while it is still that hand-out's.
CREATE OR REPLACE FUNCTION cq_set_entry_unsigned_users(p_id uuid, p_status text, p_from text[], p_agent integer,
                                     p_reason text, p_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE unsigned_users_queue
       SET status = p_status,
           assigned_to_agent = CASE p_status WHEN 'assigned' THEN p_agent
                                             WHEN 'completed' THEN assigned_to_agent END,
           assigned_at = CASE p_status WHEN 'assigned' THEN p_at
                                       WHEN 'completed' THEN assigned_at END,
           invalid_reason = CASE WHEN p_status IN ('invalid', 'skipped') THEN p_reason
                                 ELSE invalid_reason END,
           updated_at = now()
     WHERE id = p_id AND status = ANY(p_from)
       AND (p_status = 'assigned' OR p_at IS NULL
            OR (assigned_to_agent = p_agent AND assigned_at = p_at));
    RETURN FOUND;
END $$
