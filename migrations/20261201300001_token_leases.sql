-- Single-flight token refresh across replicas without holding a transaction across the HTTP call: the
-- replica that takes the lease row calls gettoken (no connection held meanwhile), stores the token and
-- deletes the lease; the others poll the cache briefly. A lease whose holder crashed expires.
CREATE TABLE wecom_token_leases (
    corp_id     TEXT        NOT NULL,
    secret_hash TEXT        NOT NULL,
    holder      TEXT        NOT NULL,
    until       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (corp_id, secret_hash)
);

-- The lifetime WeCom gave the token (expires_in), so a short-lived token is used for its remaining life
-- (the refresh margin is capped at half of it) instead of being fetched again on every call.
ALTER TABLE wecom_access_tokens ADD COLUMN lifetime_secs BIGINT;
