//! Test fixtures shared by the planner's tests: an event's metadata, typed events, and an API answer.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::sync::client::types::ExternalContactDetail;
use crate::sync::plan::EventMeta;
use crate::wecom::events::{
    ChatChange, ContactChange, EventKind, ExternalChatEvent, ExternalContactEvent, TypedEvent,
};

pub(super) fn meta(time: i64, key: &'static str) -> EventMeta<'static> {
    EventMeta {
        id: 7,
        app: "main",
        corp_id: "wwcorp",
        time,
        dedupe_key: key,
        enrich: true,
    }
}

pub(super) fn contact(change: ContactChange) -> TypedEvent {
    TypedEvent {
        corp_id: Some("wwcorp".into()),
        suite_id: None,
        time: Some(100),
        kind: EventKind::ExternalContact(ExternalContactEvent {
            userid: "alice".into(),
            external_userid: "wmC".into(),
            change,
        }),
    }
}

pub(super) fn chat(change: ChatChange) -> TypedEvent {
    TypedEvent {
        corp_id: Some("wwcorp".into()),
        suite_id: None,
        time: Some(100),
        kind: EventKind::ExternalChat(ExternalChatEvent {
            chat_id: "wrX".into(),
            change,
        }),
    }
}

pub(super) fn listed(userid: &str, createtime: i64, tags: Value) -> ExternalContactDetail {
    serde_json::from_value(json!({
        "external_contact": {"external_userid": "wmC", "name": "客户"},
        "follow_user": [{"userid": userid, "createtime": createtime, "remark": "r", "tags": tags}],
    }))
    .expect("an answer")
}

pub(super) fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("a time")
}
