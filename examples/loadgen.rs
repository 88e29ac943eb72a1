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
    /// What to send.
    #[arg(long, value_enum, default_value_t = Mix::Add)]
    mix: Mix,
    /// Customers of the realistic mix (chats: a tenth as many, tags: a twentieth).
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    /// Staff of the realistic mix.
    #[arg(long, default_value_t = 200)]
    staff: usize,
    /// Callbacks per second over all connections (0: as fast as the server answers). A fixed rate is what
    /// freshness is measured at.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// LISTEN on the synced tables' channel and report, per callback, the time from its success reply to
    /// the notification that it was applied (p50/p90/p99/max). Needs `--database-url` and `--mix add`.
    #[arg(long)]
    freshness: bool,
}

struct Outcome {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
    /// (request index, when its success reply was read), for freshness.
    replied: Vec<(usize, Instant)>,
}

/// What the generated callbacks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mix {
    /// `add_external_contact` only, each of a new customer (what a WeCom burst of new customers looks like).
    Add,
    /// A day of a corp: adds, edits, half-adds, deletes both ways (some by transfer), transfer failures, chat
    /// creates, member changes (with MemChangeList), renames and dismissals, tag creates, updates, deletes and
    /// shuffles, over `--customers` customers, `--staff` staff, and chats and tags in proportion.
    Realistic,
}

