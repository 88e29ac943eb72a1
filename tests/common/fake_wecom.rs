//! A tiny fake WeCom API on loopback that counts calls and, per API path, the most calls it saw in flight at
//! once (which wiremock cannot: its responders do not see when an answer is sent). Each answer takes `delay`.
//! It answers like an empty corp: tokens, no follow users, no chats, no tags, an empty directory, and 84061 ("no relation") for
//! contact details, so API calls change no synced table. Shared by the api and faults test binaries.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Counts {
    in_flight: HashMap<String, u32>,
    max_in_flight: HashMap<String, u32>,
    calls: HashMap<String, u64>,
}

/// The running fake; it stops when dropped.
pub struct FakeWecom {
    pub port: u16,
    counts: Arc<Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWecom {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWecom {
    /// Starts the fake; every answer waits `delay` (`slow` overrides it for paths containing the key).
    pub async fn start(delay: Duration, slow: &[(&str, Duration)]) -> FakeWecom {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let slow: Arc<Vec<(String, Duration)>> =
            Arc::new(slow.iter().map(|(p, d)| ((*p).to_owned(), *d)).collect());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (c, slow) = (c.clone(), slow.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, c, delay, slow).await;
                });
            }
        });
        FakeWecom { port, counts, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The most calls of `path` (e.g. `/cgi-bin/externalcontact/get`) in flight at once so far.
    pub fn max_in_flight(&self, path: &str) -> u32 {
        let c = self.counts.lock().expect("counts");
        c.max_in_flight.get(path).copied().unwrap_or(0)
    }

    /// The most calls in flight at once of any one path, with that path.
    pub fn max_in_flight_any(&self) -> (String, u32) {
        let c = self.counts.lock().expect("counts");
        c.max_in_flight
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, n)| (p.clone(), *n))
            .unwrap_or_default()
    }

    /// Calls of `path` so far.
    pub fn calls(&self, path: &str) -> u64 {
        let c = self.counts.lock().expect("counts");
        c.calls.get(path).copied().unwrap_or(0)
    }
}

fn answer(path: &str) -> &'static str {
    match path {
        "/cgi-bin/gettoken" => {
            r#"{"errcode":0,"errmsg":"ok","access_token":"FAKE-TOKEN","expires_in":7200}"#
        }
        "/cgi-bin/externalcontact/get" => r#"{"errcode":84061,"errmsg":"not external contact"}"#,
        "/cgi-bin/externalcontact/get_follow_user_list" => {
            r#"{"errcode":0,"errmsg":"ok","follow_user":[]}"#
        }
        "/cgi-bin/externalcontact/batch/get_by_user" => {
            r#"{"errcode":0,"errmsg":"ok","external_contact_list":[],"next_cursor":""}"#
        }
        "/cgi-bin/externalcontact/groupchat/list" => {
            r#"{"errcode":0,"errmsg":"ok","group_chat_list":[],"next_cursor":""}"#
        }
        "/cgi-bin/externalcontact/get_corp_tag_list"
        | "/cgi-bin/externalcontact/get_strategy_tag_list" => {
            r#"{"errcode":0,"errmsg":"ok","tag_group":[]}"#
        }
        "/cgi-bin/department/list" => r#"{"errcode":0,"errmsg":"ok","department":[]}"#,
        "/cgi-bin/user/list_id" => r#"{"errcode":0,"errmsg":"ok","dept_user":[],"next_cursor":""}"#,
        // Service providers (issue 14): one suite, one authorising corp.
        "/cgi-bin/service/get_suite_token" => {
            r#"{"errcode":0,"errmsg":"ok","suite_access_token":"FAKE-SUITE-TOKEN","expires_in":7200}"#
        }
        "/cgi-bin/service/get_permanent_code" => {
            r#"{"errcode":0,"errmsg":"ok","access_token":"FAKE-CORP-TOKEN","expires_in":7200,"permanent_code":"FAKE-PERMANENT-CODE","auth_corp_info":{"corpid":"wwFAKECORP","corp_name":"Fake Corp"},"auth_info":{"agent":[{"agentid":1000001,"name":"app"}]}}"#
        }
        "/cgi-bin/service/get_corp_token" => {
            r#"{"errcode":0,"errmsg":"ok","access_token":"FAKE-CORP-TOKEN","expires_in":7200}"#
        }
        "/cgi-bin/service/get_auth_info" => {
            r#"{"errcode":0,"errmsg":"ok","auth_corp_info":{"corpid":"wwFAKECORP","corp_name":"Fake Corp (renamed)"},"auth_info":{"agent":[{"agentid":1000001}]}}"#
        }
        _ => r#"{"errcode":0,"errmsg":"ok"}"#,
    }
}

async fn serve(
    mut stream: TcpStream,
    counts: Arc<Mutex<Counts>>,
    delay: Duration,
    slow: Arc<Vec<(String, Duration)>>,
) -> std::io::Result<()> {
    // One request per connection (the answer says Connection: close).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    {
        let mut c = counts.lock().expect("counts");
        *c.calls.entry(path.clone()).or_default() += 1;
        let now = {
            let n = c.in_flight.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        let max = c.max_in_flight.entry(path.clone()).or_default();
        *max = (*max).max(now);
    }
    let wait = slow
        .iter()
        .find(|(p, _)| path.contains(p.as_str()))
        .map_or(delay, |(_, d)| *d);
    tokio::time::sleep(wait).await;
    let body = answer(&path);
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Counted out before the answer leaves, so a client never sees itself overlap its own previous call.
    {
        let mut c = counts.lock().expect("counts");
        if let Some(n) = c.in_flight.get_mut(&path) {
            *n = n.saturating_sub(1);
        }
    }
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}
