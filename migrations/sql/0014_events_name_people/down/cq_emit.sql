-- Write one event to the outbox (SPEC 8.4), in the caller's transaction: the event exists if and
-- only if the change it reports commits. Written only while an enabled endpoint subscribes to its
-- type (a subscription starts when it is made), so a service with no endpoints writes nothing.
-- Payloads are thin: identifiers, times and outcomes, never names, numbers, emails or notes.
CREATE OR REPLACE FUNCTION cq_emit(p_type text, p_data jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_endpoints e
                WHERE e.enabled AND p_type = ANY(e.event_types)) THEN
        INSERT INTO webhook_events (type, data) VALUES (p_type, p_data);
    END IF;
END $$
