CREATE FUNCTION cq_swap_lock_shared(p_queue text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_queue = 'unsigned_users' THEN PERFORM cq_swap_lock_shared_unsigned_users();
    ELSIF p_queue = 'outstanding_requests' THEN PERFORM cq_swap_lock_shared_outstanding_requests();
    ELSE RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
    END IF;
END $$
