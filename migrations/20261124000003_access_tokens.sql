-- WeCom access tokens, shared by every replica. One per (corp, secret): each secret has its own token
-- (PROTOCOL.md §7.1). The secret itself is never stored: the key is its SHA-256.
CREATE TABLE wecom_access_tokens (
    corp_id      TEXT        NOT NULL,
    secret_hash  TEXT        NOT NULL,
    access_token TEXT        NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    refreshed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (corp_id, secret_hash)
);
