-- The staff directory (通讯录): members and departments, fed by `change_contact` events and `user/get`.
-- Every group of columns is a last-writer-wins register (see src/sync/directory.rs): `*_version` columns
-- hold the version of the write that set the group; a NULL value with a NULL version means never known.

CREATE TABLE staff (
    corp_id              TEXT        NOT NULL,
    userid               TEXT        NOT NULL,
    name                 TEXT,
    name_version         TEXT COLLATE "C",
    -- Department ids (member of), and the main one.
    department_ids       BIGINT[],
    main_department      BIGINT,
    department_version   TEXT COLLATE "C",
    position             TEXT,
    position_version     TEXT COLLATE "C",
    open_userid          TEXT,
    open_userid_version  TEXT COLLATE "C",
    -- active | disabled | not_activated | left
    status               TEXT        NOT NULL,
    status_version       TEXT COLLATE "C" NOT NULL,
    left_at              TIMESTAMPTZ,
    -- Set when WeCom changed this member's userid (update_user with NewUserID): the new userid.
    renamed_to           TEXT,
    renamed_version      TEXT COLLATE "C",
    -- What the latest user/get could not read with the configured secret (WeCom's 2022 restrictions).
    unavailable_fields   TEXT[]      NOT NULL DEFAULT '{}',
    fetch_version        TEXT COLLATE "C",
    detail_synced_at     TIMESTAMPTZ,
    -- The resync run that last listed the member (user/list_id).
    resync_run           BIGINT,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (corp_id, userid)
);
CREATE INDEX staff_departments ON staff USING gin (department_ids);

CREATE TABLE departments (
    corp_id          TEXT        NOT NULL,
    id               BIGINT      NOT NULL,
    name             TEXT,
    name_version     TEXT COLLATE "C",
    parent_id        BIGINT,
    parent_version   TEXT COLLATE "C",
    sort_order       BIGINT,
    order_version    TEXT COLLATE "C",
    deleted          BOOLEAN     NOT NULL DEFAULT false,
    status_version   TEXT COLLATE "C" NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (corp_id, id)
);

-- The read contract grows: a staff member's active customers carry the member's name and departments, and
-- a member who left no longer "still follows" anyone (their follows stay in v_customer_followers, flagged).
CREATE OR REPLACE VIEW v_staff_active_customers AS
SELECT f.corp_id, f.userid, f.external_userid, f.state, f.added_at, f.remark, f.description, f.tags,
       c.name, c.avatar, c.type, c.corp_name, f.last_change_type, f.last_event_at,
       s.name AS staff_name, s.department_ids AS staff_department_ids, s.main_department AS staff_main_department,
       d.name AS staff_main_department_name
FROM external_contact_follows f
LEFT JOIN external_contacts c USING (corp_id, external_userid)
LEFT JOIN staff s ON s.corp_id = f.corp_id AND s.userid = f.userid
LEFT JOIN departments d ON d.corp_id = s.corp_id AND d.id = s.main_department
WHERE f.status = 'active' AND s.status IS DISTINCT FROM 'left';

CREATE OR REPLACE VIEW v_customer_followers AS
SELECT f.corp_id, f.external_userid, f.userid, f.status, f.state, f.welcome_code, f.added_at, f.deleted_at,
       f.delete_source, f.transfer_fail_reason, f.transfer_fail_at, f.remark, f.tags, f.last_change_type,
       f.last_event_at,
       s.name AS staff_name, COALESCE(s.status = 'left', false) AS staff_left
FROM external_contact_follows f
LEFT JOIN staff s ON s.corp_id = f.corp_id AND s.userid = f.userid;
