//! `decrypt`: verify and decrypt a captured request with the configured keys, and say which check fails.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{Context, select_app};
use crate::tools::{capture, diagnose};

/// Options of `decrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app whose Token and key to use [default: the app named in the pasted path, else the only app].
    #[arg(long)]
    pub app: Option<String>,
    /// The query string exactly as received ('msg_signature=…&timestamp=…&nonce=…[&echostr=…]'), or the
    /// whole URL, path or proxy log line that holds it ('/callback/main?msg_signature=…').
    #[arg(long, required_unless_present = "last", conflicts_with = "last")]
    pub query: Option<String>,
    /// File with the POST body ('-' for standard input); omit for a GET (URL verification).
    #[arg(long, conflicts_with = "last")]
    pub body: Option<PathBuf>,
    /// Diagnose the most recent refused request the service kept (of --app, else of any app); see
    /// [capture] in config.example.toml.
    #[arg(long)]
    pub last: bool,
    /// Also print the decrypted message (it may hold personal data).
    #[arg(long)]
    pub show_plaintext: bool,
}

/// Prints the diagnosis; fails when the request does not pass.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    let (app_name, query, body) = if args.last {
        let dir = settings.capture.dir.clone().context(
            "refused requests are not kept ([capture] enabled = false): turn captures on, or pass the request \
             with --query (and --body for a POST)",
        )?;
        let (path, c) = capture::latest(&dir, args.app.as_deref())
            .with_context(|| format!("cannot read the captures in {}", dir.display()))?
            .with_context(|| {
                format!(
                    "no refused request is kept in {}{}: none has been refused since captures were on, or \
                     the service keeps them elsewhere ([capture] dir)",
                    dir.display(),
                    args.app
                        .as_deref()
                        .map(|a| format!(" for app {a:?}"))
                        .unwrap_or_default()
                )
            })?;
        println!(
            "request refused at {} ({} {}, class {}), kept in {}",
            c.at.format("%Y-%m-%d %H:%M:%S UTC"),
            c.method,
            c.path,
            c.class,
            path.display()
        );
        for (name, value) in &c.headers {
            println!("  {name}: {value}");
        }
        (Some(c.app), c.query, c.body.map(String::into_bytes))
    } else {
        let pasted = args.query.as_deref().unwrap_or_default();
        let (path_app, query) = split_pasted(pasted);
        let body = match &args.body {
            None => None,
            Some(p) if p.as_os_str() == "-" => {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                    .context("cannot read the body from standard input")?;
                Some(b)
            }
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
        };
        (args.app.clone().or(path_app), query.to_owned(), body)
    };
    let app = select_app(&settings.apps, app_name.as_deref())?;
    let now = chrono::Utc::now().timestamp();
    let d = diagnose::diagnose(&settings.apps, app, &query, body.as_deref(), now);
    print!("{}", diagnose::render(&d, args.show_plaintext));
    if d.ok() {
        Ok(())
    } else {
        anyhow::bail!("the request does not pass")
    }
}

/// The app named in a pasted path (`/callback/{app}`) and the query string, from a bare query, a URL, a path
/// or a proxy log line (`"POST /callback/main?msg_signature=… HTTP/1.1" 403 …`).
pub fn split_pasted(pasted: &str) -> (Option<String>, &str) {
    let pasted = pasted.trim();
    // In a log line, the request target is the word holding the '?'.
    let target = pasted
        .split_whitespace()
        .find(|w| w.contains('?'))
        .unwrap_or(pasted)
        .trim_matches(|c| c == '"' || c == '\'');
    let Some((before, query)) = target.split_once('?') else {
        return (None, target);
    };
    let app = before
        .rsplit_once("/callback/")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(str::to_owned);
    (app, query)
}

#[cfg(test)]
mod tests {
    use super::split_pasted;

    #[test]
    fn a_pasted_url_path_or_log_line_gives_the_app_and_the_query() {
        let q = "msg_signature=ab&timestamp=1&nonce=2";
        assert_eq!(split_pasted(q), (None, q));
        assert_eq!(
            split_pasted(&format!("https://cb.example.com/callback/main?{q}")),
            (Some("main".into()), q)
        );
        assert_eq!(
            split_pasted(&format!(
                "10.0.0.1 - - [01/Dec/2026:12:00:00 +0800] \"POST /callback/sales?{q} HTTP/1.1\" 403 44"
            )),
            (Some("sales".into()), q)
        );
        assert_eq!(split_pasted(&format!("/callback?{q}")), (None, q));
        assert_eq!(split_pasted(&format!("?{q}")), (None, q));
    }
}
