CREATE FUNCTION cq_suppress(p_hashes text[], p_source text, p_agent integer)
RETURNS integer
LANGUAGE sql VOLATILE AS $$
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
    SELECT count(*)::integer FROM audited
$$
