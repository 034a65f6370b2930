-- Fan the outbox out (SPEC 8.4): each undispatched event, in the order it was written, becomes a
-- delivery to every enabled endpoint subscribed to its type that existed when it was written,
-- numbered in that endpoint's sequence (a test event is written dispatched, with its delivery). One dispatcher at a
-- time (an advisory lock, not waited for: namespace 1751672680, 'webh'), so the sequence follows
-- the outbox's order; up to p_limit events per call. Returns how many events it dispatched, or
-- NULL when another process is dispatching.
CREATE FUNCTION cq_webhook_dispatch(p_limit integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_events uuid[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(1751672680, 1) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(id ORDER BY position) INTO v_events
      FROM (SELECT ev.id, ev.position FROM webhook_events ev
             WHERE NOT ev.dispatched ORDER BY ev.position LIMIT p_limit) batch;
    IF v_events IS NULL THEN
        RETURN 0;
    END IF;
    -- Each endpoint's sequence numbers, taken under its row's lock, then counted out in the
    -- outbox's order. The only transaction that locks more than one endpoint row, and one at a
    -- time (the advisory lock above): every other writer locks one, so no cycle can form.
    WITH pairs AS (
        SELECT ev.id AS event_id, e.id AS endpoint_id, ev.position
          FROM webhook_events ev
          JOIN webhook_endpoints e
            ON e.enabled AND ev.type = ANY(e.event_types) AND e.created_at <= ev.occurred_at
         WHERE ev.id = ANY(v_events)
    ), counted AS (
        SELECT endpoint_id, count(*) AS n FROM pairs GROUP BY endpoint_id
    ), taken AS (
        UPDATE webhook_endpoints e SET next_seq = e.next_seq + c.n
          FROM counted c
         WHERE e.id = c.endpoint_id
        RETURNING e.id, e.next_seq - c.n AS first_seq
    )
    INSERT INTO webhook_deliveries (event_id, endpoint_id, seq, next_attempt_at)
    SELECT p.event_id, p.endpoint_id,
           t.first_seq + row_number() OVER (PARTITION BY p.endpoint_id ORDER BY p.position) - 1,
           now()
      FROM pairs p JOIN taken t ON t.id = p.endpoint_id;
    UPDATE webhook_events SET dispatched = true WHERE id = ANY(v_events);
    RETURN cardinality(v_events);
END $$
