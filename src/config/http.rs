//! The HTTP side of `serve`: listen addresses, limits, the replay window, the read API's token, domain
//! ownership files.
//!
//! Environment variables (read through clap, see [`HttpArgs`]): `WECOM_LISTEN`,
//! `WECOM_TIMESTAMP_TOLERANCE_SECS`, `WECOM_API_TOKEN`, `WECOM_VERIFY_FILE`, `WECOM_METRICS_LISTEN`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::file::{DEFAULT_LISTEN, DEFAULT_TIMESTAMP_TOLERANCE_SECS, FileConfig};

/// HTTP-level limits.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The main listener.
    pub listen: SocketAddr,
    /// Largest accepted POST body; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long the whole body may take to arrive; slower ones get 408.
    pub body_read_timeout: Duration,
    /// How long a client may take to send the request head.
    pub header_read_timeout: Duration,
    /// Upper bound for one callback from first byte to reply. WeCom waits 5 s.
    pub request_deadline: Duration,
    /// The bound for `suite_instruction` apps: WeCom wants their auth events (create_auth, change_auth,
    /// cancel_auth, reset_permanent_code) answered within 1000 ms.
    pub instruction_deadline: Duration,
    /// How long a `suite_instruction` callback waits for the database before it is spooled instead.
    pub instruction_spool_after: Duration,
    /// Replay window: a timestamp further than this from now is refused. Zero disables the check.
    pub timestamp_tolerance: Duration,
    /// Worker threads for the HTTP server (0 = one per core).
    pub workers: usize,
}

/// `serve`'s HTTP flags and their environment variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "WECOM_LISTEN", value_name = "IP:PORT", value_parser = super::socket_addr,
          help = format!("Address to listen on [default: {DEFAULT_LISTEN}]"))]
    pub listen: Option<SocketAddr>,
    /// Refuse callbacks whose timestamp is further than this from now; 0 disables.
    #[arg(long, env = "WECOM_TIMESTAMP_TOLERANCE_SECS", value_name = "SECS",
          help = format!("Refuse callbacks whose timestamp is further than this from now; 0 disables \
                          [default: {DEFAULT_TIMESTAMP_TOLERANCE_SECS}]"))]
    pub timestamp_tolerance_secs: Option<u64>,
    /// Bearer token enabling the read API under /api/v1 (at least 16 characters) [default: API off].
    #[arg(long, env = "WECOM_API_TOKEN", hide_env_values = true, value_parser = super::secret)]
    pub api_token: Option<SecretString>,
    /// A domain ownership file to serve at /NAME, as NAME=CONTENT (WeCom's WW_verify_*.txt for 可信域名).
    #[arg(long, env = "WECOM_VERIFY_FILE", value_name = "NAME=CONTENT")]
    pub verify_file: Option<String>,
    /// Serve /metrics on this address only (e.g. 127.0.0.1:9090) instead of the main listener.
    #[arg(long, env = "WECOM_METRICS_LISTEN", value_name = "IP:PORT", value_parser = super::socket_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// Answer deadline for suite_instruction apps (WeCom wants their auth events answered within 1 s)
    /// [default: 900].
    #[arg(long, env = "WECOM_INSTRUCTION_DEADLINE_MS", value_name = "MS")]
    pub instruction_deadline_ms: Option<u64>,
    /// How long a suite_instruction callback waits for the database before it is spooled [default: 400].
    #[arg(long, env = "WECOM_INSTRUCTION_SPOOL_AFTER_MS", value_name = "MS")]
    pub instruction_spool_after_ms: Option<u64>,
}

/// What [`build`] produces besides [`HttpSettings`].
pub(super) struct HttpExtras {
    pub api_token: Option<SecretString>,
    pub verification_files: BTreeMap<String, String>,
    pub metrics_listen: Option<SocketAddr>,
}

