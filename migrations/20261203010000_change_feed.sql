-- The change feed (issue 15): every committed change to the synced tables, in an order a reader can trust.
--
-- Two tables, because ids from a sequence are not commit-ordered under concurrent appliers. Every writer of
-- the synced tables appends to `wecom_change_staging` in its own transaction (the entry's stable `id`); one
-- cluster-wide sequencer (advisory lock) moves committed staging rows into `wecom_changes`, giving them
-- `position`s after every position already there. Readers page `wecom_changes` by position. See
-- src/store/feed.rs for why a reader can never find an entry below a cursor it was given.
CREATE TABLE wecom_change_staging (
    -- The entry's stable id (the webhook-id, and `change_id` in the NOTIFY payload).
    id          BIGSERIAL   PRIMARY KEY,
    corp_id     TEXT        NOT NULL,
    -- contact | chat | tag | identity | staff | department
    kind        TEXT        NOT NULL,
    -- The changed thing within the kind (external_userid, chat_id, tag id, unionid, userid, department id).
    subject     TEXT        NOT NULL,
    change      TEXT        NOT NULL,
    -- event | api
    source      TEXT        NOT NULL,
    -- The stored event that caused it (none for API observations).
    event_id    BIGINT,
    -- What changed (the NOTIFY payload).
    data        JSONB       NOT NULL,
    -- The changed row as it is after the change (none when there is no row, e.g. a failed transfer).
    state       JSONB,
    staged_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE wecom_changes (
    -- The cursor: dense-enough, strictly increasing in the order entries became visible.
    position     BIGINT      PRIMARY KEY,
    id           BIGINT      NOT NULL UNIQUE,
    corp_id      TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    subject      TEXT        NOT NULL,
    change       TEXT        NOT NULL,
    source       TEXT        NOT NULL,
    event_id     BIGINT,
    data         JSONB       NOT NULL,
    state        JSONB,
    staged_at    TIMESTAMPTZ NOT NULL,
    sequenced_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Retention prunes by age.
CREATE INDEX wecom_changes_sequenced_at ON wecom_changes (sequenced_at);

-- One row: the last position handed out, and the last one pruned (a cursor below it gets 410).
CREATE TABLE wecom_change_feed_state (
    singleton      BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    head           BIGINT  NOT NULL DEFAULT 0,
    pruned_through BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO wecom_change_feed_state DEFAULT VALUES;

-- Each configured webhook subscriber's cursor into the feed, and how its deliveries go.
CREATE TABLE wecom_webhook_cursors (
    name              TEXT        PRIMARY KEY,
    -- Every entry at or below it is delivered (or filtered out).
    position          BIGINT      NOT NULL,
    -- Set once retries have failed for the give-up window; cleared by the next delivery.
    failing_since     TIMESTAMPTZ,
    -- When the current run of failures began (cleared by a delivery).
    failures_since    TIMESTAMPTZ,
    last_error        TEXT,
    last_error_at     TIMESTAMPTZ,
    last_delivered_at TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
