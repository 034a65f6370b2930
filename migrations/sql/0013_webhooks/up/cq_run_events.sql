-- population.finished and discovery.finished (SPEC 8.4): a run's row leaving 'running', with its
-- figures (a population's per queue, as GET /api/population-runs reports them).
CREATE FUNCTION cq_run_events() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF TG_TABLE_NAME = 'population_runs' THEN
        PERFORM cq_emit('population.finished', jsonb_build_object(
            'run_id', NEW.id, 'status', NEW.status, 'trigger', NEW.trigger,
            'dry_run', NEW.dry_run, 'queue', NEW.queue_filter,
            'started_at', NEW.started_at, 'finished_at', NEW.finished_at,
            'queues', (SELECT coalesce(jsonb_object_agg(q.queue_type, jsonb_build_object(
                                 'status', q.status, 'eligible', q.eligible,
                                 'invalid', q.invalid, 'populated', q.populated,
                                 'removed', q.removed, 'kept_assigned', q.kept_assigned)),
                                 '{}'::jsonb)
                         FROM population_run_queues q WHERE q.run_id = NEW.id)));
    ELSE
        PERFORM cq_emit('discovery.finished', jsonb_build_object(
            'run_id', NEW.id, 'status', NEW.status, 'trigger', NEW.trigger,
            'started_at', NEW.started_at, 'finished_at', NEW.finished_at,
            'created', NEW.created, 'reclassified', NEW.reclassified));
    END IF;
    RETURN NULL;
END $$
