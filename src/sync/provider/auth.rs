//! The provider jobs the worker runs ([`crate::sync::worker::execute`]): the AuthCode exchange, the
//! authorisation refresh, the cancelled corp's deletion, the authorised corp's resync, and the per-corp
//! credentials every other job of a suite app runs with.

use secrecy::SecretString;

use super::{Provider, Suite, SuiteKind};
use crate::domain::{CorpState, JobKind};
use crate::store::{corps, jobs, suites};
use crate::sync::client::provider::agent_id;
use crate::sync::client::{ApiError, Credentials, TokenSource, WecomApi};
use crate::sync::worker::Worker;
use crate::wecom::events::{EventKind, SuiteEvent};

/// The credentials a job for `corp_id` of a suite app runs with, or `None` when the corp cancelled (its work
/// stops: nothing more is called for it).
pub async fn corp_credentials(
    pool: &sqlx::PgPool,
    provider: &Provider,
    suite: &Suite,
    corp_id: &str,
) -> Result<Option<Credentials>, ApiError> {
    let Some(corp) = corps::get(pool, &suite.suite_id, corp_id).await? else {
        return Err(ApiError::NotAuthorised(format!(
            "corp {corp_id} has not authorised suite {} ({}): no permanent code is stored. It is stored when \
             the create_auth callback is processed; see `wecom-callback corps` and `jobs list`",
            suite.suite_id, suite.name
        )));
    };
    if corp.state == CorpState::Cancelled {
        return Ok(None);
    }
    let code = open(provider, &corp.permanent_code)?;
    Ok(Some(Credentials {
        corp_id: corp.corp_id,
        secret: code,
        source: match suite.kind {
            SuiteKind::ThirdParty => TokenSource::Suite {
                suite_id: suite.suite_id.clone(),
                suite_secret: suite.secret.clone(),
            },
            // 代开发: the installed app's token comes from gettoken with the permanent code as its secret.
            SuiteKind::Agency => TokenSource::Gettoken,
        },
    }))
}

fn open(provider: &Provider, sealed: &[u8]) -> Result<SecretString, ApiError> {
    let key = provider.key.as_ref().ok_or_else(|| {
        ApiError::NotAuthorised(
            "no [provider] secret_key / WECOM_SECRET_KEY is configured to open permanent codes"
                .into(),
        )
    })?;
    key.open(sealed)
        .map_err(|e| ApiError::NotAuthorised(e.to_string()))
}

/// `provider_auth`: reads the AuthCode from the stored event, exchanges it for the permanent code, stores
/// the corp (code sealed) and queues its first resync.
pub async fn exchange(w: &Worker, suite: &Suite, job: &jobs::Job) -> Result<(), ApiError> {
    let key = w.provider.key.as_ref().ok_or_else(|| {
        ApiError::NotAuthorised(
            "no [provider] secret_key / WECOM_SECRET_KEY is configured: permanent codes cannot be stored \
             sealed; configure it and `jobs retry` within the AuthCode's 10 minutes (or re-authorise)"
                .into(),
        )
    })?;
    let Some(auth_code) = auth_code(&w.pool, job).await? else {
        tracing::warn!(
            job = job.id,
            "the auth event of this job is gone or has no AuthCode; nothing to exchange"
        );
        return Ok(());
    };
    let answer = match w
        .api
        .get_permanent_code(&suite.suite_id, &suite.secret, &auth_code)
        .await
    {
        Err(ApiError::Wecom(e)) if e.errcode == 40078 => {
            return Err(ApiError::NotAuthorised(format!(
                "{e}. The AuthCode of the authorisation (event {}) expired (it lives 10 minutes) or was \
                 used already: ask the corp's admin to authorise the app again (授权码已过期或已使用，请企业管理员重新授权)",
                job.subject
            )));
        }
        other => other?,
    };
    let Some(code) = answer.permanent_code else {
        return Err(ApiError::BadResponse(
            "get_permanent_code without permanent_code".into(),
        ));
    };
    let corp_id = answer.auth_corp_info.corpid.clone();
    if corp_id.is_empty() {
        return Err(ApiError::BadResponse(
            "get_permanent_code without auth_corp_info.corpid".into(),
        ));
    }
    let sealed = key.seal(&code);
    corps::authorise(
        &w.pool,
        &corps::Authorisation {
            corp_id: &corp_id,
            suite_id: &suite.suite_id,
            app: &suite.name,
            corp_name: answer.auth_corp_info.corp_name.as_deref(),
            agent_id: agent_id(&answer.auth_info),
            sealed_code: &sealed,
            auth_info: &answer.auth_info,
        },
    )
    .await?;
    jobs::enqueue_one(
        &w.pool,
        JobKind::CorpResync,
        &suite.name,
        &corp_id,
        &corp_id,
        job.event_id,
    )
    .await?;
    tracing::info!(corp_id, suite_id = %suite.suite_id, corp_name = ?answer.auth_corp_info.corp_name, "corp authorised the suite; its first resync is queued");
    if let Some(m) = &w.metrics {
        m.provider_corps.with_label_values(&["authorised"]).inc();
    }
    Ok(())
}

