//! Every projected state column (not ids, which depend on arrival order), as comparable text. Shared by
//! the api and faults test binaries.

use sqlx::PgPool;

pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    let queries = [
        "SELECT row_to_json(x)::text FROM (SELECT corp_id, external_userid, first_seen_at, last_event_at FROM external_contacts ORDER BY 1, 2) x",
        "SELECT row_to_json(x)::text FROM (SELECT corp_id, userid, external_userid, status, status_version, state, welcome_code, added_at, add_version, deleted_at, delete_source, last_change_type, last_event_at, last_version, transfer_fail_reason, transfer_fail_at, transfer_fail_version FROM external_contact_follows ORDER BY 1, 2, 3) x",
        "SELECT row_to_json(x)::text FROM (SELECT corp_id, chat_id, status, status_version, created_at, dismissed_at, last_update_detail, member_version, update_version, last_event_at, last_version FROM external_group_chats ORDER BY 1, 2) x",
        "SELECT row_to_json(x)::text FROM (SELECT corp_id, chat_id, member_id, status, version, join_scene, quit_scene, changed_at FROM external_group_chat_members ORDER BY 1, 2, 3) x",
        "SELECT row_to_json(x)::text FROM (SELECT corp_id, id, type, strategy_id, deleted, status_version, last_change_type, last_event_at, last_version FROM external_corp_tags ORDER BY 1, 2) x",
        "SELECT row_to_json(x)::text FROM (SELECT corp_id, kind, subject_id, userid, change_type, event_time, details FROM external_contact_history ORDER BY corp_id, kind, subject_id, event_time, change_type, userid, details::text) x",
    ];
    let mut out = Vec::new();
    for q in queries {
        let rows: Vec<String> = sqlx::query_scalar(q)
            .fetch_all(pool)
            .await
            .expect("snapshot");
        out.extend(rows);
    }
    out
}
