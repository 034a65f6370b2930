-- Lock one entry of outstanding_requests_queue (an action on an assignment that has one).
CREATE FUNCTION cq_lock_entry_outstanding_requests(p_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM outstanding_requests_queue WHERE id = p_id FOR UPDATE;
END $$
