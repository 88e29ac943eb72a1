//! The status page as HTML, rendered on the server (no script): one section per app, a 24-hour bar chart as
//! inline SVG. Every value is escaped.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::advice::{self, Lang};
use super::report::{AppStatus, Report};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// [`esc`], with each `…` span (a command, a setting) set as `<code>`.
pub fn esc_code(s: &str) -> String {
    let parts: Vec<&str> = s.split('`').collect();
    if parts.len().is_multiple_of(2) {
        // An unpaired backtick: no spans.
        return esc(s);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", esc(p))
            } else {
                esc(p)
            }
        })
        .collect()
}

fn t(lang: Lang, en: &'static str, zh: &'static str) -> &'static str {
    match lang {
        Lang::En => en,
        Lang::Zh => zh,
    }
}

fn time(at: Option<DateTime<Utc>>, lang: Lang) -> String {
    match at {
        Some(at) => {
            let ago = (Utc::now() - at).num_seconds().max(0);
            let (n, unit) = match ago {
                s if s < 120 => (s, t(lang, " s", " 秒")),
                s if s < 7200 => (s / 60, t(lang, " min", " 分钟")),
                s if s < 172_800 => (s / 3600, t(lang, " h", " 小时")),
                s => (s / 86400, t(lang, " d", " 天")),
            };
            let ago = format!("{n}{unit}");
            format!(
                "<time datetime=\"{}\">{}</time> <small>({}{})</small>",
                at.to_rfc3339(),
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                ago,
                t(lang, " ago", "前")
            )
        }
        None => t(lang, "never", "从未").to_owned(),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Noto Sans CJK SC','PingFang SC',sans-serif;\
margin:0;background:#f4f5f7;color:#1d2129}header{background:#1d2129;color:#fff;padding:12px 24px}\
header h1{font-size:18px;margin:0}header p{margin:2px 0 0;color:#c9cdd4;font-size:12px}\
main{padding:16px 24px;max-width:1200px}section{background:#fff;border-radius:6px;padding:12px 18px;\
margin:0 0 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}h2{font-size:16px;margin:4px 0 8px}\
h3{font-size:13px;margin:12px 0 4px;color:#4e5969;text-transform:uppercase;letter-spacing:.03em}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;\
vertical-align:top}th{font-weight:600;color:#4e5969}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#00a870}.bad{color:#e34d59;font-weight:600}.warn{color:#d46b08}.fix{background:#fff7e8;\
border-left:3px solid #ff9a2e;padding:6px 10px;margin:6px 0}.problems{background:#fff1f0;\
border-left:3px solid #e34d59}.grid{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}\
small{color:#86909c}code{background:#f2f3f5;padding:0 3px;border-radius:3px}";

/// A raw error text as recorded (English: it comes from logs and WeCom). On the Chinese page it is folded
/// away under a Chinese label, so what is shown is in the page's language and the detail is still there.
fn raw(lang: Lang, text: &str) -> String {
    match lang {
        Lang::En => format!("<p><small>{}</small></p>", esc(text)),
        Lang::Zh => format!(
            "<details class=\"raw\"><summary><small>原始错误信息（英文）</small></summary><p><small>{}</small></p></details>",
            esc(text)
        ),
    }
}

/// The whole page.
pub fn page(report: &Report, lang: Lang) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head><body>\
         <header><h1>wecom-callback · {}</h1><p>{} {} · <a style=\"color:#9fc3ff\" href=\"?lang={}\">{}</a> · \
         <a style=\"color:#9fc3ff\" href=\"status.json\">status.json</a></p></header><main>",
        lang.tag(),
        t(lang, "wecom-callback status", "wecom-callback 运行状态"),
        t(lang, "status", "运行状态"),
        t(lang, "generated", "生成于"),
        report.generated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        t(lang, "zh", "en"),
        t(lang, "中文", "English"),
    );
    let problems = report.problems_in(lang);
    if !problems.is_empty() {
        let _ = write!(
            h,
            "<section class=\"problems\" id=\"problems\"><h2>{}</h2><ul>",
            t(lang, "Needs attention", "需要处理")
        );
        for p in &problems {
            let _ = write!(h, "<li>{}</li>", esc_code(p));
        }
        h.push_str("</ul></section>");
    }
    for app in &report.apps {
        app_section(&mut h, app, lang);
    }
    let _ = write!(
        h,
        "<section id=\"spool\"><h2>{}</h2>",
        t(lang, "Spool", "本地缓冲（spool）")
    );
    match &report.spool {
        Some(s) => {
            let _ = write!(
                h,
                "<p>{} <b class=\"{}\" data-spool-bytes=\"{}\">{} B</b> / {} B · <code>{}</code></p>\
                 <p><small>{}</small></p>",
                t(lang, "waiting:", "待写入数据库："),
                if s.bytes == 0 { "ok" } else { "warn" },
                s.bytes,
                s.bytes,
                s.max_bytes,
                esc(&s.dir.display().to_string()),
                t(
                    lang,
                    "Callbacks acknowledged while the database was slow or down; drained as soon as it answers.",
                    "数据库缓慢或不可用时已确认的回调；数据库恢复后自动写入。"
                )
            );
        }
        None => {
            let _ = write!(
                h,
                "<p>{}</p>",
                t(
                    lang,
                    "off ([spool] enabled = false)",
                    "未启用（[spool] enabled = false）"
                )
            );
        }
    }
    h.push_str("</section></main></body></html>");
    h
}

