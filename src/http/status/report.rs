//! [`Report`]: everything the status page shows, gathered from PostgreSQL (and the spool) in one place so the
//! page, `/status.json` and `wecom-callback status` say the same.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::app::AppConfig;
use crate::store::status::{self, ResyncSummary, Verification};
use crate::sync::client::Credentials;
use crate::sync::client::provider::TICKET_LIFE_SECS;
use crate::sync::provider::Suite;
use crate::wecom::errcode;

use super::advice::{self, Lang};

/// The whole operator's view.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    pub apps: Vec<AppStatus>,
    /// Service providers' suites (`[[suites]]`): tickets, suite tokens, authorised corps. Empty without.
    pub suites: Vec<SuiteStatus>,
    /// The spool, when this process has one (the page of a running service; `None` from the CLI).
    pub spool: Option<SpoolStatus>,
}

/// One `[[suites]]` entry's state: what its work needs (a fresh suite_ticket, the suite token) and its corps.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteStatus {
    /// Its `[[suites]]` name: also the app of its instruction URL (that app's section has its callbacks).
    pub name: String,
    /// `third_party` or `agency`.
    pub kind: &'static str,
    pub suite_id: String,
    /// `fresh` (within its 30-minute life), `stale` (older: WeCom refuses it, 40085) or `none` (none yet).
    pub ticket: &'static str,
    pub ticket_received_at: Option<DateTime<Utc>>,
    pub ticket_age_secs: Option<i64>,
    /// The cached suite_access_token (fetched from the ticket when a job needs it).
    pub token: SuiteTokenStatus,
    pub corps: crate::store::corps::CorpCounts,
}

/// A suite's cached `suite_access_token`; the token itself is never read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuiteTokenStatus {
    pub refreshed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub valid: bool,
}

/// One app's state.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    pub name: String,
    pub kind: &'static str,
    /// The receive ids (corpid, suite id): public identifiers, shown to tell apps apart.
    pub receive_ids: Vec<String>,
    /// The last URL verification attempt, with its fix when it failed.
    pub verification: Option<Verification>,
    pub verification_fix: Option<&'static str>,
    pub events_total: i64,
    pub last_callback_at: Option<DateTime<Utc>>,
    pub last_callback_kind: Option<String>,
    /// Callbacks by outcome (`stored`, `bad_signature`, ...) over the last hour and day.
    pub outcomes: Vec<OutcomeRow>,
    /// The last 24 hours, oldest first, one entry per hour (zero when nothing came).
    pub hourly: Vec<Hour>,
    pub projector: ProjectorStatus,
    pub jobs: JobsStatus,
    pub resync: Option<ResyncSummary>,
    /// The access token of the app's secret; `None` when the app has no secret.
    pub token: Option<TokenStatus>,
}

/// Callbacks of one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeRow {
    pub outcome: String,
    pub last_hour: i64,
    pub last_day: i64,
    /// What to do about it, when it is a refusal.
    pub fix: Option<&'static str>,
}

/// One hour of the chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hour {
    pub hour: DateTime<Utc>,
    pub acknowledged: i64,
    pub refused: i64,
}

/// How far the synced tables are behind `wecom_events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectorStatus {
    pub unapplied: i64,
    /// Seconds since the oldest unapplied event arrived (0 when none).
    pub lag_secs: i64,
    /// Unapplied events held back because the tables refused them, the oldest of them and why.
    pub held: i64,
    pub held_event_id: Option<i64>,
    pub held_error: Option<String>,
}

/// The app's WeCom API jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobsStatus {
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
    /// The most recent dead job's error, shortened to its first sentence.
    pub last_dead_error: Option<String>,
    pub last_dead_errcode: Option<i64>,
    /// What that errcode means and its usual fix.
    pub last_dead_explained: Option<String>,
}

/// The app's access token and what WeCom said of this server's IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenStatus {
    pub corp_id: String,
    pub refreshed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub valid: bool,
    /// The egress IP WeCom saw in its last 60020 answer: the address to add to 企业可信IP.
    pub refused_ip: Option<String>,
    pub refused_ip_at: Option<DateTime<Utc>>,
}

