//! `doctor`: check the configuration, the database, URL verification and each secret, explaining every failure.

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

    let target = store::describe(&settings.database);
    let pool = match store::pool(&settings.database) {
        Ok(p) => Some(p),
        Err(e) => {
            report(false, "database", format!("{target}: {e}"));
            None
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
        }
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
                "{readyz}: not answering ({e}); start `wecom-callback serve`, or pass --service-url if it \
                 listens elsewhere"
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
    if failures > 0 {
        anyhow::bail!("{failures} check(s) failed (FAIL lines above)");
    }
    println!("\nEvery check passed.");
    Ok(())
}
