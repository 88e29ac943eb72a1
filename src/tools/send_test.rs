//! `send-test`: requests built exactly as WeCom builds them (URL verification and event callbacks), to test a
//! deployment end to end before WeCom does. Building is pure; [`send`] does the HTTP.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::app::AppConfig;
use crate::wecom::crypto;

/// Sample events, one per supported `--event` name.
pub const EVENTS: [&str; 10] = [
    "add_external_contact",
    "edit_external_contact",
    "add_half_external_contact",
    "del_external_contact",
    "del_follow_user",
    "transfer_fail",
    "change_external_chat",
    "change_external_tag",
    "change_contact",
    "suite_ticket",
];

/// The XML WeCom would send for `event`, about `corp`, at `now`. A unique marker keeps repeated test runs
/// from being deduplicated into one row.
pub fn sample_event(event: &str, corp: &str, now: i64, marker: &str) -> Option<String> {
    let head = |e: &str, ct: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{e}]]></Event>\
             <ChangeType><![CDATA[{ct}]]></ChangeType>"
        )
    };
    let contact = |ct: &str, extra: &str| {
        format!(
            "{}<UserID><![CDATA[send-test-staff]]></UserID><ExternalUserID><![CDATA[wmSendTest{marker}]]></ExternalUserID>{extra}</xml>",
            head("change_external_contact", ct)
        )
    };
    Some(match event {
        "add_external_contact" | "add_half_external_contact" => contact(
            event,
            "<State><![CDATA[send-test]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>",
        ),
        "edit_external_contact" | "del_follow_user" => contact(event, ""),
        "del_external_contact" => contact(event, "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>"),
        "transfer_fail" => contact(
            event,
            "<FailReason><![CDATA[customer_refused]]></FailReason>",
        ),
        "change_external_chat" => format!(
            "{}<ChatId><![CDATA[wrSendTest{marker}]]></ChatId><UpdateDetail><![CDATA[add_member]]></UpdateDetail>\
             <JoinScene>0</JoinScene><MemChangeCnt>1</MemChangeCnt><MemChangeList><Item>wmSendTest{marker}</Item></MemChangeList></xml>",
            head("change_external_chat", "update")
        ),
        "change_external_tag" => format!(
            "{}<Id><![CDATA[etSendTest{marker}]]></Id><TagType><![CDATA[tag]]></TagType></xml>",
            head("change_external_tag", "create")
        ),
        "change_contact" => format!(
            "{}<UserID><![CDATA[{}]]></UserID><Department>1</Department></xml>",
            head("change_contact", "update_user"),
            crate::sync::plan::SEND_TEST_STAFF
        ),
        "suite_ticket" => format!(
            "<xml><SuiteId><![CDATA[{corp}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType>\
             <TimeStamp>{now}</TimeStamp><SuiteTicket><![CDATA[send-test-{marker}]]></SuiteTicket></xml>"
        ),
        _ => return None,
    })
}

/// A request ready to send: the query string and, for POST, the body.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub label: String,
    pub query: String,
    pub body: Option<String>,
    /// What a correct receiver answers with (the echo string for GET).
    pub expect: String,
}

fn nonce() -> String {
    format!("{}", rand::random::<u32>())
}

/// The URL verification WeCom performs when the admin presses 保存.
pub fn verification(app: &AppConfig, receive_id: &str, now: i64) -> TestRequest {
    let echo = format!("{}", rand::random::<u64>());
    let encrypted = crypto::encrypt(
        &app.aes_key,
        &mut rand::rng(),
        echo.as_bytes(),
        receive_id.as_bytes(),
    );
    let n = nonce();
    let sig = crypto::signature(app.token.expose_secret(), &now.to_string(), &n, &encrypted);
    let encoded =
        percent_encoding::utf8_percent_encode(&encrypted, percent_encoding::NON_ALPHANUMERIC);
    TestRequest {
        label: "URL verification (GET)".into(),
        query: format!("msg_signature={sig}&timestamp={now}&nonce={n}&echostr={encoded}"),
        body: None,
        expect: echo,
    }
}

