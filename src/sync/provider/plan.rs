//! What a stored suite event implies, decided in Rust with no I/O; [`crate::store::suites::execute`] runs it
//! in the applier's transaction (the one that marks the event applied), so each event acts exactly once.
//!
//! Why the applier and not the receiver: the receiver's only job is to commit the callback before answering
//! (inside WeCom's 1 s for auth events, with the spool behind it when PostgreSQL is slow); the applier is
//! woken by that commit, so the job is queued milliseconds later, and a crash in between leaves the event
//! unapplied, to be applied again. The event is never lost, and never acted on twice.

use chrono::{DateTime, TimeZone, Utc};

use crate::domain::JobKind;
use crate::sync::plan::JobRequest;
use crate::wecom::events::{EventKind, SuiteEvent, TypedEvent};

/// A `suite_ticket` push to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketWrite {
    pub suite_id: String,
    pub ticket: String,
    /// The push's `TimeStamp`: the newest push wins.
    pub pushed_at: DateTime<Utc>,
    pub event_id: i64,
}

/// A `cancel_auth`: the corp stops being served at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub suite_id: String,
    pub corp_id: String,
}

/// The writes of a batch of suite events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderPlan {
    pub tickets: Vec<TicketWrite>,
    pub cancels: Vec<Cancel>,
    pub jobs: Vec<JobRequest>,
}

impl ProviderPlan {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty() && self.cancels.is_empty() && self.jobs.is_empty()
    }

    /// Adds what event `event_id`, received by the suite app `app`, implies. Events of other kinds (contact
    /// changes in suite form, `change_app_admin`, unknown InfoTypes) add nothing here: the regular planners
    /// project what they can, and the raw message stays stored.
    pub fn add(&mut self, event_id: i64, app: &str, typed: &TypedEvent) {
        let EventKind::Suite(event) = &typed.kind else {
            return;
        };
        let Some(suite_id) = typed.suite_id.clone() else {
            return;
        };
        let job = |kind: JobKind, corp_id: &str, subject: String| JobRequest {
            kind,
            app: app.to_owned(),
            corp_id: corp_id.to_owned(),
            subject,
            event_id,
        };
        match event {
            SuiteEvent::SuiteTicket { ticket } => {
                let pushed_at = typed
                    .time
                    .and_then(|t| Utc.timestamp_opt(t, 0).single())
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                self.tickets.push(TicketWrite {
                    suite_id,
                    ticket: ticket.clone(),
                    pushed_at,
                    event_id,
                });
            }
            // The AuthCode stays in the stored event: the job reads it from there, so it is never copied
            // into the job table (whose subjects operators list).
            SuiteEvent::CreateAuth { .. }
            | SuiteEvent::ResetPermanentCode {
                auth_code: Some(_), ..
            } => self
                .jobs
                .push(job(JobKind::ProviderAuth, &suite_id, event_id.to_string())),
            SuiteEvent::ChangeAuth { auth_corp_id, .. }
            | SuiteEvent::ResetPermanentCode {
                auth_code: None,
                auth_corp_id: Some(auth_corp_id),
            } => self.jobs.push(job(
                JobKind::ProviderRefresh,
                auth_corp_id,
                auth_corp_id.clone(),
            )),
            SuiteEvent::ResetPermanentCode {
                auth_code: None,
                auth_corp_id: None,
            } => {}
            SuiteEvent::CancelAuth { auth_corp_id } => {
                self.cancels.push(Cancel {
                    suite_id,
                    corp_id: auth_corp_id.clone(),
                });
                self.jobs.push(job(
                    JobKind::ProviderPurge,
                    auth_corp_id,
                    auth_corp_id.clone(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wecom::events::interpret;
    use crate::wecom::message::parse_message;

    fn typed(xml: &str) -> TypedEvent {
        interpret(&parse_message(xml.as_bytes()).expect("parses"))
    }

    #[test]
    fn tickets_are_kept_per_suite_and_auth_events_become_jobs() {
        let mut p = ProviderPlan::default();
        p.add(1, "crm", &typed("<xml><SuiteId>s1</SuiteId><InfoType> <![CDATA[suite_ticket]]></InfoType><TimeStamp>100</TimeStamp><SuiteTicket>t1</SuiteTicket></xml>"));
        p.add(2, "crm", &typed("<xml><SuiteId>s1</SuiteId><AuthCode>code</AuthCode><InfoType>create_auth</InfoType><TimeStamp>101</TimeStamp></xml>"));
        p.add(3, "crm", &typed("<xml><SuiteId>s1</SuiteId><InfoType>cancel_auth</InfoType><TimeStamp>102</TimeStamp><AuthCorpId>c1</AuthCorpId></xml>"));
        p.add(4, "crm", &typed("<xml><SuiteId>s1</SuiteId><InfoType>change_app_admin</InfoType><TimeStamp>103</TimeStamp><AuthCorpId>c1</AuthCorpId></xml>"));
        p.add(
            5,
            "crm",
            &typed("<xml><SuiteId>s1</SuiteId><InfoType>brand_new_thing</InfoType></xml>"),
        );
        assert_eq!(p.tickets.len(), 1);
        assert_eq!(p.tickets[0].suite_id, "s1");
        assert_eq!(p.tickets[0].pushed_at.timestamp(), 100);
        assert_eq!(
            p.cancels,
            vec![Cancel {
                suite_id: "s1".into(),
                corp_id: "c1".into()
            }]
        );
        let kinds: Vec<_> = p
            .jobs
            .iter()
            .map(|j| (j.kind, j.subject.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![(JobKind::ProviderAuth, "2"), (JobKind::ProviderPurge, "c1")]
        );
        assert!(!p.jobs.iter().any(|j| j.subject.contains("code")));
    }
}
