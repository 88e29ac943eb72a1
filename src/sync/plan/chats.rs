//! A group chat callback event (`change_external_chat`) as writes: the chat's registers, each member that
//! joined or left, and the chat fetch it queues.

use serde_json::{Value, json};

use crate::domain::JobKind;
use crate::sync::plan::events::job;
use crate::sync::plan::{
    ChatMemberVersion, ChatStatus, ChatUpdateWrite, ChatWrite, EventMeta, HistoryKind, HistoryRow,
    LastChange, MemberStatus, MemberWrite, Plan, Version,
};
use crate::wecom::events::{ChatChange, ExternalChatEvent, UpdateDetail};

pub(super) fn plan_chat(plan: &mut Plan, meta: &EventMeta<'_>, c: &ExternalChatEvent) {
    let history = |change: &str, details: Value| HistoryRow {
        event_id: meta.id,
        corp_id: meta.corp_id.to_owned(),
        kind: HistoryKind::Chat,
        subject_id: c.chat_id.clone(),
        userid: None,
        change_type: change.to_owned(),
        event_time: meta.time,
        details,
    };
    let (change, rank) = match &c.change {
        ChatChange::Create => ("create", 1),
        ChatChange::Update(_) => ("update", 2),
        ChatChange::Dismiss => ("dismiss", 3),
        ChatChange::Other(s) => {
            plan.history.push(history(s, json!({})));
            return;
        }
    };
    let v = Version::event(meta.time, rank, meta.dedupe_key);
    let details = match &c.change {
        ChatChange::Update(u) => json!({
            "update_detail": u.detail.as_str(),
            "join_scene": u.join_scene,
            "quit_scene": u.quit_scene,
            "mem_change_cnt": u.mem_change_cnt,
            "mem_change_list": u.mem_change_list,
        }),
        _ => json!({}),
    };
    plan.history.push(history(change, details));
    let (status, status_version) = match &c.change {
        ChatChange::Create => (ChatStatus::Active, v.clone()),
        ChatChange::Dismiss => (ChatStatus::Dismissed, v.clone()),
        _ => (ChatStatus::Active, Version::placeholder()),
    };
    let update = match &c.change {
        ChatChange::Update(u) => Some(ChatUpdateWrite {
            version: v.clone(),
            detail: u.detail.as_str().to_owned(),
        }),
        _ => None,
    };
    let member_version = match &c.change {
        ChatChange::Update(u) => u.cur_mem_ver.clone().map(|mv| ChatMemberVersion {
            version: v.clone(),
            member_version: mv,
        }),
        _ => None,
    };
    plan.chats.push(ChatWrite {
        corp_id: meta.corp_id.to_owned(),
        chat_id: c.chat_id.clone(),
        status_version,
        status,
        created_at: matches!(c.change, ChatChange::Create).then_some(meta.time),
        dismissed_at: matches!(c.change, ChatChange::Dismiss).then_some(meta.time),
        update,
        member_version,
        last: LastChange {
            version: v.clone(),
            change_type: change.to_owned(),
            at: meta.time,
            event_id: Some(meta.id),
        },
    });
    plan.notifications.push(json!({
        "kind": "chat",
        "source": "event",
        "corp_id": meta.corp_id,
        "chat_id": c.chat_id,
        "change": change,
        "update_detail": match &c.change {
            ChatChange::Update(u) => Some(u.detail.as_str()),
            _ => None,
        },
        "event_id": meta.id,
    }));
    if let ChatChange::Update(u) = &c.change {
        let member_status = match u.detail {
            UpdateDetail::AddMember => Some(MemberStatus::Joined),
            UpdateDetail::DelMember => Some(MemberStatus::Left),
            _ => None,
        };
        if let Some(status) = member_status {
            for member in &u.mem_change_list {
                plan.members.push(MemberWrite {
                    corp_id: meta.corp_id.to_owned(),
                    chat_id: c.chat_id.clone(),
                    member_id: member.clone(),
                    version: v.clone(),
                    status,
                    join_scene: u.join_scene.filter(|_| status == MemberStatus::Joined),
                    quit_scene: u.quit_scene.filter(|_| status == MemberStatus::Left),
                    changed_at: meta.time,
                    event_id: meta.id,
                });
            }
        }
    }
    if meta.enrich && matches!(c.change, ChatChange::Create | ChatChange::Update(_)) {
        plan.jobs.push(job(meta, JobKind::GroupChat, &c.chat_id));
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::JobKind;
    use crate::sync::plan::fixtures::{chat, meta};
    use crate::sync::plan::{ChatStatus, MemberStatus, Version, plan_event};
    use crate::wecom::events::{ChatChange, UpdateDetail};

    #[test]
    fn a_member_update_writes_each_member_and_the_version() {
        let p = plan_event(
            &meta(100, "k"),
            &chat(ChatChange::Update(crate::wecom::events::ChatUpdate {
                detail: UpdateDetail::AddMember,
                join_scene: Some(3),
                quit_scene: Some(0),
                mem_change_cnt: Some(2),
                mem_change_list: vec!["wmA".into(), "wmB".into()],
                last_mem_ver: Some("v1".into()),
                cur_mem_ver: Some("v2".into()),
            })),
        );
        assert_eq!(p.members.len(), 2);
        assert_eq!(p.members[0].status, MemberStatus::Joined);
        assert_eq!(p.members[0].join_scene, Some(3));
        assert_eq!(p.members[0].quit_scene, None);
        let mv = p.chats[0]
            .member_version
            .as_ref()
            .expect("a member version");
        assert_eq!(mv.member_version, "v2");
        assert_eq!(p.chats[0].status_version, Version::placeholder());
        assert_eq!(p.jobs[0].kind, JobKind::GroupChat);
    }

    #[test]
    fn dismiss_decides_status_and_time() {
        let p = plan_event(&meta(100, "k"), &chat(ChatChange::Dismiss));
        assert_eq!(p.chats[0].status, ChatStatus::Dismissed);
        assert_eq!(p.chats[0].dismissed_at, Some(100));
        assert!(p.jobs.is_empty());
    }
}
