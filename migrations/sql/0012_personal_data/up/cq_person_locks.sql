-- The lock that keeps an erased person erased (SPEC 8.3): a transaction-scoped advisory lock on
-- each person's bucket (user id modulo 256; namespace 1701994867, 'eras' in ASCII), taken in
-- ascending bucket order. Every writer that creates score rows (the scores API, the CSV import,
-- discovery: app/intake/rows.py) takes its batch's buckets shared before it looks for
-- tombstones; an erasure takes its person's bucket exclusively before it writes the tombstone.
-- So a writer either finished before the erasure (whose deletes then remove what it wrote) or
-- sees the tombstone. Taken first, before any row lock, by both.
CREATE FUNCTION cq_person_locks(p_users bigint[], p_exclusive boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_bucket integer;
BEGIN
    FOR v_bucket IN
        SELECT DISTINCT (u % 256)::integer FROM unnest(p_users) AS u ORDER BY 1
    LOOP
        IF p_exclusive THEN
            PERFORM pg_advisory_xact_lock(1701994867, v_bucket);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(1701994867, v_bucket);
        END IF;
    END LOOP;
END $$