/// The local spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpoolStatus {
    pub dir: PathBuf,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// Gathers the report for the configured `apps` (in name order) and `suites`.
pub async fn gather(
    pool: &PgPool,
    apps: &[&AppConfig],
    credentials: &HashMap<String, Credentials>,
    suites: &[Suite],
    spool: Option<SpoolStatus>,
    lang: Lang,
) -> Result<Report, sqlx::Error> {
    let now = Utc::now();
    let verifications = status::verifications(pool).await?;
    let totals = status::outcome_totals(pool).await?;
    let hourly = status::hourly(pool).await?;
    let events = status::events(pool).await?;
    let jobs = status::jobs(pool).await?;
    let resyncs = status::last_resyncs(pool).await?;
    let tokens = status::tokens(pool).await?;
    let this_hour = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let mut out = Vec::with_capacity(apps.len());
    for app in apps {
        let name = app.name.as_str();
        let verification = verifications.iter().find(|v| v.app == name).cloned();
        let verification_fix = verification
            .as_ref()
            .and_then(|v| advice::fix(&v.outcome, lang));
        let ev = events.iter().find(|e| e.app == name);
        let outcomes = totals
            .iter()
            .filter(|t| t.app == name)
            .map(|t| OutcomeRow {
                outcome: t.outcome.clone(),
                last_hour: t.last_hour,
                last_day: t.last_day,
                fix: advice::fix(&t.outcome, lang),
            })
            .collect();
        let hours = (0..24)
            .rev()
            .map(|back| {
                let hour = this_hour - TimeDelta::hours(back);
                let b = hourly.iter().find(|h| h.app == name && h.hour == hour);
                Hour {
                    hour,
                    acknowledged: b.map_or(0, |b| b.acknowledged),
                    refused: b.map_or(0, |b| b.refused),
                }
            })
            .collect();
        let projector = ProjectorStatus {
            unapplied: ev.map_or(0, |e| e.unapplied),
            lag_secs: ev
                .and_then(|e| e.oldest_unapplied_at)
                .map_or(0, |t| (now - t).num_seconds().max(0)),
            held: ev.map_or(0, |e| e.held),
            held_event_id: ev.and_then(|e| e.held_event_id),
            held_error: ev.and_then(|e| e.held_error.as_deref()).map(short),
        };
        let j = jobs.iter().find(|j| j.app == name);
        let jobs = JobsStatus {
            queued: j.map_or(0, |j| j.queued),
            running: j.map_or(0, |j| j.running),
            dead: j.map_or(0, |j| j.dead),
            last_dead_error: j.and_then(|j| j.last_dead_error.as_deref()).map(short),
            last_dead_errcode: j.and_then(|j| j.last_dead_errcode),
            last_dead_explained: j
                .and_then(|j| j.last_dead_errcode)
                .and_then(errcode::explain)
                .map(|i| explained(i, lang)),
        };
        let token = match credentials.get(name) {
            None => None,
            Some(c) => {
                let hash = c.secret_hash();
                let t = tokens
                    .iter()
                    .find(|t| t.corp_id == c.corp_id && t.secret_hash == hash);
                let refusal = status::last_ip_refusal(pool, name).await?;
                Some(TokenStatus {
                    corp_id: c.corp_id.clone(),
                    refreshed_at: t.map(|t| t.refreshed_at),
                    expires_at: t.map(|t| t.expires_at),
                    valid: t.is_some_and(|t| t.expires_at > now),
                    refused_ip: refusal.as_ref().and_then(|(_, msg)| from_ip(msg)),
                    refused_ip_at: refusal.map(|(at, _)| at),
                })
            }
        };
        out.push(AppStatus {
            name: app.name.clone(),
            kind: app.kind.as_str(),
            receive_ids: app.receive_ids.clone(),
            verification,
            verification_fix,
            events_total: ev.map_or(0, |e| e.total),
            last_callback_at: ev.and_then(|e| e.last_received_at),
            last_callback_kind: ev.and_then(|e| e.last_kind.clone()),
            outcomes,
            hourly: hours,
            projector,
            jobs,
            resync: resyncs.iter().find(|r| r.app == name).cloned(),
            token,
        });
    }
    let suites = gather_suites(pool, suites, &tokens, now).await?;
    Ok(Report {
        generated_at: now,
        apps: out,
        suites,
        spool,
    })
}

