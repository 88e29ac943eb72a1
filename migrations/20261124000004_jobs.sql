-- Durable work for the WeCom API (enrichment after events), queued in the event's transaction and taken by
-- workers with FOR UPDATE SKIP LOCKED. A job that keeps failing ends as 'dead' for an operator to inspect
-- and retry (`wecom-callback jobs`).
CREATE TABLE wecom_jobs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- contact_detail | group_chat | corp_tags
    kind         TEXT        NOT NULL,
    app          TEXT        NOT NULL,
    corp_id      TEXT        NOT NULL,
    -- What the job is about (external_userid, chat_id, ...): repeated jobs for one subject collapse.
    subject      TEXT        NOT NULL,
    -- queued | running | done | dead
    status       TEXT        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts     INTEGER     NOT NULL DEFAULT 0,
    run_after    TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    last_errcode BIGINT,
    event_id     BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One queued job per subject: a burst of edits to one contact makes one API call. (A running job does not
-- absorb new ones: it may have fetched before the latest change.)
CREATE UNIQUE INDEX wecom_jobs_queued_subject ON wecom_jobs (kind, app, corp_id, subject)
    WHERE status = 'queued';
CREATE INDEX wecom_jobs_due ON wecom_jobs (run_after) WHERE status = 'queued';
CREATE INDEX wecom_jobs_dead ON wecom_jobs (updated_at) WHERE status = 'dead';
