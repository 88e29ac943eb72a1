//! The page's building blocks: escaping, the two languages, times, raw error texts, the style sheet.

use chrono::{DateTime, Utc};

use super::super::advice::Lang;

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

pub(super) fn t(lang: Lang, en: &'static str, zh: &'static str) -> &'static str {
    match lang {
        Lang::En => en,
        Lang::Zh => zh,
    }
}

pub(super) fn time(at: Option<DateTime<Utc>>, lang: Lang) -> String {
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

pub(super) const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Noto Sans CJK SC','PingFang SC',sans-serif;\
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
pub(super) fn raw(lang: Lang, text: &str) -> String {
    match lang {
        Lang::En => format!("<p><small>{}</small></p>", esc(text)),
        Lang::Zh => format!(
            "<details class=\"raw\"><summary><small>原始错误信息（英文）</small></summary><p><small>{}</small></p></details>",
            esc(text)
        ),
    }
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
