-- Full resync from WeCom's API: runs (resumable, with their drift report) and the mark for mark-and-sweep.
CREATE TABLE wecom_resync_runs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    app         TEXT        NOT NULL,
    corp_id     TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    -- running | done | failed (a failed run is resumed by the next one)
    status      TEXT        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    -- Where to resume: the follow-user chunk and cursor reached.
    progress    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    -- created / updated / removed per table.
    drift       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    last_error  TEXT
);
CREATE INDEX wecom_resync_runs_app ON wecom_resync_runs (app, started_at);

-- 'removed': WeCom no longer lists this follow and no event said who ended it (delete_source = 'resync').
ALTER TABLE external_contact_follows DROP CONSTRAINT external_contact_follows_status_check;
ALTER TABLE external_contact_follows ADD CONSTRAINT external_contact_follows_status_check
    CHECK (status IN ('active', 'pending', 'deleted_by_staff', 'deleted_by_customer', 'removed'));
ALTER TABLE external_contact_follows ADD COLUMN resync_run BIGINT;
ALTER TABLE external_group_chats ADD COLUMN resync_run BIGINT;
ALTER TABLE external_corp_tags ADD COLUMN resync_run BIGINT;
