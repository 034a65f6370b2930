-- The callbacks' events (SPEC 8.4): a new callback is callback.booked (by an outcome or by a
-- supervisor); one leaving for 'cancelled' is callback.cancelled; cq_report_overdue setting
-- overdue_reported_for is callback.overdue. No reason text: a supervisor may write anything
-- there. Fired by the triggers of migration 0013.
CREATE FUNCTION cq_callback_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_data jsonb;
BEGIN
    v_data := jsonb_build_object(
        'callback_id', NEW.id, 'user_id', NEW.user_id, 'queue_type', NEW.queue_type,
        'due_at', NEW.due_at, 'owner_agent_id', NEW.owner_agent_id);
    IF TG_OP = 'INSERT' THEN
        PERFORM cq_emit('callback.booked',
                        v_data || jsonb_build_object('booked_by_assignment_id',
                                                     NEW.booked_by_assignment_id));
    ELSIF NEW.status = 'cancelled' AND OLD.status <> 'cancelled' THEN
        PERFORM cq_emit('callback.cancelled',
                        v_data || jsonb_build_object('cancelled_at', NEW.finished_at));
    ELSIF NEW.overdue_reported_for IS DISTINCT FROM OLD.overdue_reported_for
          AND NEW.overdue_reported_for IS NOT NULL THEN
        PERFORM cq_emit('callback.overdue', v_data);
    END IF;
    RETURN NULL;
END $$
