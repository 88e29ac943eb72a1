//! A corp tag callback event (`change_external_tag`) as writes: the tag's registers, and the tag list
//! fetch it queues.

use serde_json::json;

use crate::domain::JobKind;
use crate::sync::plan::events::job;
use crate::sync::plan::{
    EventMeta, HistoryKind, HistoryRow, LastChange, Plan, Stamped, TagWrite, Version,
};
use crate::wecom::events::{ExternalTagEvent, TagChange};

pub(super) fn plan_tag(plan: &mut Plan, meta: &EventMeta<'_>, t: &ExternalTagEvent) {
    let (change, rank) = match &t.change {
        TagChange::Shuffle => ("shuffle", 0),
        TagChange::Create => ("create", 1),
        TagChange::Update => ("update", 2),
        TagChange::Delete => ("delete", 3),
        TagChange::Other(s) => (s.as_str(), 0),
    };
    plan.history.push(HistoryRow {
        event_id: meta.id,
        corp_id: meta.corp_id.to_owned(),
        kind: HistoryKind::Tag,
        subject_id: t.id.clone(),
        userid: None,
        change_type: change.to_owned(),
        event_time: meta.time,
        details: json!({"tag_type": t.tag_type.as_ref().map(|x| x.as_str()), "strategy_id": t.strategy_id}),
    });
    let v = Version::event(meta.time, rank, meta.dedupe_key);
    plan.tags.push(TagWrite {
        corp_id: meta.corp_id.to_owned(),
        id: t.id.clone(),
        tag_type: t.tag_type.as_ref().map(|x| Stamped {
            version: v.clone(),
            value: x.as_str().to_owned(),
        }),
        strategy_id: t.strategy_id.clone().map(|value| Stamped {
            version: v.clone(),
            value,
        }),
        // A shuffle (or an unknown change) decides no status.
        status_version: if rank == 0 {
            Version::placeholder()
        } else {
            v.clone()
        },
        deleted: matches!(t.change, TagChange::Delete),
        last: LastChange {
            version: v,
            change_type: change.to_owned(),
            at: meta.time,
            event_id: Some(meta.id),
        },
    });
    plan.notifications.push(json!({
        "kind": "tag",
        "source": "event",
        "corp_id": meta.corp_id,
        "id": t.id,
        "tag_type": t.tag_type.as_ref().map(|x| x.as_str()),
        "change": change,
        "event_id": meta.id,
    }));
    if meta.enrich {
        plan.jobs.push(job(meta, JobKind::CorpTags, "*"));
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::JobKind;
    use crate::sync::plan::fixtures::meta;
    use crate::sync::plan::{Version, plan_event};
    use crate::wecom::events::{EventKind, ExternalTagEvent, TagChange, TypedEvent};

    #[test]
    fn a_tag_shuffle_decides_no_status() {
        let t = TypedEvent {
            corp_id: Some("wwcorp".into()),
            suite_id: None,
            time: Some(100),
            kind: EventKind::ExternalTag(ExternalTagEvent {
                id: "et1".into(),
                tag_type: None,
                strategy_id: Some("1".into()),
                change: TagChange::Shuffle,
            }),
        };
        let p = plan_event(&meta(100, "k"), &t);
        assert_eq!(p.tags[0].status_version, Version::placeholder());
        assert!(!p.tags[0].deleted);
        assert_eq!(p.jobs[0].kind, JobKind::CorpTags);
        assert_eq!(p.jobs[0].subject, "*");
    }
}
