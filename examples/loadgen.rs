//! Load generator: drives a running `wecom-callback serve` over loopback like WeCom would, then checks that
//! the database holds exactly one row per `success` reply.
//!
//! It pre-generates N distinct signed, encrypted callbacks (so request building costs nothing during the run),
//! sends them over C keep-alive HTTP/1.1 connections with a minimal client (so the client steals little CPU
//! from the server on a small machine), and reports throughput and latency percentiles.
//!
//! ```text
//! cargo run --release --example loadgen -- --requests 100000 --connections 64
//! ```
//! Token, key, corp id and app name come from the same WECOM_* variables as the server.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wecom_callback::wecom::crypto::{self, AesKey};

#[derive(Debug, Parser)]
struct Args {
    /// host:port of the running server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, env = "WECOM_APP_NAME", default_value = "default")]
    app: String,
    #[arg(long, env = "WECOM_TOKEN")]
    token: String,
    #[arg(long, env = "WECOM_ENCODING_AES_KEY")]
    encoding_aes_key: String,
    #[arg(long, env = "WECOM_CORP_ID")]
    corp_id: String,
    /// Distinct callbacks to send.
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Stop sending after this many seconds even if requests remain.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// The server's database, to check stored rows against success replies.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Send every callback twice (the second time re-encrypted), to measure duplicates too.
    #[arg(long)]
    duplicates: bool,
}

struct Outcome {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
}

fn build_requests(args: &Args, run_id: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let key = AesKey::from_encoding_aes_key(&args.encoding_aes_key)
        .map_err(|e| anyhow::anyhow!("WECOM_ENCODING_AES_KEY: {e}"))?;
    let mut rng = rand::rng();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let copies = if args.duplicates { 2 } else { 1 };
    let mut out = Vec::with_capacity(args.requests * copies);
    for i in 0..args.requests {
        let xml = format!(
            "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
             <UserID><![CDATA[staff{staff}]]></UserID><ExternalUserID><![CDATA[wm{run_id}{i:08}]]></ExternalUserID>\
             <State><![CDATA[loadgen]]></State><WelcomeCode><![CDATA[WELCOME{i}]]></WelcomeCode></xml>",
            corp = args.corp_id,
            staff = i % 50,
        );
        for _ in 0..copies {
            let encrypt = crypto::encrypt(&key, &mut rng, xml.as_bytes(), args.corp_id.as_bytes());
            let nonce = format!("{}", rand::random::<u32>());
            let ts = now.to_string();
            let sig = crypto::signature(&args.token, &ts, &nonce, &encrypt);
            let body = format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>",
                args.corp_id
            );
            let req = format!(
                "POST /callback/{}?msg_signature={sig}&timestamp={ts}&nonce={nonce} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                args.app,
                args.addr,
                body.len()
            );
            out.push(req.into_bytes());
        }
    }
    Ok(out)
}

/// Reads one reply; returns the status. Minimal HTTP/1.1: status line, Content-Length framing.
async fn read_status(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .context("status line")?
                .parse()?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn worker(
    addr: String,
    requests: std::sync::Arc<Vec<Vec<u8>>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop_at: Instant,
) -> Outcome {
    let mut out = Outcome {
        ok: 0,
        failed: 0,
        latencies_us: Vec::new(),
    };
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= requests.len() || Instant::now() >= stop_at {
            return out;
        }
        let started = Instant::now();
        let result: anyhow::Result<u16> = async {
            if stream.is_none() {
                let s = TcpStream::connect(&addr).await?;
                s.set_nodelay(true)?;
                stream = Some(s);
            }
            let s = stream.as_mut().context("connection")?;
            s.write_all(&requests[i]).await?;
            read_status(s, &mut buf).await
        }
        .await;
        out.latencies_us
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        match result {
            Ok(200) => out.ok += 1,
            Ok(_) => out.failed += 1,
            Err(_) => {
                out.failed += 1;
                stream = None;
            }
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    eprintln!(
        "building {} signed callbacks{}...",
        args.requests,
        if args.duplicates { " (each twice)" } else { "" }
    );
    let requests = std::sync::Arc::new(build_requests(&args, &run_id)?);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.max_seconds);
    let handles: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                args.addr.clone(),
                requests.clone(),
                next.clone(),
                stop_at,
            ))
        })
        .collect();
    let mut ok = 0;
    let mut failed = 0;
    let mut lat = Vec::new();
    for h in handles {
        let o = h.await?;
        ok += o.ok;
        failed += o.failed;
        lat.extend(o.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "connections={} sent={} ok={} failed={} seconds={:.2} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        args.connections,
        ok + failed,
        ok,
        failed,
        elapsed,
        (ok + failed) as f64 / elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );

    if let Some(url) = &args.database_url {
        let pool = sqlx::PgPool::connect(url).await?;
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM wecom_events WHERE app = $1 AND fields->>'ExternalUserID' LIKE $2",
        )
        .bind(&args.app)
        .bind(format!("wm{run_id}%"))
        .fetch_one(&pool)
        .await?;
        let expected = if args.duplicates {
            // Each callback was sent twice; a success for either copy means it is stored.
            None
        } else {
            Some(ok as i64)
        };
        println!("stored_rows={rows}");
        if let Some(expected) = expected {
            if rows < expected {
                bail!(
                    "{expected} success replies but only {rows} rows: an acknowledged event was lost"
                );
            }
            if failed == 0 && rows != expected {
                bail!("{expected} success replies but {rows} rows");
            }
        }
    }
    Ok(())
}
