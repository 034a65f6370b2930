-- Wait for a refresh of queue p_queue in progress, if any: its swap holds the queue's swap lock
-- (pg_advisory_xact_lock(1667329132, 1 or 2)) exclusively until it commits. Nothing else
-- needs it: writers of entries work under row locks, which the swap respects (app/queues/swap.py).
-- A claim takes it only when it found no entry to take (cq_claim), so that it answers from the
-- new snapshot instead of "empty" while a swap holds every old entry.
CREATE FUNCTION cq_swap_lock_shared(p_queue text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_queue = 'unsigned_users' THEN PERFORM pg_advisory_xact_lock_shared(1667329132, 1);
    ELSIF p_queue = 'outstanding_requests' THEN PERFORM pg_advisory_xact_lock_shared(1667329132, 2);
    ELSE RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
    END IF;
END $$
