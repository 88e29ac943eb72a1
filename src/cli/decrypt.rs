//! `decrypt`: verify and decrypt a captured request with the configured keys, and say which check fails.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{Context, select_app};
use crate::tools::diagnose;

/// Options of `decrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app whose Token and key to use [default: the only app].
    #[arg(long)]
    pub app: Option<String>,
    /// The query string exactly as received, e.g. 'msg_signature=…&timestamp=…&nonce=…[&echostr=…]'.
    #[arg(long)]
    pub query: String,
    /// File with the POST body ('-' for standard input); omit for a GET (URL verification).
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Also print the decrypted message (it may hold personal data).
    #[arg(long)]
    pub show_plaintext: bool,
}

/// Prints the diagnosis; fails when the request does not pass.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    let app = select_app(&settings.apps, args.app.as_deref())?;
    let body = match &args.body {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .context("cannot read the body from standard input")?;
            Some(b)
        }
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
    };
    let now = chrono::Utc::now().timestamp();
    let d = diagnose::diagnose(&settings.apps, app, &args.query, body.as_deref(), now);
    print!("{}", diagnose::render(&d, args.show_plaintext));
    if d.ok() {
        Ok(())
    } else {
        anyhow::bail!("the request does not pass")
    }
}
