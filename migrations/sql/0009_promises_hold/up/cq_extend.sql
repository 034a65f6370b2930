-- A new lease of p_lease_seconds from now for the holder's live assignment (SPEC 3.3). Only the
-- ledger row changes. Results: extended, not_found (no such assignment for this agent),
-- not_active (it is no longer live).
CREATE FUNCTION cq_extend(p_assignment uuid, p_agent integer, p_lease_seconds integer)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    a assignments;
BEGIN
    SELECT * INTO a FROM assignments WHERE id = p_assignment FOR UPDATE;
    IF NOT FOUND OR a.agent_id <> p_agent THEN
        RETURN 'not_found';
    END IF;
    IF a.status <> 'active' OR a.lease_expires_at <= now() THEN
        RETURN 'not_active';
    END IF;
    UPDATE assignments
       SET lease_expires_at = now() + make_interval(secs => p_lease_seconds), updated_at = now()
     WHERE id = p_assignment;
    RETURN 'extended';
END $$
