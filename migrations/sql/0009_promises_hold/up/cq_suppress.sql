-- Add numbers (keyed hashes, app.rules.suppression) to the do-not-call list, each new one
-- audited; returns how many were new. One definition for the API, the import and the
-- do_not_contact outcome (cq_complete). Each number's lock (cq_number_lock) is taken exclusively
-- first, in ascending bucket order, so a hand-out of one of these numbers either committed
-- before or sees it on the list.
CREATE FUNCTION cq_suppress(p_hashes text[], p_source text, p_agent integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_hash text;
    v_added integer;
BEGIN
    FOR v_hash IN
        SELECT DISTINCT ON (left(h, 2)) h FROM unnest(p_hashes) AS h ORDER BY left(h, 2)
    LOOP
        PERFORM cq_number_lock(v_hash, true);
    END LOOP;
    WITH added AS (
        INSERT INTO suppressed_numbers (phone_hash, source, added_by)
        SELECT h, p_source, p_agent FROM unnest(p_hashes) AS h
        ON CONFLICT (phone_hash) DO NOTHING
        RETURNING phone_hash
    ), audited AS (
        INSERT INTO suppression_changes (action, phone_hash, source, agent_id)
        SELECT 'add', phone_hash, p_source, p_agent FROM added
        RETURNING 1
    )
    SELECT count(*)::integer INTO v_added FROM audited;
    RETURN v_added;
END $$
