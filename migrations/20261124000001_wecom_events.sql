-- Every distinct WeCom callback, verified and decrypted, exactly once.
-- Rows are written only by the receiver and never updated by it: this table is the durable log that every
-- projection is computed from.
CREATE TABLE wecom_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The configured app (endpoint) that received the callback: its URL path segment.
    app           TEXT        NOT NULL,
    -- SHA-256 (hex) of the decrypted message bytes. Unique per app, so WeCom's retries, even re-encrypted
    -- ones, add no row (PROTOCOL.md §5.6).
    dedupe_key    TEXT        NOT NULL,
    -- The receive id found inside the ciphertext (corpid, suite id, ...), checked against the app's list.
    receive_id    TEXT        NOT NULL,
    -- The corp the event is about: AuthCorpId for third-party suite messages, else ToUserName.
    corp_id       TEXT,
    -- CreateTime (app form) or TimeStamp (suite form), as sent by WeCom.
    event_time    TIMESTAMPTZ,
    msg_type      TEXT,
    -- Event (app form) or InfoType (suite form).
    event         TEXT,
    info_type     TEXT,
    change_type   TEXT,
    -- The decrypted message exactly as received (UTF-8 XML) and every element of it as JSON.
    message       TEXT        NOT NULL,
    fields        JSONB       NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The request's query parameters, kept for forensics.
    req_timestamp TEXT        NOT NULL,
    req_nonce     TEXT        NOT NULL,
    msg_signature TEXT        NOT NULL,
    CONSTRAINT wecom_events_app_dedupe_key UNIQUE (app, dedupe_key)
);

CREATE INDEX wecom_events_received_at ON wecom_events (received_at);
CREATE INDEX wecom_events_corp_event_time ON wecom_events (corp_id, event_time);
CREATE INDEX wecom_events_event_change_type ON wecom_events (event, change_type);
