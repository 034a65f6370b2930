-- cq_swap_lock_shared without the wait: true when the queue's swap lock is taken (shared, until
-- the transaction ends; at once if this transaction holds it already), false at once when a
-- swap holds it. For a transaction that may hold rows a swap takes after its lock (cq_claim):
-- waiting there could close a cycle.
CREATE FUNCTION cq_swap_lock_try_shared(p_queue text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_queue = 'unsigned_users' THEN RETURN pg_try_advisory_xact_lock_shared(1667329132, 1);
    ELSIF p_queue = 'outstanding_requests' THEN
        RETURN pg_try_advisory_xact_lock_shared(1667329132, 2);
    ELSE RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
    END IF;
END $$
