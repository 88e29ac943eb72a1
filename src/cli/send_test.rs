//! `send-test`: requests signed and encrypted exactly as WeCom would send them, to test a deployment end to end.

use super::{Context, select_app};
use crate::tools::send_test;

/// The sample events `send-test` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TestEvent {
    /// A member added a customer.
    AddExternalContact,
    /// A follow was edited.
    EditExternalContact,
    /// A customer was added without the member's confirmation yet.
    AddHalfExternalContact,
    /// A member deleted a customer.
    DelExternalContact,
    /// A customer deleted the member.
    DelFollowUser,
    /// A customer transfer failed.
    TransferFail,
    /// A group chat changed.
    ChangeExternalChat,
    /// A customer tag changed.
    ChangeExternalTag,
    /// The address book changed.
    ChangeContact,
    /// A suite ticket (third-party suites).
    SuiteTicket,
}

impl TestEvent {
    /// The name [`send_test::sample_event`] knows it by.
    fn as_str(self) -> &'static str {
        match self {
            TestEvent::AddExternalContact => "add_external_contact",
            TestEvent::EditExternalContact => "edit_external_contact",
            TestEvent::AddHalfExternalContact => "add_half_external_contact",
            TestEvent::DelExternalContact => "del_external_contact",
            TestEvent::DelFollowUser => "del_follow_user",
            TestEvent::TransferFail => "transfer_fail",
            TestEvent::ChangeExternalChat => "change_external_chat",
            TestEvent::ChangeExternalTag => "change_external_tag",
            TestEvent::ChangeContact => "change_contact",
            TestEvent::SuiteTicket => "suite_ticket",
        }
    }
}

/// Options of `send-test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The full callback URL, exactly as entered in the WeCom console, e.g. https://example.com/callback/crm.
    #[arg(long)]
    pub url: String,
    /// The app whose Token and key to sign with [default: the only app].
    #[arg(long)]
    pub app: Option<String>,
    /// Event to send (repeatable).
    #[arg(long = "event", value_enum, value_name = "EVENT", default_values_t = [TestEvent::AddExternalContact])]
    pub events: Vec<TestEvent>,
    /// Receive id to put inside the ciphertext [default: the app's first].
    #[arg(long)]
    pub receive_id: Option<String>,
    /// Skip the URL verification (GET).
    #[arg(long)]
    pub no_verify: bool,
}

/// Sends the requests and checks each answer; fails when any does not pass.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    let app = select_app(&settings.apps, args.app.as_deref())?;
    let receive_id = args
        .receive_id
        .clone()
        .or_else(|| app.receive_ids.first().cloned())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let marker = format!("{:08x}", rand::random::<u32>());
    let mut requests = Vec::new();
    if !args.no_verify {
        requests.push(send_test::verification(app, &receive_id, now));
    }
    for e in &args.events {
        let name = e.as_str();
        let xml = send_test::sample_event(name, &receive_id, now, &marker).ok_or_else(|| {
            // Only if TestEvent and send_test::EVENTS drift apart; a test keeps them in step.
            anyhow::anyhow!(
                "no sample for --event {name}; one of {:?}",
                send_test::EVENTS
            )
        })?;
        requests.push(send_test::callback(app, &receive_id, &xml, name, now));
    }
    // Exactly as given: the URL entered in the console is what WeCom calls.
    let url = args.url.trim();
    let results = send_test::send(url, &requests).await;
    let mut failed = 0;
    for (r, req) in results.iter().zip(&requests) {
        let status = r
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{} {:<45} status {status:<3} {:>5} ms  body {:?}{}",
            if r.ok { "ok  " } else { "FAIL" },
            r.label,
            r.millis,
            r.body,
            r.error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
        if !r.ok {
            failed += 1;
            if r.error.is_none() {
                println!("     expected status 200 and body {:?}", req.expect);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} requests failed", results.len());
    }
    println!(
        "All {} requests passed: {url} answers like WeCom expects.",
        results.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_test_event_has_a_sample_and_every_sample_an_event() {
        let names: Vec<&str> = TestEvent::value_variants()
            .iter()
            .map(|e| e.as_str())
            .collect();
        assert_eq!(names, send_test::EVENTS);
        for e in TestEvent::value_variants() {
            assert_eq!(
                e.to_possible_value().map(|v| v.get_name().to_owned()),
                Some(e.as_str().to_owned())
            );
            assert!(send_test::sample_event(e.as_str(), "ww1", 1, "m").is_some());
        }
    }
}
