-- The operator's view (/status, `wecom-callback status`, `doctor`).
--
-- Callbacks by app, minute and outcome (the outcome label of wecom_callbacks_total). Each replica counts in
-- memory and adds its counts here every few seconds, so the numbers cover every replica and survive a
-- restart; rows older than two days are pruned by the same flush.
CREATE TABLE wecom_callback_outcomes (
    app     TEXT        NOT NULL,
    minute  TIMESTAMPTZ NOT NULL,
    outcome TEXT        NOT NULL,
    count   BIGINT      NOT NULL CHECK (count >= 0),
    PRIMARY KEY (app, minute, outcome)
);
CREATE INDEX wecom_callback_outcomes_minute ON wecom_callback_outcomes (minute);

-- The last URL verification (GET /callback/{app}) per app, and the last one that passed: the moment users
-- are stuck in is a console that says the URL does not verify.
CREATE TABLE wecom_url_verifications (
    app          TEXT        PRIMARY KEY,
    attempted_at TIMESTAMPTZ NOT NULL,
    -- url_verified, or the rejection class (bad_signature, decrypt_error, ...).
    outcome      TEXT        NOT NULL,
    -- WeCom's own callback error code (-40001 ...) for a rejection, when there is one.
    wecom_code   INTEGER,
    -- What failed, in words (never a secret or decrypted content).
    reason       TEXT,
    last_ok_at   TIMESTAMPTZ
);
