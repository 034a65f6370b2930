-- Give a live assignment's user back (SPEC 3.3): re-queued (the entry 'pending' again, same
-- position) or skipped (the entry 'skipped', the person not called again for p_skip_minutes). A
-- callback being served goes back to 'scheduled': still due when re-queued, due again after the
-- skip cooldown when skipped (SPEC 7.2, 8.1). p_agent: the holder, or NULL for a supervisor's
-- forced release of anyone's assignment. Results: released, not_found (no such assignment for
-- this agent), not_active (it is no longer live).
--
-- Locks in the order every path takes them, each by a statement of its own: the entry, the
-- callback (source rows), the ledger row, then the score row.
CREATE FUNCTION cq_release(p_assignment uuid, p_agent integer, p_requeue boolean,
                           p_reason text, p_skip_minutes integer)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    h record;
    a assignments;
BEGIN
    -- The head (queue, entry, callback) never changes after the hand-out: read without a lock.
    SELECT agent_id, queue_type, queue_entry_id, callback_id INTO h
      FROM assignments WHERE id = p_assignment;
    IF NOT FOUND OR h.agent_id <> coalesce(p_agent, h.agent_id) THEN
        RETURN 'not_found';
    END IF;
    IF h.queue_entry_id IS NOT NULL THEN
        PERFORM cq_lock_entry(h.queue_type, h.queue_entry_id);
    END IF;
    IF h.callback_id IS NOT NULL THEN
        PERFORM 1 FROM callbacks WHERE id = h.callback_id FOR UPDATE;
    END IF;
    UPDATE assignments
       SET status = 'released', release_reason = p_reason, finished_at = clock_timestamp(),
           updated_at = clock_timestamp()
     WHERE id = p_assignment AND status = 'active' AND lease_expires_at > now()
    RETURNING * INTO a;
    IF NOT FOUND THEN
        RETURN 'not_active';
    END IF;
    IF a.queue_entry_id IS NOT NULL THEN
        PERFORM cq_set_entry(a.queue_type, a.queue_entry_id,
                             CASE WHEN p_requeue THEN 'pending' ELSE 'skipped' END,
                             ARRAY['assigned'], NULL, NULL, NULL);
    END IF;
    IF a.callback_id IS NOT NULL THEN
        UPDATE callbacks
           SET status = 'scheduled',
               due_at = CASE WHEN NOT p_requeue AND p_skip_minutes > 0
                             THEN GREATEST(due_at, now() + make_interval(mins => p_skip_minutes))
                             ELSE due_at END,
               updated_at = now()
         WHERE id = a.callback_id AND assignment_id = a.id AND status = 'assigned';
    END IF;
    IF NOT p_requeue AND p_skip_minutes > 0 THEN
        UPDATE user_call_scores
           SET next_call_after = GREATEST(coalesce(next_call_after, now()),
                                          now() + make_interval(mins => p_skip_minutes)),
               updated_at = now()
         WHERE user_id = a.user_id;
    END IF;
    RETURN 'released';
END $$
