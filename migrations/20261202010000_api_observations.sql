-- What WeCom's API taught, as an append-only log, so `rebuild` (events + these observations) gives the
-- incrementally maintained tables, API-learned rows and columns included. Each row is written in the
-- transaction that applies the observation (src/store/observations.rs).
CREATE TABLE wecom_api_observations (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    corp_id       TEXT        NOT NULL,
    -- contact_detail | follow_entry | group_chat | corp_tags | mark_chat | mark_tags
    -- | sweep_follows | sweep_chats | sweep_tags
    kind          TEXT        NOT NULL,
    -- What the observation is about within its kind (an external_userid, a chat id, …), for compaction.
    subject       TEXT        NOT NULL,
    -- The fetch time (or the resync run's start for marks and sweeps).
    observed_at   TIMESTAMPTZ NOT NULL,
    -- Events with an id up to this were applied before the observation: a rebuild replays it right after
    -- them, so the few rules that depend on order (a sweep, a member list) see what they saw.
    events_before BIGINT      NOT NULL,
    -- It created a row or changed a status: never compacted away.
    pinned        BOOLEAN     NOT NULL,
    -- What it wrote (follow relations with their createtime, member ids, tag ids): a newer observation of
    -- the same kind and subject that covers all of it supersedes it.
    covers        TEXT[]      NOT NULL DEFAULT '{}',
    -- The typed answer (or the sweep's rows) with what replaying it needs.
    body          JSONB       NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX wecom_api_observations_replay ON wecom_api_observations (events_before, seq);
CREATE INDEX wecom_api_observations_subject ON wecom_api_observations (corp_id, kind, subject, seq);
