-- A supervisor's change to an open callback (SPEC 7.2), audited in callback_changes in the same
-- transaction: 'cancel' (one being served stays with its agent until the call ends; the callback
-- itself is no longer kept) or 'reassign' to p_to_agent (theirs first from now on). Only the
-- callback's row is locked: a source row, the first lock of the order. Results: done, not_found,
-- not_open (finished already).
CREATE FUNCTION cq_change_callback(p_id uuid, p_action text, p_by integer, p_to_agent integer,
                                   p_reason text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c callbacks;
BEGIN
    SELECT * INTO c FROM callbacks WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF c.status NOT IN ('scheduled', 'assigned') THEN
        RETURN 'not_open';
    END IF;
    IF p_action = 'cancel' THEN
        -- The free text stays in the audit row; the callback says who ended it.
        PERFORM cq_cancel_callback(p_id, 'supervisor');
    ELSIF p_action = 'reassign' THEN
        UPDATE callbacks SET owner_agent_id = p_to_agent, updated_at = now() WHERE id = p_id;
    ELSE
        RAISE EXCEPTION USING MESSAGE = 'unknown callback change ' || p_action;
    END IF;
    INSERT INTO callback_changes
           (callback_id, action, agent_id, old_owner_agent_id, new_owner_agent_id, reason)
    VALUES (p_id, p_action, p_by, c.owner_agent_id,
            CASE WHEN p_action = 'reassign' THEN p_to_agent END, p_reason);
    RETURN 'done';
END $$