/// Each suite's ticket, suite token and corps (in configuration order).
async fn gather_suites(
    pool: &PgPool,
    suites: &[Suite],
    tokens: &[status::TokenState],
    now: DateTime<Utc>,
) -> Result<Vec<SuiteStatus>, sqlx::Error> {
    if suites.is_empty() {
        return Ok(Vec::new());
    }
    let tickets = crate::store::suites::ticket_ages(pool).await?;
    let counts = crate::store::corps::counts(pool).await?;
    Ok(suites
        .iter()
        .map(|s| {
            let ticket = tickets.iter().find(|t| t.suite_id == s.suite_id);
            let hash = crate::sync::client::provider::suite_secret_hash(&s.secret);
            let token = tokens
                .iter()
                .find(|t| t.corp_id == s.suite_id && t.secret_hash == hash);
            SuiteStatus {
                name: s.name.clone(),
                kind: s.kind.as_str(),
                suite_id: s.suite_id.clone(),
                ticket: match ticket {
                    None => "none",
                    Some(t) if t.age_secs > TICKET_LIFE_SECS => "stale",
                    Some(_) => "fresh",
                },
                ticket_received_at: ticket.map(|t| now - TimeDelta::seconds(t.age_secs)),
                ticket_age_secs: ticket.map(|t| t.age_secs),
                token: SuiteTokenStatus {
                    refreshed_at: token.map(|t| t.refreshed_at),
                    expires_at: token.map(|t| t.expires_at),
                    valid: token.is_some_and(|t| t.expires_at > now),
                },
                corps: counts
                    .iter()
                    .find(|c| c.suite_id == s.suite_id)
                    .cloned()
                    .unwrap_or_else(|| crate::store::corps::CorpCounts {
                        suite_id: s.suite_id.clone(),
                        ..Default::default()
                    }),
            }
        })
        .collect())
}

/// An errcode in the page's language: in English our meaning and fix; in Chinese WeCom's own (Chinese)
/// description, and where to read the fix (our fix texts are English).
fn explained(i: &errcode::ErrcodeInfo, lang: Lang) -> String {
    match lang {
        Lang::En => format!("{}: {}", i.meaning, i.fix),
        Lang::Zh => format!(
            "错误码 {code}：{desc}。修改方法：运行 `wecom-callback explain {code}`，或查询企业微信错误码工具 \
             https://open.work.weixin.qq.com/devtool/query?e={code}",
            code = i.code,
            desc = i.description.trim_end_matches(['。', '.']),
        ),
    }
}

/// The first sentence (or 200 characters) of an error: enough to recognise it in a table.
pub fn short(error: &str) -> String {
    let first = error
        .split_once(". ")
        .map_or(error, |(head, _)| head)
        .trim_end_matches('.');
    if first.chars().count() > 200 {
        let cut: String = first.chars().take(199).collect();
        format!("{cut}…")
    } else {
        first.to_owned()
    }
}

/// The `from ip: a.b.c.d` of a WeCom errmsg.
fn from_ip(msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once("from ip: ")?;
    let ip: String = rest
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '.' || *c == ':')
        .collect();
    ip.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

impl Report {
    /// Problems worth failing `doctor` on or showing first (in English): dead jobs, a failed resync, a
    /// failing URL verification, refused API calls.
    pub fn problems(&self) -> Vec<String> {
        self.problems_in(Lang::En)
    }

