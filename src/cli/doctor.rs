//! `doctor`: check the configuration, the database, URL verification and each secret, explaining every failure.

use secrecy::ExposeSecret;

use super::Context;
use crate::store;

/// Options of `doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Your public base URL (e.g. https://example.com): URL verification is then tried through it, as
    /// WeCom would; without it, it is simulated locally.
    #[arg(long)]
    pub public_url: Option<String>,
    /// The running service, to check its /readyz [default: --public-url, else http:// and the listen
    /// address, WECOM_LISTEN].
    #[arg(long, value_name = "URL")]
    pub service_url: Option<String>,
}

/// Runs every check and prints one line per check; fails when any check fails.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let public_url = args.public_url.as_deref();
    let mut failures = 0;
    let mut report = |ok: bool, check: &str, detail: String| {
        println!("{} {check:<22} {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    let settings = match ctx.settings() {
        Ok(s) => s,
        Err(e) => {
            report(false, "configuration", format!("{e:#}"));
            anyhow::bail!("fix the configuration first");
        }
    };
    for app in &settings.apps {
        report(
            true,
            "configuration",
            format!(
                "app {:?} ({}): Token and 43-character EncodingAESKey valid, receive ids {:?}, {}",
                app.name,
                app.kind.as_str(),
                app.receive_ids,
                if app.secret.is_some() {
                    "secret set"
                } else {
                    "no secret (events only)"
                }
            ),
        );
    }

    let mut target = store::describe(&settings.database);
    // No database configured: the private cluster serve runs, found as every command finds it.
    let pool = match ctx.locate(settings.database.clone()) {
        Err(e) => {
            report(false, "database", format!("{e:#}"));
            None
        }
        Ok(database) => {
            if database.url.expose_secret() != settings.database.url.expose_secret() {
                target = format!(
                    "the private cluster serve runs ({})",
                    store::describe(&database)
                );
            }
            match store::pool(&database) {
                Ok(p) => Some(p),
                Err(e) => {
                    report(false, "database", format!("{target}: {e}"));
                    None
                }
            }
        }
    };
    if let Some(pool) = &pool {
        match store::readiness(pool).await {
            Ok(()) => report(true, "database", format!("{target} reachable and migrated")),
            Err(why) => report(
                false,
                "database",
                format!("{target}: {why} (start PostgreSQL, or run `wecom-callback migrate`)"),
            ),
        }
    }

    let now = chrono::Utc::now().timestamp();
    // The same replay window serve applies.
    let tolerance = settings.http.timestamp_tolerance.as_secs();
    for app in &settings.apps {
        let receive_id = app.receive_ids.first().cloned().unwrap_or_default();
        let request = crate::tools::send_test::verification(app, &receive_id, now);
        match public_url {
            Some(base) => {
                let url = format!("{}/callback/{}", base.trim_end_matches('/'), app.name);
                let r = crate::tools::send_test::send(&url, std::slice::from_ref(&request)).await;
                let ok = r.first().is_some_and(|r| r.ok);
                let detail = r
                    .first()
                    .map(|r| match &r.error {
                        Some(e) => format!("{url}: {e}"),
                        None => format!(
                            "{url}: HTTP {} in {} ms",
                            r.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                            r.millis
                        ),
                    })
                    .unwrap_or_default();
                report(ok, "URL verification", detail);
            }
            None => {
                let q = crate::wecom::verify::parse_query(&request.query, true);
                let ok = q
                    .map_err(crate::wecom::verify::Rejection::from)
                    .and_then(|q| crate::wecom::verify::verify_url(app, &q, now, tolerance))
                    .is_ok_and(|e| e.plaintext() == request.expect.as_bytes());
                report(
                    ok,
                    "keys self-check",
                    format!(
                        "app {:?}: a verification signed and encrypted with these settings passes them (this \
                         checks the configuration only; add --public-url https://your.domain to go through \
                         your proxy and the running service as WeCom does)",
                        app.name
                    ),
                );
            }
        }
    }

    let credentials = crate::sync::worker::credentials(&settings.apps);
    if let (Some(pool), false) = (&pool, credentials.is_empty()) {
        let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?
            .with_limits(settings.api.limits.clone());
        for (name, creds) in &credentials {
            match api.access_token(creds).await {
                Ok(_) => report(
                    true,
                    "secret (gettoken)",
                    format!(
                        "app {name:?}: the secret is valid for corp {}",
                        creds.corp_id
                    ),
                ),
                Err(e) => {
                    report(false, "secret (gettoken)", format!("app {name:?}: {e}"));
                    continue;
                }
            }
            match api.follow_user_list(creds).await {
                Ok(users) => report(
                    true,
                    "客户联系 permission",
                    format!("app {name:?}: {} member(s) with 客户联系", users.len()),
                ),
                Err(e) => report(false, "客户联系 permission", format!("app {name:?}: {e}")),
            }
            let (ok, detail) = directory_check(&api, pool, name, creds).await;
            report(ok, "directory (通讯录)", detail);
        }
    }
    if let (Some(pool), true) = (&pool, settings.provider.is_enabled()) {
        let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?
            .with_limits(settings.api.limits.clone());
        provider_checks(&settings.provider, &api, pool, &mut report).await;
    }
    // The running service, as a load balancer sees it.
    let service = args
        .service_url
        .clone()
        .or_else(|| args.public_url.clone())
        .unwrap_or_else(|| format!("http://{}", settings.http.listen));
    let readyz = format!("{}/readyz", service.trim_end_matches('/'));
    let answer = async {
        let client = crate::tls::client_builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        client.get(&readyz).send().await
    }
    .await;
    match answer {
        Ok(r) if r.status().is_success() => report(true, "service", format!("{readyz}: ready")),
        Ok(r) => report(
            false,
            "service",
            format!(
                "{readyz}: HTTP {} — the service runs but cannot store callbacks (its log says why; the \
                 database or a failed background task)",
                r.status().as_u16()
            ),
        ),
        Err(e) => report(
            false,
            "service",
            format!(
                "{readyz}: not answering ({}); start `wecom-callback serve`, or pass --service-url if it \
                 listens elsewhere",
                crate::tools::send_test::request_error(&e)
            ),
        ),
    }

    // What the service recorded: the last URL verification, dead jobs, the last resync.
    if let Some(pool) = &pool {
        let apps: Vec<_> = settings.apps.iter().collect();
        match crate::http::status::report::gather(
            pool,
            &apps,
            &credentials,
            // Suites are checked by `provider_checks` (with a live suite token call).
            &[],
            None,
            crate::http::status::Lang::En,
        )
        .await
        {
            Ok(r) => {
                let problems = r.problems();
                for p in &problems {
                    report(false, "recorded state", p.clone());
                }
                if problems.is_empty() {
                    report(
                        true,
                        "recorded state",
                        "no failed URL verification, dead job, failed resync or refused IP recorded".into(),
                    );
                }
            }
            Err(e) => report(false, "recorded state", format!("cannot read it: {e}")),
        }
    }
    if let Some(pool) = &pool {
        match crate::store::feed::staging_backlog(pool).await {
            Ok((n, age)) if n > 0 && age > 60.0 => report(
                false,
                "change feed",
                format!(
                    "{n} change(s) staged but not in the feed, the oldest {age:.0} s ago: no sequencer runs \
                     (run `serve` with [feed] run_sequencer = true on at least one replica)"
                ),
            ),
            Ok((n, _)) => report(true, "change feed", format!("sequencing ({n} staged)")),
            Err(e) => report(false, "change feed", format!("cannot read it: {e}")),
        }
    }
    if let (Some(pool), false) = (&pool, settings.webhooks.is_empty()) {
        match crate::store::feed::subscribers(pool).await {
            Ok(stored) => {
                for w in &settings.webhooks {
                    match stored.iter().find(|s| s.name == w.name) {
                        Some(s) if s.failing_since.is_some() => report(
                            false,
                            "webhook",
                            format!(
                                "{:?} is failing since {}: {} (fix the receiver; it keeps its cursor and \
                                 catches up; see `wecom-callback webhooks`)",
                                w.name,
                                s.failing_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
                                s.last_error.as_deref().unwrap_or("no error recorded")
                            ),
                        ),
                        Some(s) => report(
                            true,
                            "webhook",
                            format!("{:?} delivering (cursor {})", w.name, s.position),
                        ),
                        None => report(
                            true,
                            "webhook",
                            format!("{:?} configured, not started yet", w.name),
                        ),
                    }
                }
            }
            Err(e) => report(
                false,
                "webhook",
                format!("cannot read the subscribers: {e}"),
            ),
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} check(s) failed (FAIL lines above)");
    }
    println!("\nEvery check passed.");
    Ok(())
}