async fn auth_code(pool: &sqlx::PgPool, job: &jobs::Job) -> Result<Option<SecretString>, ApiError> {
    let Ok(event_id) = job.subject.parse::<i64>() else {
        return Ok(None);
    };
    let Some(message) = suites::event_message(pool, event_id).await? else {
        return Ok(None);
    };
    let Ok(parsed) = crate::wecom::message::parse_message(message.as_bytes()) else {
        return Ok(None);
    };
    Ok(match crate::wecom::events::interpret(&parsed).kind {
        EventKind::Suite(SuiteEvent::CreateAuth { auth_code, .. })
        | EventKind::Suite(SuiteEvent::ResetPermanentCode {
            auth_code: Some(auth_code),
            ..
        }) => Some(SecretString::from(auth_code)),
        _ => None,
    })
}

/// `provider_refresh` (`change_auth`): re-reads the authorisation info.
pub async fn refresh(w: &Worker, suite: &Suite, job: &jobs::Job) -> Result<(), ApiError> {
    let Some(corp) = corps::get(&w.pool, &suite.suite_id, &job.corp_id).await? else {
        tracing::warn!(corp_id = %job.corp_id, "change_auth for a corp with no stored authorisation; ignored");
        return Ok(());
    };
    if corp.state == CorpState::Cancelled {
        return Ok(());
    }
    let code = open(&w.provider, &corp.permanent_code)?;
    let info = w
        .api
        .get_auth_info(&suite.suite_id, &suite.secret, &job.corp_id, &code)
        .await?;
    corps::refresh_info(
        &w.pool,
        &suite.suite_id,
        &job.corp_id,
        info.auth_corp_info.corp_name.as_deref(),
        agent_id(&info.auth_info),
        &info.auth_info,
    )
    .await?;
    tracing::info!(corp_id = %job.corp_id, suite_id = %suite.suite_id, "corp authorisation refreshed (change_auth)");
    if let Some(m) = &w.metrics {
        m.provider_corps.with_label_values(&["refreshed"]).inc();
    }
    Ok(())
}

/// `provider_purge` (`cancel_auth`): deletes what is due (see [`purge_due`]).
pub async fn purge(w: &Worker, job: &jobs::Job) -> Result<(), ApiError> {
    tracing::info!(corp_id = %job.corp_id, "corp cancelled its authorisation (cancel_auth): its work stopped");
    if let Some(m) = &w.metrics {
        m.provider_corps.with_label_values(&["cancelled"]).inc();
    }
    purge_due(&w.pool, &w.provider, w.metrics.as_ref()).await?;
    Ok(())
}

/// Deletes cancelled corps' synced rows and stored events once their grace periods have passed; logs and
/// counts what went. Also run periodically by the prune loop, for grace periods longer than zero.
pub async fn purge_due(
    pool: &sqlx::PgPool,
    provider: &Provider,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<corps::Purged, sqlx::Error> {
    let p = corps::purge_due(
        pool,
        provider.delete_rows_after,
        provider.delete_events_after,
    )
    .await?;
    if p.corps_rows > 0 || p.corps_events > 0 || p.late_events > 0 {
        tracing::info!(
            corps_rows = p.corps_rows,
            rows = p.rows,
            corps_events = p.corps_events,
            events = p.events,
            late_events = p.late_events,
            "deleted the data of corps that cancelled their authorisation"
        );
    }
    if let Some(m) = metrics {
        m.provider_corps
            .with_label_values(&["rows_deleted"])
            .inc_by(p.corps_rows);
        m.provider_corps
            .with_label_values(&["events_deleted"])
            .inc_by(p.corps_events);
    }
    Ok(p)
}

/// `corp_resync`: a full resync of the authorised corp with its own token. Another resync of the corp under
/// way covers it.
pub async fn corp_resync(
    pool: &sqlx::PgPool,
    api: &WecomApi,
    app: &str,
    creds: &Credentials,
) -> Result<(), ApiError> {
    let options = crate::sync::resync::Options::new(std::time::Duration::from_millis(50));
    match crate::sync::resync::resync_with(pool, api, app, creds, &options).await {
        Ok(_)
        | Err(crate::sync::resync::ResyncError::Busy { .. })
        | Err(crate::sync::resync::ResyncError::Cancelled { .. }) => Ok(()),
        Err(crate::sync::resync::ResyncError::Api(e)) => Err(e),
        Err(crate::sync::resync::ResyncError::Database(e)) => Err(ApiError::Database(e)),
    }
}

/// How often authorised corps are checked for a due resync.
const RESYNC_CHECK: std::time::Duration = std::time::Duration::from_secs(600);

/// Queues a resync of every authorised corp once per `interval` (`[api] resync_interval_hours`), as the
/// scheduler does for configured apps; the workers of any replica run them. Until `token` is cancelled.
pub async fn schedule_resyncs(
    pool: sqlx::PgPool,
    interval: std::time::Duration,
    token: tokio_util::sync::CancellationToken,
) {
    loop {
        match corps::queue_due_resyncs(&pool, interval).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(corps = n, "authorised corps' resyncs queued"),
            Err(e) => {
                tracing::warn!(error = %e, "queuing authorised corps' resyncs failed; retrying later")
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(RESYNC_CHECK) => {}
        }
    }
}
