-- Service providers (issue 14): suite tickets per suite, and the corps that authorised a suite.

-- The newest suite_ticket of each suite (WeCom pushes one every 10 minutes; valid 30). Keyed by suite, so one
-- suite's push never overwrites another's; `pushed_at` (the push's TimeStamp) decides which push is newer.
CREATE TABLE wecom_suite_tickets (
    suite_id    TEXT        PRIMARY KEY,
    ticket      TEXT        NOT NULL,
    pushed_at   TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    event_id    BIGINT
);

-- A corp that authorised (installed) a suite. The permanent code is sealed (AES-256-CBC + HMAC-SHA256 with the
-- configured [provider] secret_key): a database dump alone does not give it away.
CREATE TABLE wecom_provider_corps (
    corp_id         TEXT        NOT NULL,
    suite_id        TEXT        NOT NULL,
    -- The suite's app name (the callback path), under which its jobs and resync runs are recorded.
    app             TEXT        NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('authorised', 'cancelled')),
    corp_name       TEXT,
    agent_id        BIGINT,
    permanent_code  BYTEA       NOT NULL,
    auth_info       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    authorised_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at    TIMESTAMPTZ,
    rows_deleted_at TIMESTAMPTZ,
    events_deleted_at TIMESTAMPTZ,
    PRIMARY KEY (corp_id, suite_id)
);
CREATE INDEX wecom_provider_corps_cancelled ON wecom_provider_corps (cancelled_at) WHERE state = 'cancelled';
