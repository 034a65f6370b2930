-- Cancel an open callback with its reason (SPEC 7.2); false when it was no longer open.
CREATE FUNCTION cq_cancel_callback(p_id uuid, p_reason text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE callbacks
       SET status = 'cancelled', cancel_reason = p_reason, finished_at = clock_timestamp(),
           updated_at = now()
     WHERE id = p_id AND status IN ('scheduled', 'assigned');
    RETURN FOUND;
END $$