fn app_section(h: &mut String, a: &AppStatus, lang: Lang) {
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
    chart(h, a, lang);
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
                h.push_str(&raw(lang, &super::report::short(e)));
            }
        }
    }
    let _ = write!(h, "<h3>{}</h3>", t(lang, "Access token", "access_token"));
    match &a.token {
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

/// 24 bars, one per hour: acknowledged (green) under refused (red), scaled to the busiest hour.
fn chart(h: &mut String, a: &AppStatus, lang: Lang) {
    const W: i64 = 480;
    const H: i64 = 90;
    let max = a
        .hourly
        .iter()
        .map(|b| b.acknowledged + b.refused)
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {}\" width=\"{W}\" height=\"{}\" role=\"img\" \
         aria-label=\"{}\"><title>{}</title>",
        H + 16,
        H + 16,
        t(
            lang,
            "callbacks per hour, last 24 hours",
            "近 24 小时每小时回调数"
        ),
        t(
            lang,
            "callbacks per hour, last 24 hours",
            "近 24 小时每小时回调数"
        ),
    );
    let bar = W / 24;
    for (i, b) in a.hourly.iter().enumerate() {
        let x = i as i64 * bar;
        let ok_h = b.acknowledged * H / max;
        let bad_h = b.refused * H / max;
        let _ = write!(
            h,
            "<g data-hour=\"{}\" data-acknowledged=\"{}\" data-refused=\"{}\"><title>{} UTC: {} ✓ {} ✗</title>\
             <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#00a870\"/>\
             <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#e34d59\"/></g>",
            b.hour.format("%H"),
            b.acknowledged,
            b.refused,
            b.hour.format("%H:00"),
            b.acknowledged,
            b.refused,
            x + 1,
            H - ok_h,
            bar - 2,
            ok_h,
            x + 1,
            H - ok_h - bad_h,
            bar - 2,
            bad_h
        );
        if i % 6 == 0 {
            let _ = write!(
                h,
                "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#86909c\">{}</text>",
                x + 1,
                H + 12,
                b.hour.format("%H:00")
            );
        }
    }
    let _ = write!(
        h,
        "<line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" stroke=\"#c9cdd4\"/></svg>\
         <p><small><span class=\"ok\">■</span> {} · <span class=\"bad\">■</span> {} · {} {}</small></p>",
        t(lang, "acknowledged", "已确认"),
        t(lang, "refused", "被拒绝"),
        t(lang, "busiest hour:", "峰值："),
        max
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtick_spans_become_code() {
        assert_eq!(
            esc_code("run `jobs <retry>` now"),
            "run <code>jobs &lt;retry&gt;</code> now"
        );
        assert_eq!(esc_code("one ` only"), "one ` only");
    }

    #[test]
    fn esc_escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
