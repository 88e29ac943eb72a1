//! The service providers' section: per `[[suites]]` entry its suite_ticket, its suite token and how many
//! corps authorised it (each suite's callbacks and jobs are in the section of its instruction app).

use std::fmt::Write as _;

use super::super::advice::Lang;
use super::super::report::SuiteStatus;
use super::html::{esc, t, time};

/// The section, when any suite is configured.
pub(super) fn section(h: &mut String, suites: &[SuiteStatus], lang: Lang) {
    if suites.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<section id=\"suites\"><h2>{}</h2><table class=\"suites\"><tr><th>{}</th><th>suite_ticket</th>\
         <th>suite_access_token</th><th>{}</th></tr>",
        t(
            lang,
            "Service provider suites",
            "服务商应用（第三方应用与代开发模板）"
        ),
        t(lang, "suite", "应用"),
        t(lang, "authorised corps", "授权企业"),
    );
    for s in suites {
        row(h, s, lang);
    }
    let _ = write!(
        h,
        "</table><p><small>{}</small></p></section>",
        t(
            lang,
            "WeCom pushes a suite_ticket every 10 minutes (valid 30); the suite token is fetched from it when a \
             job needs one. Cancelled corps' rows and events are deleted after the [provider] grace periods.",
            "企业微信每 10 分钟推送一次 suite_ticket（有效 30 分钟）；任务需要时用它换取 suite_access_token。\
             已取消授权企业的同步数据和事件在 [provider] 设定的保留期后删除。"
        )
    );
}

fn row(h: &mut String, s: &SuiteStatus, lang: Lang) {
    let name = esc(&s.name);
    let kind = match (s.kind, lang) {
        ("agency", Lang::En) => "代开发 template",
        ("agency", Lang::Zh) => "代开发模板",
        (_, Lang::En) => "third-party suite",
        (_, Lang::Zh) => "第三方应用",
    };
    let _ = write!(
        h,
        "<tr data-suite=\"{name}\"><td><a href=\"#app-{name}\"><b>{name}</b></a><br><small>{kind} · \
         <code>{}</code></small></td>",
        esc(&s.suite_id)
    );
    let (class, state) = match s.ticket {
        "fresh" => ("ok", t(lang, "fresh", "有效")),
        "stale" => ("bad", t(lang, "stale (WeCom refuses it)", "已过期")),
        _ => ("bad", t(lang, "none yet", "尚未收到")),
    };
    let _ = write!(
        h,
        "<td data-ticket=\"{}\"><b class=\"{class}\">{state}</b>",
        s.ticket
    );
    if s.ticket_received_at.is_some() {
        let _ = write!(
            h,
            "<br><small>{} {}</small>",
            t(lang, "received", "收到于"),
            time(s.ticket_received_at, lang)
        );
    }
    let _ = write!(
        h,
        "</td><td data-suite-token-valid=\"{}\"><b class=\"{}\">{}</b><br><small>{} {}</small></td>",
        s.token.valid,
        if s.token.valid { "ok" } else { "warn" },
        if s.token.valid {
            t(lang, "valid", "有效")
        } else {
            t(lang, "none cached", "无缓存")
        },
        t(lang, "fetched", "获取于"),
        time(s.token.refreshed_at, lang)
    );
    let c = &s.corps;
    let with_token = match lang {
        Lang::En => format!("({} with a valid token)", c.authorised_with_token),
        Lang::Zh => format!("（其中 {} 个 token 有效）", c.authorised_with_token),
    };
    let _ = write!(
        h,
        "<td><span data-corps-authorised=\"{}\">{} <b class=\"ok\">{}</b></span> <small>{with_token}</small> · \
         <span data-corps-cancelled=\"{}\">{} <b>{}</b></span>",
        c.authorised,
        t(lang, "authorised", "已授权"),
        c.authorised,
        c.cancelled,
        t(lang, "cancelled", "已取消授权"),
        c.cancelled,
    );
    if c.rows_pending_deletion > 0 || c.events_kept > 0 {
        let _ = write!(
            h,
            "<br><small data-corps-rows-pending=\"{}\" data-corps-events-kept=\"{}\">{} {} · {} {}</small>",
            c.rows_pending_deletion,
            c.events_kept,
            t(lang, "rows awaiting deletion:", "同步数据待删除："),
            c.rows_pending_deletion,
            t(lang, "events kept for audit:", "事件保留审计："),
            c.events_kept,
        );
    }
    h.push_str("</td></tr>");
}