/// What this app's secret can read of the staff directory (WeCom's 2022 restrictions). Restrictions are
/// reported, not failed on: the directory keeps what the callbacks carry and records per member what
/// `user/get` did not give. Only a failure to reach the database fails the check.
async fn directory_check(
    api: &crate::sync::client::WecomApi,
    pool: &sqlx::PgPool,
    name: &str,
    creds: &crate::sync::client::Credentials,
) -> (bool, String) {
    use crate::sync::client::ApiError;
    let listing = match api.user_list_id(creds, "").await {
        Ok(page) => format!(
            "user/list_id readable ({} member id(s) on the first page)",
            page.dept_user.len()
        ),
        Err(ApiError::Wecom(e)) if e.errcode == 48009 => "user/list_id refused (48009): WeCom refuses the \
             通讯录 secret from a new IP; add this server's IP to 企业可信IP, or use the app's own secret \
             (events still fill the directory)"
            .to_owned(),
        Err(ApiError::Wecom(e)) if e.errcode == 60011 || e.errcode == 48002 => format!(
            "user/list_id refused ({}): the app may not read the directory beyond its 可见范围; staff rows \
             keep what the callbacks carry",
            e.errcode
        ),
        Err(e) => format!("user/list_id failed: {e}"),
    };
    match store::directory::readability(pool, name, &creds.corp_id).await {
        Ok(r) => {
            let missing = if r.unavailable.is_empty() {
                "every field".to_owned()
            } else {
                let fields: Vec<String> = r
                    .unavailable
                    .iter()
                    .map(|(f, n)| format!("{f} ({n})"))
                    .collect();
                format!(
                    "all but {} — not readable with this secret",
                    fields.join(", ")
                )
            };
            let refusal = r
                .last_refusal
                .map(|(code, msg)| format!("; last failed user/get: errcode {code:?}: {msg}"))
                .unwrap_or_default();
            // The directory step of the newest finished resync, when WeCom refused it the directory.
            let skipped = match store::resync::last_directory_skip(pool, name).await {
                Ok(Some(why)) => format!("; the last resync skipped the directory: {why}"),
                Ok(None) => String::new(),
                Err(e) => format!("; the resync runs are unreadable: {e}"),
            };
            (
                true,
                format!(
                    "app {name:?}: {listing}; {} staff known, {} fetched with user/get, which gave {missing}{refusal}{skipped}",
                    r.staff, r.fetched
                ),
            )
        }
        Err(e) => (
            false,
            format!("app {name:?}: {listing}; the staff table is unreadable: {e}"),
        ),
    }
}

