-- user.erased (SPEC 8.4): a new tombstone, written by cq_erase in the erasure's transaction (a
-- second erasure of the same person writes none, and reports nothing).
CREATE FUNCTION cq_erasure_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM cq_emit('user.erased',
                    jsonb_build_object('user_id', NEW.user_id, 'erased_at', NEW.erased_at));
    RETURN NULL;
END $$
