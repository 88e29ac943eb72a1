-- Appliers that do not wait on each other (issue 12). Two appliers taking the oldest pending events both
-- touch the same hot rows (a customer's contact and follow, a chat, a tag) and the second waits for the
-- first's commit on every one of them: measured, two appliers applied barely more than one. Each pending
-- event now carries a shard, a hash of the key its writes centre on (the customer for contact events, the
-- chat, the tag or department id, the staff member), and applier k of n takes only the shards with
-- shard % n = k: events of one customer are applied by one applier, in id order, and two appliers rarely
-- share a row. Correctness never depended on it (writes are last-writer-wins by version and key-ordered).
ALTER TABLE wecom_events_pending ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;

-- 64 shards: any applier count up to the maximum (8) divides them evenly enough. `& 63` rather than
-- abs() % 64: hashtext can return the one int4 abs() overflows on.
UPDATE wecom_events_pending p
SET shard = (hashtext(COALESCE(e.fields->>'ExternalUserID', e.fields->>'ChatId', e.fields->>'UserID',
                               e.fields->>'Id', '')) & 63)::smallint
FROM wecom_events e WHERE e.id = p.id;

CREATE OR REPLACE FUNCTION wecom_events_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wecom_events_pending (id, shard)
    SELECT id, (hashtext(COALESCE(fields->>'ExternalUserID', fields->>'ChatId', fields->>'UserID',
                                  fields->>'Id', '')) & 63)::smallint
    FROM inserted;
    RETURN NULL;
END
$$;