    /// [`Report::problems`] in `lang`. Raw error texts (English) are left out of the Chinese ones: the page
    /// shows them separately, marked as such.
    pub fn problems_in(&self, lang: Lang) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.apps {
            if let Some(v) = a
                .verification
                .as_ref()
                .filter(|v| v.outcome != "url_verified")
            {
                let at = v.attempted_at.format("%Y-%m-%d %H:%M:%S UTC");
                out.push(match lang {
                    Lang::En => format!(
                        "{}: the last URL verification ({at}) failed: {}",
                        a.name, v.outcome
                    ),
                    Lang::Zh => format!(
                        "{}：最近一次 URL 验证（{at}）失败：{}",
                        a.name,
                        advice::outcome_name(&v.outcome, lang)
                    ),
                });
            }
            if a.jobs.dead > 0 {
                out.push(match lang {
                    Lang::En => format!(
                        "{}: {} dead job(s); last error: {} (see `wecom-callback jobs list --status dead`, then \
                         `jobs retry --all-dead`)",
                        a.name,
                        a.jobs.dead,
                        a.jobs.last_dead_error.as_deref().unwrap_or("-")
                    ),
                    Lang::Zh => format!(
                        "{}：{} 个任务已失败{}（查看：`wecom-callback jobs list --status dead`，修复后重新排队：\
                         `wecom-callback jobs retry --all-dead`）",
                        a.name,
                        a.jobs.dead,
                        a.jobs
                            .last_dead_errcode
                            .map(|c| format!("，最近一次错误码 {c}"))
                            .unwrap_or_default()
                    ),
                });
            }
            if let Some(r) = a.resync.as_ref().filter(|r| r.status == "failed") {
                out.push(match lang {
                    Lang::En => format!(
                        "{}: the last resync failed: {}",
                        a.name,
                        r.last_error.as_deref().map(short).unwrap_or_default()
                    ),
                    Lang::Zh => format!(
                        "{}：最近一次全量同步失败（原因见下方该应用的「最近全量同步」；重试：`wecom-callback resync`）",
                        a.name
                    ),
                });
            }
            if let Some(ip) = a.token.as_ref().and_then(|t| t.refused_ip.as_deref()) {
                out.push(match lang {
                    Lang::En => format!(
                        "{}: WeCom refused this server's IP {ip} (60020): add it to the app's 企业可信IP",
                        a.name
                    ),
                    Lang::Zh => format!(
                        "{}：企业微信拒绝了本机出口 IP {ip}（60020）：请把它加入该应用的「企业可信IP」",
                        a.name
                    ),
                });
            }
        }
        for s in &self.suites {
            let label = if s.kind == "agency" {
                "代开发模板"
            } else {
                "第三方应用"
            };
            match (s.ticket, lang) {
                ("none", Lang::En) => out.push(format!(
                    "suite {}: no suite_ticket has arrived yet: WeCom pushes one to /callback/{} every 10 \
                     minutes once the instruction URL is verified; 刷新Ticket in the provider console pushes one now",
                    s.name, s.name
                )),
                ("none", Lang::Zh) => out.push(format!(
                    "{label} {}：尚未收到 suite_ticket。指令回调 URL 验证通过后，企业微信每 10 分钟推送一次到 \
                     `/callback/{}`；在服务商后台点「刷新Ticket」可立即推送",
                    s.name, s.name
                )),
                ("stale", Lang::En) => out.push(format!(
                    "suite {}: the newest suite_ticket is {} minutes old (WeCom pushes every 10, valid 30): \
                     pushes stopped arriving; check /callback/{} below, or press 刷新Ticket in the provider console",
                    s.name,
                    s.ticket_age_secs.unwrap_or(0) / 60,
                    s.name
                )),
                ("stale", Lang::Zh) => out.push(format!(
                    "{label} {}：最新的 suite_ticket 已是 {} 分钟前（每 10 分钟推送一次，有效 30 分钟），推送已中断；\
                     请检查下方 `/callback/{}` 的回调，或在服务商后台点「刷新Ticket」",
                    s.name,
                    s.ticket_age_secs.unwrap_or(0) / 60,
                    s.name
                )),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keeps_the_first_sentence() {
        assert_eq!(
            short("WeCom said 60020. Add the IP. More."),
            "WeCom said 60020"
        );
        assert_eq!(short("one sentence"), "one sentence");
        assert_eq!(short(&"x".repeat(300)).chars().count(), 200);
    }

    #[test]
    fn from_ip_reads_wecom_errmsg() {
        assert_eq!(
            from_ip("not allow to access from your ip, hint: [1], from ip: 9.30.0.138, more info"),
            Some("9.30.0.138".into())
        );
        assert_eq!(from_ip("no ip here"), None);
        assert_eq!(from_ip("from ip: <script>"), None);
    }
}
