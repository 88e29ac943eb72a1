-- Projection at ingest speed (issue 12): the synced tables' references to `wecom_events` stop being foreign keys.
--
-- Every `last_event_id` / `event_id` the projector writes is the id of an event it read in the same
-- transaction, so the references hold by construction. As foreign keys they cost every write a lookup that
-- also locks the referenced event row (FOR KEY SHARE: a write to the wide event row's header, so its page and
-- WAL), which was about a third of a 1M-event rebuild's time and a tenth of the applier's. Events are deleted
-- only by the service-provider purge (`store::corps`), which deletes the corp's synced rows first; a done job
-- may keep the id of a purged event (informational only).
DO $$
DECLARE c record;
BEGIN
    FOR c IN
        SELECT conrelid::regclass AS tbl, conname
        FROM pg_constraint
        WHERE contype = 'f' AND confrelid = 'wecom_events'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
END
$$;
