-- Cluster-wide WeCom API limits per corp and API, shared by every replica (WeCom counts per corp, not per
-- process: 45033 past a few concurrent calls of one API, 45009 past its call rate).

-- Concurrency: one row per call in flight, in one of `concurrency` slots. A lease expires (its holder crashed
-- mid-call), so a dead replica cannot hold a slot for longer than one call could take.
CREATE TABLE wecom_api_slots (
    corp_id    TEXT        NOT NULL,
    api        TEXT        NOT NULL,
    slot       INT         NOT NULL,
    holder     TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (corp_id, api, slot)
);

-- Rate: the generic cell rate algorithm's "theoretical arrival time" per corp and API. Each call moves it
-- on by one emission interval and waits until it is within the burst of now.
CREATE TABLE wecom_api_rates (
    corp_id TEXT        NOT NULL,
    api     TEXT        NOT NULL,
    tat     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (corp_id, api)
);

-- After a 45033 or 45009 every replica calls that corp more slowly until `until`.
CREATE TABLE wecom_api_slowdowns (
    corp_id TEXT        PRIMARY KEY,
    until   TIMESTAMPTZ NOT NULL,
    errcode BIGINT      NOT NULL,
    hits    BIGINT      NOT NULL DEFAULT 1
);
