CREATE FUNCTION cq_lock_entries_outstanding_requests(p_ids uuid[], OUT locked uuid[], OUT busy uuid[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    locked := ARRAY(SELECT e.id FROM outstanding_requests_queue e WHERE e.id = ANY(p_ids)
                     ORDER BY e.id FOR UPDATE SKIP LOCKED);
    busy := ARRAY(SELECT e.id FROM outstanding_requests_queue e WHERE e.id = ANY(p_ids)
                   AND NOT e.id = ANY(locked));
END $$
