-- Move queue p_queue's front up to its first pending entry that was never handed out; returns
-- the front. Claims look for entries from the front on (and for put-back entries through their
-- own small index), so they do not step over the entries handed out before it, which stay in
-- the claim-order index as dead row versions for as long as any transaction's snapshot may still
-- see them (a report or a backup holding one for minutes: every claim would read them all).
--
-- Why the front is safe: an entry that was never handed out becomes pending only in a swap
-- (which sets the front back to 0 in its own transaction), and only leaves pending otherwise, so
-- the first such entry only moves up between swaps; entries that become pending again are
-- put_back (cq_set_entry_<queue>) and found through ix_<queue>_put_back wherever they are.
-- The front row is locked before the queue is read, in a statement of its own (and the look
-- starts at the front, so it too steps only over what was handed out since): a swap that
-- changed the front commits before this statement's snapshot is taken, or waits for this
-- function's transaction and sets the front after it. With no such entry left, the front goes
-- past every position (the next swap sets it back). A queue without a front row (claims read
-- that as 0) gets one here, and in a swap (each insert waits for the other's transaction).
CREATE FUNCTION cq_advance_front(p_queue text) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_front integer;
    v_first integer;
BEGIN
    INSERT INTO queue_fronts (queue_type) VALUES (p_queue) ON CONFLICT (queue_type) DO NOTHING;
    SELECT f.position INTO STRICT v_front FROM queue_fronts f
     WHERE f.queue_type = p_queue FOR UPDATE;
    IF p_queue = 'unsigned_users' THEN
        SELECT e.queue_position INTO v_first FROM unsigned_users_queue e
         WHERE e.status = 'pending' AND NOT e.put_back AND e.queue_position >= v_front
         ORDER BY e.queue_position, e.id LIMIT 1;
    ELSIF p_queue = 'outstanding_requests' THEN
        SELECT e.queue_position INTO v_first FROM outstanding_requests_queue e
         WHERE e.status = 'pending' AND NOT e.put_back AND e.queue_position >= v_front
         ORDER BY e.queue_position, e.id LIMIT 1;
    ELSE
        RAISE EXCEPTION USING MESSAGE = 'unknown queue type ' || p_queue;
    END IF;
    v_first := coalesce(v_first, 2147483647);
    UPDATE queue_fronts SET position = v_first, updated_at = now()
     WHERE queue_type = p_queue AND position <> v_first;
    RETURN v_first;
END $$
