//! One app's section of the page: URL verification, callbacks, outcomes, projector, jobs, resync, token.

use std::fmt::Write as _;

use super::super::advice::{self, Lang};
use super::super::report::AppStatus;
use super::html::{esc, esc_code, raw, t, time};

/// The app's section.
pub(super) fn section(h: &mut String, a: &AppStatus, lang: Lang) {
    let id = esc(&a.name);
    let _ = write!(
        h,
        "<section class=\"app\" id=\"app-{id}\" data-app=\"{id}\"><h2>{} <code>/callback/{id}</code> \
         <small><code>{}</code> · {}</small></h2><div class=\"grid\"><div>",
        t(lang, "App", "应用"),
        esc(a.kind),
        esc(&a.receive_ids.join(", ")),
    );
    // URL verification: the first thing a new deployment is stuck on.
    let _ = write!(h, "<h3>{}</h3>", t(lang, "URL verification", "URL 验证"));
    match &a.verification {
        None => {
            let _ = write!(
                h,
                "<p class=\"warn\" data-verification=\"none\">{}</p>",
                t(
                    lang,
                    "No verification attempt yet: enter the URL in the console and press 保存.",
                    "尚未收到验证请求：请在后台填写 URL 并点「保存」。"
                )
            );
        }
        Some(v) => {
            let ok = v.outcome == "url_verified";
            let _ = write!(
                h,
                "<p data-verification=\"{}\"><b class=\"{}\">{}</b> {}</p>",
                esc(&v.outcome),
                if ok { "ok" } else { "bad" },
                if ok {
                    t(lang, "passed", "通过").to_owned()
                } else {
                    format!(
                        "{} {}{}",
                        t(lang, "refused:", "失败："),
                        esc(advice::outcome_name(&v.outcome, lang)),
                        v.wecom_code.map(|c| format!(" ({c})")).unwrap_or_default()
                    )
                },
                time(Some(v.attempted_at), lang)
            );
            if let Some(reason) = v.reason.as_deref().filter(|_| !ok) {
                h.push_str(&raw(lang, reason));
            }
            if let Some(fix) = a.verification_fix {
                let _ = write!(h, "<div class=\"fix\">{}</div>", esc_code(fix));
            }
            if !ok {
                let _ = write!(
                    h,
                    "<p><small>{} {}</small></p>",
                    t(lang, "last passed:", "上次通过："),
                    time(v.last_ok_at, lang)
                );
            }
        }
    }
    let _ = write!(
        h,
        "<h3>{}</h3><p>{} <span data-last-callback>{}</span>{}</p><p>{} <b data-events-total>{}</b></p>",
        t(lang, "Callbacks", "回调"),
        t(lang, "last stored:", "最近写入："),
        time(a.last_callback_at, lang),
        a.last_callback_kind
            .as_deref()
            .map(|k| format!(" <code>{}</code>", esc(k)))
            .unwrap_or_default(),
        t(lang, "stored events:", "已存事件："),
        a.events_total
    );
    super::chart::chart(h, a, lang);
    h.push_str("</div><div>");
    let _ = write!(
        h,
        "<h3>{}</h3><table class=\"outcomes\"><tr><th>{}</th><th>{}</th><th>{}</th></tr>",
        t(lang, "Outcomes", "处理结果"),
        t(lang, "outcome", "结果"),
        t(lang, "last hour", "近 1 小时"),
        t(lang, "last day", "近 24 小时"),
    );
    if a.outcomes.is_empty() {
        let _ = write!(
            h,
            "<tr><td colspan=\"3\"><small>{}</small></td></tr>",
            t(lang, "nothing in the last day", "近 24 小时没有请求")
        );
    }
    for o in &a.outcomes {
        let _ = write!(
            h,
            "<tr data-outcome=\"{0}\"><td class=\"{1}\">{4}</td><td class=\"n\" data-hour>{2}</td>\
             <td class=\"n\" data-day>{3}</td></tr>",
            esc(&o.outcome),
            if o.fix.is_some() { "bad" } else { "ok" },
            o.last_hour,
            o.last_day,
            match lang {
                Lang::En => esc(&o.outcome),
                Lang::Zh => format!(
                    "{} <small><code>{}</code></small>",
                    esc(advice::outcome_name(&o.outcome, lang)),
                    esc(&o.outcome)
                ),
            }
        );
        if let Some(fix) = o.fix {
            let _ = write!(
                h,
                "<tr><td colspan=\"3\"><small>{}</small></td></tr>",
                esc_code(fix)
            );
        }
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<h3>{}</h3><p>{} <b data-unapplied>{}</b> · {} <b>{}{}</b></p>",
        t(lang, "Projector", "同步表投影"),
        t(lang, "events not yet applied:", "未应用事件："),
        a.projector.unapplied,
        t(lang, "lag", "延迟"),
        a.projector.lag_secs,
        t(lang, " s", " 秒")
    );
    if let (Some(id), Some(error)) = (a.projector.held_event_id, &a.projector.held_error) {
        let _ = write!(
            h,
            "<p class=\"bad\" data-held>{} <b>{}</b> · {} <code>{}</code>: {} · {} <code>wecom-callback events --ids {}</code></p>",
            t(
                lang,
                "held back (the tables refuse them; later events go on):",
                "暂缓应用（同步表拒绝写入，其后事件照常处理）："
            ),
            a.projector.held,
            t(lang, "oldest: event", "最早：事件"),
            id,
            esc(error),
            t(lang, "see it with", "查看："),
            id
        );
    }
    let _ = write!(
        h,
        "<h3>{}</h3><p>{} <b data-jobs-queued>{}</b> · {} {} · {} <b class=\"{}\" data-jobs-dead>{}</b></p>",
        t(lang, "API jobs", "API 任务"),
        t(lang, "queued", "排队"),
        a.jobs.queued,
        t(lang, "running", "运行中"),
        a.jobs.running,
        t(lang, "dead", "失败"),
        if a.jobs.dead > 0 { "bad" } else { "ok" },
        a.jobs.dead
    );
    if let Some(e) = &a.jobs.last_dead_error {
        h.push_str(&raw(
            lang,
            &format!(
                "{}{}",
                a.jobs
                    .last_dead_errcode
                    .map(|c| format!("errcode {c}: "))
                    .unwrap_or_default(),
                e
            ),
        ));
    }
    if let Some(x) = &a.jobs.last_dead_explained {
        let _ = write!(h, "<div class=\"fix\">{}</div>", esc_code(x));
    }
    let _ = write!(h, "<h3>{}</h3>", t(lang, "Last resync", "最近全量同步"));
    match &a.resync {
        None => {
            let _ = write!(h, "<p>{}</p>", t(lang, "none yet", "尚无"));
        }
        Some(r) => {
            let _ = write!(
                h,
                "<p data-resync=\"{}\"><b class=\"{}\">{}</b> {}</p>",
                esc(&r.status),
                if r.status == "failed" { "bad" } else { "ok" },
                esc(advice::resync_status(&r.status, lang)),
                time(Some(r.started_at), lang)
            );
            let drift: Vec<String> = r
                .drift
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
                        .map(|(k, v)| format!("{} {v}", advice::drift_name(k, lang)))
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                "<p><small>{} {}</small></p>",
                t(lang, "drift:", "差异："),
                if drift.is_empty() {
                    t(lang, "none", "无").to_owned()
                } else {
                    esc(&drift.join(t(lang, ", ", "，")))
                }
            );
            if let Some(e) = &r.last_error {
                h.push_str(&raw(lang, &super::super::report::short(e)));
            }
        }
    }
    let _ = write!(h, "<h3>{}</h3>", t(lang, "Access token", "access_token"));
    match &a.token {
        // A suite's URLs have no secret of their own: its calls use each authorised corp's token.
        None if a.kind != "self_built" => {
            let _ = write!(
                h,
                "<p><small>{}</small></p>",
                t(
                    lang,
                    "no secret configured here: a suite's WeCom API calls use each authorised corp's own token \
                     (see the suites above)",
                    "此处未配置 secret：服务商应用调用企业微信 API 时使用各授权企业自己的 token（见上方服务商应用）"
                )
            );
        }
        None => {
            let _ = write!(
                h,
                "<p><small>{}</small></p>",
                t(
                    lang,
                    "no secret configured: events only, no WeCom API calls",
                    "未配置 secret：只接收事件，不调用企业微信 API"
                )
            );
        }
        Some(tok) => {
            let _ = write!(
                h,
                "<p data-token-valid=\"{}\"><b class=\"{}\">{}</b> · {} {} · {} <code>{}</code></p>",
                tok.valid,
                if tok.valid { "ok" } else { "warn" },
                if tok.valid {
                    t(lang, "valid", "有效")
                } else {
                    t(lang, "none cached", "无缓存")
                },
                t(lang, "fetched", "获取于"),
                time(tok.refreshed_at, lang),
                t(lang, "corp", "企业"),
                esc(&tok.corp_id)
            );
            if let Some(ip) = &tok.refused_ip {
                let _ = write!(
                    h,
                    "<div class=\"fix\" data-refused-ip=\"{0}\">{1} <code>{0}</code> {2} {3}</div>",
                    esc(ip),
                    t(
                        lang,
                        "WeCom refused this server's IP",
                        "企业微信拒绝了本机出口 IP"
                    ),
                    t(
                        lang,
                        "(60020): add it to the app's 企业可信IP (应用管理 → the app → 企业可信IP).",
                        "（60020）：请把它加入该应用的「企业可信IP」（应用管理 → 应用 → 企业可信IP）。"
                    ),
                    time(tok.refused_ip_at, lang)
                );
            }
        }
    }
    h.push_str("</div></div></section>");
}