/// The inner XML of callback `i`. Every subject id carries `run_id`, which is how the stored rows are counted.
fn event_xml(args: &Args, run_id: &str, i: usize, now: u64, rng: &mut impl rand::Rng) -> String {
    let corp = &args.corp_id;
    let head = |t: u64, event: &str, change: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[{event}]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
        )
    };
    if args.mix == Mix::Add {
        return format!(
            "{}<UserID><![CDATA[staff{staff}]]></UserID><ExternalUserID><![CDATA[wm{run_id}{i:08}]]></ExternalUserID>\
             <State><![CDATA[loadgen]]></State><WelcomeCode><![CDATA[WELCOME{i}]]></WelcomeCode></xml>",
            head(now, "change_external_contact", "add_external_contact"),
            staff = i % 50,
        );
    }
    // Event times spread over the hour before now, a few seconds out of order (WeCom delivers late and
    // retries), so the registers' newer-wins comparisons do real work.
    let span = 3600u64;
    let t = now - span + (i as u64 * span) / args.requests.max(1) as u64;
    let t = t.saturating_sub(rng.random_range(0..5));
    let customers = args.customers.max(1);
    let staff = args.staff.max(1);
    let chats = (customers / 10).max(1);
    let tags = (customers / 20).max(1);
    let customer = format!("wm{run_id}c{}", rng.random_range(0..customers));
    let user = format!("staff{}", rng.random_range(0..staff));
    let chat = format!("wr{run_id}{}", rng.random_range(0..chats));
    let tag = format!("et{run_id}{}", rng.random_range(0..tags));
    let contact = |change: &str, extra: &str| {
        format!(
            "{}<UserID><![CDATA[{user}]]></UserID><ExternalUserID><![CDATA[{customer}]]></ExternalUserID>{extra}</xml>",
            head(t, "change_external_contact", change)
        )
    };
    let chat_ev = |change: &str, extra: &str| {
        format!(
            "{}<ChatId><![CDATA[{chat}]]></ChatId>{extra}</xml>",
            head(t, "change_external_chat", change)
        )
    };
    let tag_ev = |change: &str, extra: &str| {
        format!(
            "{}<Id><![CDATA[{tag}]]></Id>{extra}</xml>",
            head(t, "change_external_tag", change)
        )
    };
    // Weights in percent; contact events dominate, as in a real corp.
    match rng.random_range(0..100u32) {
        0..30 => contact(
            "add_external_contact",
            &format!(
                "<State><![CDATA[ch{}]]></State><WelcomeCode><![CDATA[W{i}]]></WelcomeCode>",
                i % 7
            ),
        ),
        30..45 => contact("edit_external_contact", ""),
        45..50 => contact(
            "add_half_external_contact",
            &format!(
                "<State><![CDATA[ch{}]]></State><WelcomeCode><![CDATA[W{i}]]></WelcomeCode>",
                i % 7
            ),
        ),
        50..55 => contact("del_external_contact", ""),
        55..57 => contact(
            "del_external_contact",
            "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>",
        ),
        57..63 => contact("del_follow_user", ""),
        63..66 => contact(
            "transfer_fail",
            "<FailReason><![CDATA[customer_refused]]></FailReason>",
        ),
        66..69 => chat_ev("create", ""),
        69..81 => {
            // A member change names 1–5 members, customers and staff.
            let add = rng.random_bool(0.6);
            let n = rng.random_range(1..=5);
            let items: String = (0..n)
                .map(|k| {
                    if k % 2 == 0 {
                        format!(
                            "<Item><![CDATA[wm{run_id}c{}]]></Item>",
                            rng.random_range(0..customers)
                        )
                    } else {
                        format!(
                            "<Item><![CDATA[staff{}]]></Item>",
                            rng.random_range(0..staff)
                        )
                    }
                })
                .collect();
            let (detail, scene) = if add {
                ("add_member", "<JoinScene>3</JoinScene>")
            } else {
                ("del_member", "<QuitScene>0</QuitScene>")
            };
            chat_ev(
                "update",
                &format!(
                    "<UpdateDetail><![CDATA[{detail}]]></UpdateDetail>{scene}<MemChangeCnt>{n}</MemChangeCnt>\
                     <MemChangeList>{items}</MemChangeList><LastMemVer><![CDATA[v{i}]]></LastMemVer>\
                     <CurMemVer><![CDATA[v{}]]></CurMemVer>",
                    i + 1
                ),
            )
        }
        81..85 => chat_ev(
            "update",
            &format!(
                "<UpdateDetail><![CDATA[{}]]></UpdateDetail>",
                ["change_name", "change_notice", "change_owner"][i % 3]
            ),
        ),
        85..87 => chat_ev("dismiss", ""),
        87..92 => tag_ev(
            "create",
            &format!(
                "<TagType><![CDATA[{}]]></TagType>",
                if i.is_multiple_of(5) {
                    "tag_group"
                } else {
                    "tag"
                }
            ),
        ),
        92..95 => tag_ev("update", "<TagType><![CDATA[tag]]></TagType>"),
        95..98 => tag_ev("delete", "<TagType><![CDATA[tag]]></TagType>"),
        _ => tag_ev("shuffle", ""),
    }
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
    // Distinct messages only: two equal ones would be one stored row for two success replies, which the
    // final check would report as a lost event.
    let mut seen = std::collections::HashSet::with_capacity(args.requests);
    for i in 0..args.requests {
        let xml = loop {
            let xml = event_xml(args, run_id, i, now, &mut rng);
            if seen.insert(xml.clone()) {
                break xml;
            }
        };
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

/// When request `i` is due: `start + i / rate`, or now without a rate.
fn due(start: Instant, i: usize, rate: u64) -> Option<Instant> {
    (rate > 0).then(|| start + Duration::from_secs_f64(i as f64 / rate as f64))
}

async fn worker(
    addr: String,
    requests: std::sync::Arc<Vec<Vec<u8>>>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    (start, stop_at, rate): (Instant, Instant, u64),
) -> Outcome {
    let mut out = Outcome {
        ok: 0,
        failed: 0,
        latencies_us: Vec::new(),
        replied: Vec::new(),
    };
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= requests.len() || Instant::now() >= stop_at {
            return out;
        }
        if let Some(at) = due(start, i, rate) {
            tokio::time::sleep_until(at.into()).await;
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
            Ok(200) => {
                out.ok += 1;
                out.replied.push((i, Instant::now()));
            }
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

/// Notifications of this run's callbacks: request index → when it arrived.
type Notified = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<usize, Instant>>>;

/// LISTENs on the synced tables' channel and records when each of this run's customers was notified.
async fn listen(url: String, run_id: String, seen: Notified) -> anyhow::Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect(&url)
        .await
        .context("freshness: connecting the LISTEN connection to DATABASE_URL")?;
    listener
        .listen(wecom_callback::store::projections::CHANNEL)
        .await?;
    let prefix = format!("wm{run_id}");
    loop {
        let n = listener.recv().await?;
        let at = Instant::now();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(n.payload()) else {
            continue;
        };
        let index = v["external_userid"]
            .as_str()
            .and_then(|e| e.strip_prefix(&prefix))
            .and_then(|i| i.parse::<usize>().ok());
        if let Some(i) = index
            && let Ok(mut seen) = seen.lock()
        {
            seen.entry(i).or_insert(at);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.freshness && (args.mix != Mix::Add || args.duplicates || args.database_url.is_none()) {
        bail!(
            "--freshness matches each notification to its callback by customer: use it with --mix add, without \
             --duplicates, and with --database-url (or DATABASE_URL) set to the server's database"
        );
    }
    // "lg" keeps the id from ever matching digits elsewhere in a message (timestamps).
    let run_id = format!("lg{:06x}", rand::random::<u32>() & 0xff_ffff);
    eprintln!(
        "building {} signed callbacks ({:?} mix){}...",
        args.requests,
        args.mix,
        if args.duplicates { " (each twice)" } else { "" }
    );
    let requests = std::sync::Arc::new(build_requests(&args, &run_id)?);
    let notified: Notified = Default::default();
    let listener = match (&args.database_url, args.freshness) {
        (Some(url), true) => {
            let task = tokio::spawn(listen(url.clone(), run_id.clone(), notified.clone()));
            // Let the LISTEN take effect before the first callback.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some(task)
        }
        _ => None,
    };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.max_seconds);
    let handles: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                args.addr.clone(),
                requests.clone(),
                next.clone(),
                (started, stop_at, args.rate),
            ))
        })
        .collect();
    let mut ok = 0;
    let mut failed = 0;
    let mut lat = Vec::new();
    let mut replied = Vec::new();
    for h in handles {
        let o = h.await?;
        ok += o.ok;
        failed += o.failed;
        lat.extend(o.latencies_us);
        replied.extend(o.replied);
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

    if let Some(task) = listener {
        // Wait (at most 10 s) for the last notifications, then match them to the replies.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = notified.lock().map(|m| m.len()).unwrap_or(0);
            if n >= replied.len() || Instant::now() >= deadline {
                break;
            }
            if task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        if let Ok(Err(e)) = task.await.map_err(|_| ()) {
            bail!("freshness: the LISTEN connection failed: {e:#}");
        }
        let seen = notified
            .lock()
            .map_err(|_| anyhow::anyhow!("freshness: notification map poisoned"))?;
        let mut fresh = Vec::with_capacity(replied.len());
        let mut before_reply = 0u64;
        for (i, reply) in &replied {
            if let Some(at) = seen.get(i) {
                // The projector may apply and notify before this client has read the reply.
                if at < reply {
                    before_reply += 1;
                }
                fresh.push(
                    at.saturating_duration_since(*reply)
                        .as_micros()
                        .min(u32::MAX as u128) as u32,
                );
            }
        }
        fresh.sort_unstable();
        println!(
            "freshness (success reply -> NOTIFY): matched={}/{} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} notified_before_reply={before_reply}",
            fresh.len(),
            replied.len(),
            percentile(&fresh, 0.50),
            percentile(&fresh, 0.90),
            percentile(&fresh, 0.99),
            percentile(&fresh, 1.0),
        );
        if fresh.len() < replied.len() {
            bail!(
                "freshness: {} of {} acknowledged callbacks were not notified within 10 s (is the projector on?)",
                replied.len() - fresh.len(),
                replied.len()
            );
        }
    }

    if let Some(url) = &args.database_url {
        let pool = sqlx::PgPool::connect(url).await?;
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM wecom_events WHERE app = $1 AND strpos(message, $2) > 0",
        )
        .bind(&args.app)
        .bind(&run_id)
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
