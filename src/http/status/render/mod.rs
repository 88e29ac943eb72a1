//! The status page as HTML, rendered on the server (no script): one section per app, a 24-hour bar chart as
//! inline SVG. Every value is escaped. By concept: [`html`] (escaping, languages, times, style), [`app`] (an
//! app's section), [`chart`] (its 24-hour chart), [`suites`] (service providers' suites).

mod app;
mod chart;
mod html;
mod suites;

use std::fmt::Write as _;

use super::advice::Lang;
use super::report::Report;
use html::{STYLE, t};

pub use html::{esc, esc_code};

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
    suites::section(&mut h, &report.suites, lang);
    for app in &report.apps {
        app::section(&mut h, app, lang);
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
