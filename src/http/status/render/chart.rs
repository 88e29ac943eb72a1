//! An app's 24-hour chart as inline SVG.

use std::fmt::Write as _;

use super::super::advice::Lang;
use super::super::report::AppStatus;
use super::html::t;

/// 24 bars, one per hour: acknowledged (green) under refused (red), scaled to the busiest hour.
pub(super) fn chart(h: &mut String, a: &AppStatus, lang: Lang) {
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