pub(super) fn build(
    file: &mut FileConfig,
    args: &HttpArgs,
    problems: &mut Vec<String>,
) -> (HttpSettings, HttpExtras) {
    let listen = match args.listen {
        Some(a) => a,
        None => match file.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                problems.push(format!(
                    "WECOM_LISTEN / listen {:?} is not an address: write IP:PORT, \
                     e.g. 0.0.0.0:8080 (all interfaces) or 127.0.0.1:8080 (behind a local proxy)",
                    file.listen
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        },
    };

    let h = &file.http;
    if h.max_body_bytes < 1024 {
        problems.push(format!(
            "http.max_body_bytes = {} is too small for WeCom callbacks; use at least 1024 \
             (the default {} fits every known callback)",
            h.max_body_bytes,
            super::file::FileHttp::default().max_body_bytes
        ));
    }
    let request_deadline = Duration::from_millis(h.request_deadline_ms);
    if request_deadline > Duration::from_millis(4_500)
        || request_deadline < Duration::from_millis(500)
    {
        problems.push(format!(
            "http.request_deadline_ms = {} must be between 500 and 4500: WeCom gives up after 5 s",
            request_deadline.as_millis()
        ));
    }
    let instruction_deadline = Duration::from_millis(
        args.instruction_deadline_ms
            .unwrap_or(h.instruction_deadline_ms),
    );
    let instruction_spool_after = Duration::from_millis(
        args.instruction_spool_after_ms
            .unwrap_or(h.instruction_spool_after_ms),
    );
    if instruction_deadline > Duration::from_millis(1_000)
        || instruction_deadline < Duration::from_millis(500)
    {
        problems.push(format!(
            "http.instruction_deadline_ms = {} must be between 500 and 1000: WeCom wants suite_instruction \
             auth events answered within 1 s",
            instruction_deadline.as_millis()
        ));
    }
    if instruction_spool_after + crate::ingest::SPOOL_MARGIN > instruction_deadline {
        problems.push(format!(
            "http.instruction_spool_after_ms = {} leaves no time to write the spool within \
             http.instruction_deadline_ms = {}; keep it at least {} ms below",
            instruction_spool_after.as_millis(),
            instruction_deadline.as_millis(),
            crate::ingest::SPOOL_MARGIN.as_millis()
        ));
    }
    let http = HttpSettings {
        listen,
        max_body_bytes: h.max_body_bytes,
        body_read_timeout: Duration::from_millis(h.body_read_timeout_ms),
        header_read_timeout: Duration::from_millis(h.header_read_timeout_ms),
        request_deadline,
        instruction_deadline,
        instruction_spool_after,
        timestamp_tolerance: Duration::from_secs(
            args.timestamp_tolerance_secs
                .unwrap_or(h.timestamp_tolerance_secs),
        ),
        workers: h.workers,
    };

    let api_token = args
        .api_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .or_else(|| file.api_token.clone());
    if let Some(t) = &api_token
        && t.len() < 16
    {
        problems.push(format!(
            "WECOM_API_TOKEN / api_token is {} characters; use at least 16 random characters \
                 (e.g. `openssl rand -hex 24`)",
            t.len()
        ));
    }

    let mut verification_files = std::mem::take(&mut file.verification_files);
    if let Some(pair) = &args.verify_file {
        match pair.split_once('=') {
            Some((name, content)) => {
                verification_files.insert(name.trim().to_owned(), content.trim().to_owned());
            }
            None => problems.push(
                "WECOM_VERIFY_FILE must be NAME=CONTENT, e.g. WW_verify_AbCdEf.txt=AbCdEf (the file's name and \
                 its content as the admin console shows them)"
                    .to_owned(),
            ),
        }
    }
    for name in verification_files.keys() {
        let safe = !name.is_empty()
            && name.len() <= 128
            && name.ends_with(".txt")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            && !name.starts_with('.');
        if !safe {
            problems.push(format!(
                "verification file name {name:?} must be a plain file name ending in .txt \
                 (letters, digits, '_', '-', '.'), e.g. WW_verify_AbCdEf.txt"
            ));
        }
    }

    let metrics_listen = match (args.metrics_listen, &file.metrics_listen) {
        (Some(a), _) => Some(a),
        (None, None) => None,
        (None, Some(text)) => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "WECOM_METRICS_LISTEN / metrics_listen {text:?} is not an address: write IP:PORT, e.g. 127.0.0.1:9090"
                ));
                None
            }
        },
    };

    (
        http,
        HttpExtras {
            api_token: api_token.map(SecretString::from),
            verification_files,
            metrics_listen,
        },
    )
}