/// Service providers: each suite's ticket age and suite token, and each authorised corp's token.
async fn provider_checks(
    provider: &crate::sync::provider::Provider,
    api: &crate::sync::client::WecomApi,
    pool: &sqlx::PgPool,
    report: &mut impl FnMut(bool, &str, String),
) {
    use crate::sync::client::provider::TICKET_LIFE_SECS;
    for suite in &provider.suites {
        let who = format!("suite {:?} ({})", suite.name, suite.suite_id);
        match store::suites::ticket(pool, &suite.suite_id).await {
            Ok(Some(t)) if t.age_secs <= TICKET_LIFE_SECS => report(
                true,
                "suite_ticket",
                format!("{who}: received {} s ago", t.age_secs),
            ),
            Ok(Some(t)) => report(
                false,
                "suite_ticket",
                format!(
                    "{who}: the newest is {} minutes old (WeCom pushes every 10, valid 30): pushes stopped \
                     arriving. Check /status for /callback/{}, or press 刷新Ticket in the provider console",
                    t.age_secs / 60,
                    suite.name
                ),
            ),
            Ok(None) => report(
                false,
                "suite_ticket",
                format!(
                    "{who}: none received yet. WeCom pushes one to /callback/{} every 10 minutes once the \
                     指令回调URL is verified; 刷新Ticket in the provider console pushes one now",
                    suite.name
                ),
            ),
            Err(e) => report(false, "suite_ticket", format!("{who}: {e}")),
        }
        match api.suite_access_token(&suite.suite_id, &suite.secret).await {
            Ok(_) => report(
                true,
                "suite token",
                format!("{who}: suite_access_token valid"),
            ),
            Err(e) => report(false, "suite token", format!("{who}: {e}")),
        }
    }
    let corps = match store::corps::list(pool).await {
        Ok(c) => c,
        Err(e) => return report(false, "authorised corps", e.to_string()),
    };
    for corp in corps
        .iter()
        .filter(|c| c.state == crate::domain::CorpState::Authorised)
    {
        let Some(suite) = provider.suite_by_app(&corp.app) else {
            report(
                false,
                "authorised corp",
                format!(
                    "corp {} authorised app {:?}, which is no configured [[suites]] entry any more",
                    corp.corp_id, corp.app
                ),
            );
            continue;
        };
        let checked = async {
            let creds =
                crate::sync::provider::auth::corp_credentials(pool, provider, suite, &corp.corp_id)
                    .await?;
            match creds {
                Some(c) => api.access_token(&c).await.map(|_| ()),
                None => Ok(()),
            }
        }
        .await;
        let who = format!(
            "corp {} ({}) of suite {:?}",
            corp.corp_id,
            corp.corp_name.as_deref().unwrap_or("-"),
            suite.name
        );
        match checked {
            Ok(()) => report(
                true,
                "authorised corp",
                format!("{who}: access token valid"),
            ),
            Err(e) => report(false, "authorised corp", format!("{who}: {e}")),
        }
    }
}
