-- Projection at ingest speed (issue 12): which events wait to be applied moves out of the wide event row.
--
-- Marking an event applied used to rewrite its `wecom_events` row (`applied_at`): a non-HOT update of a ~1 KB
-- row that inserted into every index of the table, about half of the applier's statement time. Now an event
-- waits in `wecom_events_pending` (its id only) from the statement that stores it until the transaction that
-- applies it deletes it: the receiver's insert adds one narrow row, and applying writes no version of the
-- event row at all. The row is added by a statement-level trigger, so every path that stores events (the
-- receiver, the spool drain, tools, tests) queues them without knowing about it.
CREATE TABLE wecom_events_pending (
    id BIGINT PRIMARY KEY
);

INSERT INTO wecom_events_pending (id) SELECT id FROM wecom_events WHERE applied_at IS NULL;

CREATE FUNCTION wecom_events_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wecom_events_pending (id) SELECT id FROM inserted;
    RETURN NULL;
END
$$;

CREATE TRIGGER wecom_events_queue AFTER INSERT ON wecom_events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION wecom_events_queue();

-- `applied_at` is gone rather than left unmaintained, so a query that still reads it fails loudly instead of
-- reporting every new event as unapplied.
DROP INDEX wecom_events_unapplied;
ALTER TABLE wecom_events DROP COLUMN applied_at;
