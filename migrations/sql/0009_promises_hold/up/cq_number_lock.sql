-- The do-not-call list's lock on a number (SPEC 8.1): a transaction-scoped advisory lock on the
-- number's bucket, the first byte of its keyed hash (one of 256; a number is never stored in the
-- clear). A hand-out takes it shared just before it checks the number against the list
-- (cq_hand_out); adding numbers takes it exclusively, bucket by bucket in ascending order
-- (cq_suppress). So a do_not_contact and a hand-out of the same number are serialised: once the
-- outcome has committed, a hand-out of that number sees it on the list; a hand-out that got the
-- lock first commits before the outcome can. Taken last, after every row lock, by both.
-- Namespace 1684627820 is 'dial' in ASCII.
CREATE FUNCTION cq_number_lock(p_hash text, p_exclusive boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_bucket integer := ('x' || left(p_hash, 2))::bit(8)::integer;
BEGIN
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(1684627820, v_bucket);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(1684627820, v_bucket);
    END IF;
END $$
