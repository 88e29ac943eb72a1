//! Planning from a callback event: which subject's rules apply ([`plan_event`]), and the events that plan
//! nothing (`send-test`'s). The rules per subject are in [`super::contacts`], [`super::chats`] and
//! [`super::tags`].

use crate::domain::JobKind;
use crate::sync::plan::chats::plan_chat;
use crate::sync::plan::contacts::plan_contact;
use crate::sync::plan::tags::plan_tag;
use crate::sync::plan::{EventMeta, JobRequest, Plan};
use crate::wecom::events::{ContactEvent, EventKind, TypedEvent};

/// What `wecom-callback send-test` puts in the ids of the events it sends (`wmSendTest…`, `wrSendTest…`,
/// `etSendTest…`; WeCom's own ids never contain it at that place). Such events are stored like any other,
/// which is what the test proves, but [`plan_event`] gives them an empty plan: no synced row, no
/// notification, no API job, so running send-test against production leaves the backends' tables alone.
pub const SEND_TEST_MARK: &str = "SendTest";

/// The member `send-test` names in its events (its 通讯录 event is about this userid only).
pub const SEND_TEST_STAFF: &str = "send-test-staff";

/// Whether `typed` is one of `send-test`'s events (see [`SEND_TEST_MARK`]).
pub fn is_send_test(typed: &TypedEvent) -> bool {
    let marked = |id: &str, prefix: &str| {
        id.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(SEND_TEST_MARK))
    };
    match &typed.kind {
        EventKind::ExternalContact(c) => marked(&c.external_userid, "wm"),
        EventKind::ExternalChat(c) => marked(&c.chat_id, "wr"),
        EventKind::ExternalTag(t) => marked(&t.id, "et"),
        EventKind::Contact(ContactEvent::UpdateUser(u)) => u.userid == SEND_TEST_STAFF,
        _ => false,
    }
}

/// The writes one stored event implies. Events of kinds the synced tables do not cover, and `send-test`'s
/// events ([`is_send_test`]), give an empty plan.
pub fn plan_event(meta: &EventMeta<'_>, typed: &TypedEvent) -> Plan {
    let mut plan = Plan::default();
    if is_send_test(typed) {
        return plan;
    }
    match &typed.kind {
        EventKind::ExternalContact(c) => plan_contact(&mut plan, meta, c),
        EventKind::ExternalChat(c) => plan_chat(&mut plan, meta, c),
        EventKind::ExternalTag(t) => plan_tag(&mut plan, meta, t),
        _ => {}
    }
    plan
}

pub(super) fn job(meta: &EventMeta<'_>, kind: JobKind, subject: &str) -> JobRequest {
    JobRequest {
        kind,
        app: meta.app.to_owned(),
        corp_id: meta.corp_id.to_owned(),
        subject: subject.to_owned(),
        event_id: meta.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::plan::fixtures::{chat, contact, meta};
    use crate::wecom::events::{ChatChange, ContactChange};

    #[test]
    fn send_test_events_plan_nothing_and_only_they_do() {
        let mut ev = contact(ContactChange::Add {
            state: None,
            welcome_code: None,
        });
        if let EventKind::ExternalContact(c) = &mut ev.kind {
            c.external_userid = format!("wm{SEND_TEST_MARK}1a2b");
        }
        assert!(is_send_test(&ev));
        let p = plan_event(&meta(100, "k1"), &ev);
        assert!(p.follows.is_empty() && p.history.is_empty() && p.jobs.is_empty());
        assert!(p.notifications.is_empty());
        // A real id that merely contains the mark elsewhere is planned as usual.
        if let EventKind::ExternalContact(c) = &mut ev.kind {
            c.external_userid = "wmABCSendTest".into();
        }
        assert!(!is_send_test(&ev));
        assert_eq!(plan_event(&meta(100, "k1"), &ev).follows.len(), 1);
    }

    #[test]
    fn chat_and_tag_events_notify_with_their_kind() {
        let p = plan_event(&meta(100, "k"), &chat(ChatChange::Dismiss));
        assert_eq!(p.notifications[0]["kind"], "chat");
        assert_eq!(p.notifications[0]["chat_id"], "wrX");
        let p = plan_event(&meta(100, "k"), &contact(ContactChange::Edit));
        assert_eq!(p.notifications[0]["kind"], "contact");
        assert_eq!(p.notifications[0]["change"], "edit_external_contact");
    }

    #[test]
    fn without_a_secret_nothing_is_queued() {
        let mut m = meta(100, "k");
        m.enrich = false;
        let p = plan_event(&m, &contact(ContactChange::Edit));
        assert!(p.jobs.is_empty());
    }
}
