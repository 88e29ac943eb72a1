-- Projections of the event log: the tables backends query (see README, "The read contract").
--
-- Order safety: every row keeps a *version* of the event that last decided each group of its columns:
-- lpad(event_time epoch, 12) || ':' || rank || ':' || dedupe_key, compared as bytes (COLLATE "C"). An event
-- changes a group only when its version is greater, so applying any permutation of the same events, with
-- duplicates, gives the same rows. Within one second the rank decides (README documents the ranks).

-- Every stored event is applied exactly once: applied_at is set in the transaction that applies it.
ALTER TABLE wecom_events ADD COLUMN applied_at TIMESTAMPTZ;
CREATE INDEX wecom_events_unapplied ON wecom_events (id) WHERE applied_at IS NULL;

CREATE TABLE external_contacts (
    corp_id          TEXT        NOT NULL,
    external_userid  TEXT        NOT NULL,
    first_seen_at    TIMESTAMPTZ NOT NULL,
    last_event_at    TIMESTAMPTZ NOT NULL,
    last_event_id    BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    -- Filled from WeCom's API (externalcontact/get), not from events.
    name             TEXT,
    avatar           TEXT,
    type             SMALLINT,
    gender           SMALLINT,
    unionid          TEXT,
    position         TEXT,
    corp_name        TEXT,
    corp_full_name   TEXT,
    external_profile JSONB,
    detail_synced_at TIMESTAMPTZ,
    PRIMARY KEY (corp_id, external_userid)
);

CREATE TABLE external_contact_follows (
    corp_id              TEXT        NOT NULL,
    userid               TEXT        NOT NULL,
    external_userid      TEXT        NOT NULL,
    -- active | pending (half-added, not yet confirmed) | deleted_by_staff | deleted_by_customer
    status               TEXT        NOT NULL CHECK (status IN ('active', 'pending', 'deleted_by_staff', 'deleted_by_customer')),
    status_version       TEXT COLLATE "C" NOT NULL,
    state                TEXT,
    welcome_code         TEXT,
    added_at             TIMESTAMPTZ,
    add_version          TEXT COLLATE "C",
    deleted_at           TIMESTAMPTZ,
    delete_source        TEXT,
    last_change_type     TEXT        NOT NULL,
    last_event_at        TIMESTAMPTZ NOT NULL,
    last_version         TEXT COLLATE "C" NOT NULL,
    last_event_id        BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    transfer_fail_reason TEXT,
    transfer_fail_at     TIMESTAMPTZ,
    transfer_fail_version TEXT COLLATE "C",
    -- Filled from WeCom's API.
    remark               TEXT,
    description          TEXT,
    remark_mobiles       TEXT[],
    add_way              INTEGER,
    oper_userid          TEXT,
    tags                 JSONB,
    detail_synced_at     TIMESTAMPTZ,
    PRIMARY KEY (corp_id, userid, external_userid)
);
CREATE INDEX external_contact_follows_customer ON external_contact_follows (corp_id, external_userid);

CREATE TABLE external_group_chats (
    corp_id          TEXT        NOT NULL,
    chat_id          TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('active', 'dismissed')),
    status_version   TEXT COLLATE "C" NOT NULL,
    created_at       TIMESTAMPTZ,
    dismissed_at     TIMESTAMPTZ,
    last_update_detail TEXT,
    member_version   TEXT,
    update_version   TEXT COLLATE "C",
    last_event_at    TIMESTAMPTZ NOT NULL,
    last_version     TEXT COLLATE "C" NOT NULL,
    last_event_id    BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    -- Filled from WeCom's API (groupchat/get).
    name             TEXT,
    owner            TEXT,
    notice           TEXT,
    detail_synced_at TIMESTAMPTZ,
    PRIMARY KEY (corp_id, chat_id)
);

CREATE TABLE external_group_chat_members (
    corp_id        TEXT        NOT NULL,
    chat_id        TEXT        NOT NULL,
    member_id      TEXT        NOT NULL,
    -- joined | left
    status         TEXT        NOT NULL CHECK (status IN ('joined', 'left')),
    version        TEXT COLLATE "C" NOT NULL,
    -- The callback's raw JoinScene / QuitScene numbers (their codes differ from groupchat/get's).
    join_scene     INTEGER,
    quit_scene     INTEGER,
    changed_at     TIMESTAMPTZ NOT NULL,
    last_event_id  BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    PRIMARY KEY (corp_id, chat_id, member_id)
);

CREATE TABLE external_corp_tags (
    corp_id        TEXT        NOT NULL,
    id             TEXT        NOT NULL,
    -- tag | tag_group (NULL when only a shuffle was seen)
    type           TEXT,
    strategy_id    TEXT,
    deleted        BOOLEAN     NOT NULL DEFAULT false,
    status_version TEXT COLLATE "C" NOT NULL,
    last_change_type TEXT      NOT NULL,
    last_event_at  TIMESTAMPTZ NOT NULL,
    last_version   TEXT COLLATE "C" NOT NULL,
    last_event_id  BIGINT      REFERENCES wecom_events (id) ON DELETE SET NULL,
    -- Filled from WeCom's API (get_corp_tag_list).
    name           TEXT,
    group_id       TEXT,
    sort_order     BIGINT,
    detail_synced_at TIMESTAMPTZ,
    PRIMARY KEY (corp_id, id)
);

-- Every applied change, linked to the event that caused it: a customer's timeline.
CREATE TABLE external_contact_history (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        BIGINT      NOT NULL REFERENCES wecom_events (id) ON DELETE CASCADE,
    corp_id         TEXT        NOT NULL,
    kind            TEXT        NOT NULL, -- contact | chat | tag
    subject_id      TEXT        NOT NULL, -- external_userid, chat_id or tag id
    userid          TEXT,
    change_type     TEXT        NOT NULL,
    event_time      TIMESTAMPTZ NOT NULL,
    details         JSONB       NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (event_id, kind, subject_id)
);
CREATE INDEX external_contact_history_subject ON external_contact_history (corp_id, kind, subject_id, event_time);

-- The read contract: views for the common questions. Column names here are stable; new columns may be added.

-- A staff member's active customers.
CREATE VIEW v_staff_active_customers AS
SELECT f.corp_id, f.userid, f.external_userid, f.state, f.added_at, f.remark, f.description, f.tags,
       c.name, c.avatar, c.type, c.corp_name, f.last_change_type, f.last_event_at
FROM external_contact_follows f
LEFT JOIN external_contacts c USING (corp_id, external_userid)
WHERE f.status = 'active';

-- A customer's followers, current and former.
CREATE VIEW v_customer_followers AS
SELECT f.corp_id, f.external_userid, f.userid, f.status, f.state, f.welcome_code, f.added_at, f.deleted_at,
       f.delete_source, f.transfer_fail_reason, f.transfer_fail_at, f.remark, f.tags, f.last_change_type,
       f.last_event_at
FROM external_contact_follows f;

-- A customer's timeline: every applied change with the event that caused it.
CREATE VIEW v_customer_timeline AS
SELECT h.corp_id, h.subject_id AS external_userid, h.userid, h.change_type, h.event_time, h.details,
       h.event_id, e.received_at
FROM external_contact_history h
JOIN wecom_events e ON e.id = h.event_id
WHERE h.kind = 'contact';
