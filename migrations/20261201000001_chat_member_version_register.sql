-- The member version of a chat is its own last-writer-wins register: an update event without CurMemVer
-- (older event formats) must not hide the version a slightly older update carried, whatever order the two
-- are applied in.
ALTER TABLE external_group_chats ADD COLUMN member_version_version TEXT COLLATE "C";
UPDATE external_group_chats SET member_version_version = update_version WHERE member_version IS NOT NULL;
