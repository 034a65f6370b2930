CREATE FUNCTION cq_swap_lock_shared_unsigned_users() RETURNS void
LANGUAGE sql VOLATILE AS $$ SELECT pg_advisory_xact_lock_shared(1667329132, 1) $$
