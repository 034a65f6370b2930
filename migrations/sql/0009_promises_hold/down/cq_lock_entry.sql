CREATE FUNCTION cq_lock_entry(p_queue text, p_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_queue = 'unsigned_users' THEN PERFORM cq_lock_entry_unsigned_users(p_id);
    ELSIF p_queue = 'outstanding_requests' THEN PERFORM cq_lock_entry_outstanding_requests(p_id);
    ELSE RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
    END IF;
END $$
