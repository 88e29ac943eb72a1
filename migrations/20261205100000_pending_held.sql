-- An event the tables refuse (a batch of one that fails on its data) is held back rather than retried at
-- the head of its shard forever: the projector sets `held_until` (it is passed over until then) and
-- `held_error` (why, for the status page and `status --json`). The row stays: the event is still pending.
-- Applying it later deletes the row, hold and all. NULL for every other pending event.
ALTER TABLE wecom_events_pending
    ADD COLUMN held_until TIMESTAMPTZ,
    ADD COLUMN held_error TEXT;