/// A signed, encrypted event callback.
pub fn callback(
    app: &AppConfig,
    receive_id: &str,
    xml: &str,
    label: &str,
    now: i64,
) -> TestRequest {
    let encrypted = crypto::encrypt(
        &app.aes_key,
        &mut rand::rng(),
        xml.as_bytes(),
        receive_id.as_bytes(),
    );
    let n = nonce();
    let sig = crypto::signature(app.token.expose_secret(), &now.to_string(), &n, &encrypted);
    TestRequest {
        label: format!("{label} (POST)"),
        query: format!("msg_signature={sig}&timestamp={now}&nonce={n}"),
        body: Some(format!(
            "<xml><ToUserName><![CDATA[{receive_id}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt><AgentID><![CDATA[1]]></AgentID></xml>"
        )),
        expect: app.kind.success_body().to_owned(),
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub label: String,
    pub status: Option<u16>,
    pub body: String,
    pub millis: u128,
    pub ok: bool,
    pub error: Option<String>,
}

/// `url` exactly as given, with the signed parameters appended: after `&` when it already has a query (a
/// proxy's own parameter), after `?` otherwise. A trailing slash is kept: if the service refuses it, WeCom's
/// request to that URL would be refused too, and the test must say so.
pub fn with_query(url: &str, query: &str) -> String {
    // A fragment is never sent; drop it rather than append after it.
    let base = url.split_once('#').map_or(url, |(b, _)| b);
    let sep = match base.split_once('?') {
        Some((_, q)) if q.is_empty() || q.ends_with('&') => "",
        Some(_) => "&",
        None => "?",
    };
    format!("{base}{sep}{query}")
}

/// Sends the requests to `url` (the full callback URL, e.g. https://example.com/callback/crm).
pub async fn send(url: &str, requests: &[TestRequest]) -> Vec<TestResult> {
    let client = match crate::tls::client_builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return requests
                .iter()
                .map(|r| TestResult {
                    label: r.label.clone(),
                    status: None,
                    body: String::new(),
                    millis: 0,
                    ok: false,
                    error: Some(e.to_string()),
                })
                .collect();
        }
    };
    let mut out = Vec::new();
    for r in requests {
        let full = with_query(url, &r.query);
        let started = std::time::Instant::now();
        let resp = match &r.body {
            None => client.get(&full).send().await,
            Some(b) => {
                client
                    .post(&full)
                    .header("content-type", "text/xml")
                    .body(b.clone())
                    .send()
                    .await
            }
        };
        let millis = started.elapsed().as_millis();
        out.push(match resp {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                TestResult {
                    label: r.label.clone(),
                    ok: status == 200 && body == r.expect,
                    status: Some(status),
                    body,
                    millis,
                    error: None,
                }
            }
            Err(e) => TestResult {
                label: r.label.clone(),
                status: None,
                body: String::new(),
                millis,
                ok: false,
                error: Some(if e.is_timeout() {
                    "no answer within 5 s (WeCom gives up after 5 s; 1 s for URL verification)"
                        .into()
                } else if e.is_connect() {
                    format!(
                        "{}; is the service running and the URL reachable?",
                        request_error(&e)
                    )
                } else {
                    request_error(&e)
                }),
            },
        });
    }
    out
}

/// A reqwest error in words, without its URL: reqwest's own text repeats the whole URL, query included
/// (a signature here, an `access_token=` elsewhere), and "error sending request" names no cause.
pub fn request_error(e: &reqwest::Error) -> String {
    let mut detail = if e.is_timeout() {
        "no answer in time (timed out)".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".to_owned()
    } else if e.is_redirect() {
        "too many redirects".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
}

#[cfg(test)]
mod url_tests {
    use super::with_query;

    #[test]
    fn the_url_is_kept_as_given() {
        let q = "msg_signature=s&timestamp=1&nonce=2";
        assert_eq!(
            with_query("https://x/callback/a", q),
            format!("https://x/callback/a?{q}")
        );
        assert_eq!(
            with_query("https://x/callback/a/", q),
            format!("https://x/callback/a/?{q}")
        );
        assert_eq!(
            with_query("https://x/callback/a?foo=1", q),
            format!("https://x/callback/a?foo=1&{q}")
        );
        assert_eq!(
            with_query("https://x/callback/a?", q),
            format!("https://x/callback/a?{q}")
        );
    }

    /// The URL (and its query's tokens) stays out of the text; the cause is in it.
    #[tokio::test]
    async fn request_errors_leave_the_url_out() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let e = crate::tls::client_builder()
            .build()
            .expect("client")
            .get(format!(
                "http://127.0.0.1:{port}/cgi-bin/x?access_token=SEKRIT-TOKEN"
            ))
            .send()
            .await
            .expect_err("nothing listens");
        assert!(
            e.to_string().contains("SEKRIT-TOKEN"),
            "reqwest's own text has it"
        );
        let text = super::request_error(&e);
        assert!(!text.contains("SEKRIT"), "{text}");
        assert!(!text.contains("access_token"), "{text}");
        assert!(text.starts_with("cannot connect"), "{text}");
    }
}
