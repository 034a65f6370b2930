CREATE FUNCTION cq_set_entry(p_queue text, p_id uuid, p_status text, p_from text[],
                             p_agent integer, p_reason text, p_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_done boolean;
BEGIN
    IF p_queue = 'unsigned_users' THEN v_done := cq_set_entry_unsigned_users(p_id, p_status, p_from, p_agent, p_reason, p_at);
    ELSIF p_queue = 'outstanding_requests' THEN v_done := cq_set_entry_outstanding_requests(p_id, p_status, p_from, p_agent, p_reason, p_at);
    ELSE RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
    END IF;
    RETURN coalesce(v_done, false);
END $$
