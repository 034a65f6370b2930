CREATE FUNCTION cq_lock_entries_unsigned_users(p_ids uuid[], OUT locked uuid[], OUT busy uuid[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    locked := ARRAY(SELECT e.id FROM unsigned_users_queue e WHERE e.id = ANY(p_ids)
                     ORDER BY e.id FOR UPDATE SKIP LOCKED);
    busy := ARRAY(SELECT e.id FROM unsigned_users_queue e WHERE e.id = ANY(p_ids)
                   AND NOT e.id = ANY(locked));
END $$
