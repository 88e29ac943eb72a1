-- A resync that always finishes (abandoned runs, attempts), members and rule-group tags reconciled with the API.

-- A run that failed repeatedly or is older than a day is abandoned; a fresh one starts.
ALTER TABLE wecom_resync_runs DROP CONSTRAINT wecom_resync_runs_status_check;
ALTER TABLE wecom_resync_runs ADD CONSTRAINT wecom_resync_runs_status_check
    CHECK (status IN ('running', 'done', 'failed', 'abandoned'));
-- How many times the run was started (the first start and every resume).
ALTER TABLE wecom_resync_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;

-- The member version whose member list was itself read from groupchat/get. `member_version` is the version the
-- events carried (CurMemVer): equal to the API's does not mean we hold that list (its callbacks may be lost).
ALTER TABLE external_group_chats ADD COLUMN members_synced_version TEXT;
-- groupchat/get's admin_list, as sent ([{"userid": …}]).
ALTER TABLE external_group_chats ADD COLUMN admin_list JSONB;

-- What groupchat/get says about a member. `api_join_scene` is groupchat/get's join_scene: its codes differ from
-- the callback's JoinScene (kept in `join_scene`).
ALTER TABLE external_group_chat_members ADD COLUMN member_type SMALLINT;
ALTER TABLE external_group_chat_members ADD COLUMN join_time TIMESTAMPTZ;
ALTER TABLE external_group_chat_members ADD COLUMN api_join_scene INTEGER;
ALTER TABLE external_group_chat_members ADD COLUMN invitor TEXT;
ALTER TABLE external_group_chat_members ADD COLUMN group_nickname TEXT;
ALTER TABLE external_group_chat_members ADD COLUMN name TEXT;
ALTER TABLE external_group_chat_members ADD COLUMN unionid TEXT;
ALTER TABLE external_group_chat_members ADD COLUMN state TEXT;
ALTER TABLE external_group_chat_members ADD COLUMN detail_synced_at TIMESTAMPTZ;

-- A tag's group name (for tags; a group's own name is `name`) and its group's sort order.
ALTER TABLE external_corp_tags ADD COLUMN group_name TEXT;
ALTER TABLE external_corp_tags ADD COLUMN group_order BIGINT;
