-- Whether the calling process's SUPPRESSION_KEY is the one the do-not-call list was built with
-- (SPEC 8.1): its fingerprint (app.rules.suppression) against the stored one, which the first
-- process that needs it records. A process with another key would hash every number differently
-- and call suppressed people: it hands nobody out (cq_hand_out) and writes no hash.
CREATE FUNCTION cq_key_matches(p_fingerprint text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_stored text;
BEGIN
    SELECT fingerprint INTO v_stored FROM suppression_key_check WHERE id = 1;
    IF NOT FOUND THEN
        INSERT INTO suppression_key_check (id, fingerprint) VALUES (1, p_fingerprint)
        ON CONFLICT (id) DO NOTHING;
        SELECT fingerprint INTO v_stored FROM suppression_key_check WHERE id = 1;
    END IF;
    RETURN v_stored = p_fingerprint;
END $$
