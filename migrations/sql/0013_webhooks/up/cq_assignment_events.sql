-- The ledger's events (SPEC 8.4), from the one table every hand-out and every ending of one
-- writes, whichever path wrote it (claims of every source, completions, releases, sweeps,
-- erasure): a new row is assignment.started; a row leaving 'active' is assignment.completed,
-- .released or .expired. A completion with the do_not_contact outcome also reports
-- user.suppressed: the person asked not to be called (their number went on the list in the same
-- transaction). Fired by the triggers of migration 0013 (AFTER INSERT; AFTER UPDATE OF status
-- when a row leaves 'active').
CREATE FUNCTION cq_assignment_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_data jsonb;
BEGIN
    v_data := jsonb_build_object(
        'assignment_id', NEW.id, 'user_id', NEW.user_id, 'agent_id', NEW.agent_id,
        'queue_type', NEW.queue_type, 'source', NEW.source, 'callback_id', NEW.callback_id,
        'assigned_at', NEW.assigned_at);
    IF TG_OP = 'INSERT' THEN
        PERFORM cq_emit('assignment.started',
                        v_data || jsonb_build_object('lease_expires_at', NEW.lease_expires_at));
        RETURN NULL;
    END IF;
    v_data := v_data || jsonb_build_object('finished_at', NEW.finished_at);
    IF NEW.status = 'completed' THEN
        PERFORM cq_emit('assignment.completed',
                        v_data || jsonb_build_object('outcome', NEW.outcome,
                                                     'callback_at', NEW.callback_at));
        IF NEW.outcome = 'do_not_contact' THEN
            PERFORM cq_emit('user.suppressed',
                            jsonb_build_object('user_id', NEW.user_id,
                                               'assignment_id', NEW.id,
                                               'agent_id', NEW.agent_id,
                                               'suppressed_at', NEW.finished_at));
        END IF;
    ELSIF NEW.status = 'released' THEN
        PERFORM cq_emit('assignment.released', v_data);
    ELSIF NEW.status = 'expired' THEN
        PERFORM cq_emit('assignment.expired', v_data);
    END IF;
    RETURN NULL;
END $$
