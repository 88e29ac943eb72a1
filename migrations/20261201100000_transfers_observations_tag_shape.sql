-- transfer_fail is a transfer attempt, not a follow: its UserID is the takeover member (接替成员) who did not
-- get the customer (PROTOCOL.md §6.2). Attempts get a table of their own; follows are no longer touched.
CREATE TABLE external_contact_transfers (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    corp_id         TEXT        NOT NULL,
    external_userid TEXT        NOT NULL,
    takeover_userid TEXT        NOT NULL,
    reason          TEXT,
    failed_at       TIMESTAMPTZ NOT NULL,
    event_id        BIGINT      NOT NULL UNIQUE REFERENCES wecom_events (id) ON DELETE CASCADE
);
CREATE INDEX external_contact_transfers_customer ON external_contact_transfers (corp_id, external_userid, failed_at);

-- The attempts already applied, from the history (which kept every transfer_fail).
INSERT INTO external_contact_transfers (corp_id, external_userid, takeover_userid, reason, failed_at, event_id)
SELECT corp_id, subject_id, COALESCE(userid, ''), details->>'fail_reason', event_time, event_id
FROM external_contact_history
WHERE kind = 'contact' AND change_type = 'transfer_fail'
ON CONFLICT (event_id) DO NOTHING;

-- A customer's failed transfer attempts.
CREATE VIEW v_customer_transfers AS
SELECT t.corp_id, t.external_userid, t.takeover_userid, t.reason, t.failed_at, t.event_id
FROM external_contact_transfers t;

-- Follows that only a transfer_fail created (never added, deleted or listed by WeCom) were the takeover
-- member's, who never had the customer. The transfer_fail_* columns were set on that wrong person: cleared,
-- and no longer written (the attempts are in external_contact_transfers).
DELETE FROM external_contact_follows
WHERE status_version = '' AND add_version IS NULL AND detail_synced_at IS NULL
  AND transfer_fail_version IS NOT NULL AND last_change_type = 'transfer_fail';
UPDATE external_contact_follows SET transfer_fail_reason = NULL, transfer_fail_at = NULL, transfer_fail_version = NULL
WHERE transfer_fail_version IS NOT NULL;

-- API details are last-writer-wins registers keyed by the fetch time (lpad(epoch, 12) ':0:api' micros).
ALTER TABLE external_contacts ADD COLUMN detail_version TEXT COLLATE "C";
ALTER TABLE external_contact_follows ADD COLUMN detail_version TEXT COLLATE "C";
UPDATE external_contacts SET detail_version =
    lpad(floor(extract(epoch FROM detail_synced_at))::bigint::text, 12, '0') || ':0:api'
    || lpad((extract(microseconds FROM detail_synced_at)::bigint % 1000000)::text, 6, '0')
WHERE detail_synced_at IS NOT NULL;
UPDATE external_contact_follows SET detail_version =
    lpad(floor(extract(epoch FROM detail_synced_at))::bigint::text, 12, '0') || ':0:api'
    || lpad((extract(microseconds FROM detail_synced_at)::bigint % 1000000)::text, 6, '0')
WHERE detail_synced_at IS NOT NULL;

-- One shape for follows.tags: [{"tag_id", "type", "tag_name", "group_name"}]. The resync stored plain tag-id
-- strings; they become objects named from external_corp_tags where the tag is known (else null names/type).
UPDATE external_contact_follows f SET tags = (
    SELECT COALESCE(jsonb_agg(
        CASE WHEN jsonb_typeof(e.v) = 'string' THEN jsonb_build_object(
                 'tag_id', e.v #>> '{}',
                 'type', CASE WHEN t.id IS NULL THEN NULL WHEN t.strategy_id IS NOT NULL THEN 3 ELSE 1 END,
                 'tag_name', t.name,
                 'group_name', g.name)
             ELSE jsonb_build_object(
                 'tag_id', e.v->'tag_id', 'type', e.v->'type', 'tag_name', e.v->'tag_name',
                 'group_name', e.v->'group_name')
        END ORDER BY e.n), '[]'::jsonb)
    FROM jsonb_array_elements(f.tags) WITH ORDINALITY AS e(v, n)
    LEFT JOIN external_corp_tags t ON t.corp_id = f.corp_id AND t.id = e.v #>> '{}' AND jsonb_typeof(e.v) = 'string'
    LEFT JOIN external_corp_tags g ON g.corp_id = t.corp_id AND g.id = t.group_id
    WHERE jsonb_typeof(e.v) IN ('string', 'object'))
WHERE jsonb_typeof(f.tags) = 'array'
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(f.tags) x WHERE jsonb_typeof(x) = 'string');

-- The latest fetch that listed a follow: a follow the resync swept as removed (not listed then) that a later
-- fetch lists again is active again.
ALTER TABLE external_contact_follows ADD COLUMN listed_version TEXT COLLATE "C";
