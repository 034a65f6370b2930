CREATE FUNCTION cq_lock_entry_unsigned_users(p_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM unsigned_users_queue WHERE id = p_id FOR UPDATE;
END $$
