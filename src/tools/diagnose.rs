//! Diagnosing a captured request step by step: which check fails and why. Pure.
//!
//! The HTTP answer to a bad callback never says which step failed (a prober must learn nothing); this is
//! the operator's side of that: given the query string and body from a proxy log, it says exactly what is
//! wrong — signature (wrong Token?), key (wrong EncodingAESKey?), padding, receive id found vs expected —
//! and tries the other configured apps' secrets, since "the URL of app A with the Token of app B" is a classic.

use secrecy::ExposeSecret;

use crate::app::AppConfig;
use crate::wecom::crypto::{self, CryptoError};
use crate::wecom::envelope;
use crate::wecom::message;
use crate::wecom::verify::{self, CallbackQuery};

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The whole diagnosis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub steps: Vec<Step>,
    /// The decrypted message, when decryption succeeded (may hold personal data: show only on request).
    pub plaintext: Option<String>,
}

impl Diagnosis {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }

    fn push(&mut self, check: &'static str, ok: bool, detail: impl Into<String>) {
        self.steps.push(Step {
            check,
            ok,
            detail: detail.into(),
        });
    }
}

/// Diagnoses a captured request for `app`. `body` is `None` for a GET (URL verification, echostr in the
/// query). `now_unix` only informs about the timestamp's age; an old capture is not a failure here.
pub fn diagnose(
    apps: &[AppConfig],
    app: &AppConfig,
    query: &str,
    body: Option<&[u8]>,
    now_unix: i64,
) -> Diagnosis {
    let mut d = Diagnosis {
        steps: Vec::new(),
        plaintext: None,
    };
    let is_get = body.is_none();
    let q: CallbackQuery = match verify::parse_query(query.trim_start_matches('?'), is_get) {
        Ok(q) => {
            d.push(
                "query",
                true,
                format!(
                    "msg_signature, timestamp={}, nonce={} present",
                    q.timestamp, q.nonce
                ),
            );
            q
        }
        Err(e) => {
            d.push(
                "query",
                false,
                format!(
                    "{e}; the query string must be passed exactly as received (percent-encoded)"
                ),
            );
            return d;
        }
    };
    if let Ok(ts) = q.timestamp.parse::<i64>() {
        let age = now_unix - ts;
        d.push(
            "timestamp",
            true,
            format!("{age} s before now (the live service refuses more than its tolerance, default 300 s)"),
        );
    }

    let encrypted = match body {
        None => q.echostr.clone().unwrap_or_default(),
        Some(b) => match envelope::parse_envelope(b) {
            Ok(e) => {
                d.push("envelope", true, "well-formed XML with one Encrypt element");
                e.encrypt
            }
            Err(e) => {
                d.push("envelope", false, format!("the body is refused: {e}"));
                return d;
            }
        },
    };

    let token = app.token.expose_secret();
    match crypto::verify_signature(token, &q.timestamp, &q.nonce, &encrypted, &q.msg_signature) {
        Ok(()) => d.push(
            "signature",
            true,
            format!("matches the Token of app {:?}", app.name),
        ),
        Err(_) => {
            let other = apps.iter().find(|a| {
                a.name != app.name
                    && crypto::verify_signature(
                        a.token.expose_secret(),
                        &q.timestamp,
                        &q.nonce,
                        &encrypted,
                        &q.msg_signature,
                    )
                    .is_ok()
            });
            let hint = match other {
                Some(a) => format!(
                    "it matches the Token of app {:?}: this request was meant for /callback/{}",
                    a.name, a.name
                ),
                None => "the Token configured for this app differs from the one in the WeCom admin console \
                         (接收消息服务器配置), or the query/body was altered (e.g. decoded twice by a proxy)"
                    .to_owned(),
            };
            d.push(
                "signature",
                false,
                format!("msg_signature does not match: {hint}"),
            );
            return d;
        }
    }

    match crypto::decrypt(&app.aes_key, &encrypted) {
        Ok(dec) => {
            d.push(
                "decrypt",
                true,
                "base64, AES-256-CBC and PKCS#7 padding are valid",
            );
            match crypto::check_receive_id(&dec.receive_id, &app.receive_ids) {
                Ok(()) => d.push(
                    "receive_id",
                    true,
                    format!("{:?} is accepted", String::from_utf8_lossy(&dec.receive_id)),
                ),
                Err(e) => d.push("receive_id", false, e.to_string()),
            }
            let text = String::from_utf8_lossy(&dec.message).into_owned();
            if !is_get {
                match message::parse_message(&dec.message) {
                    Ok(m) => d.push(
                        "message",
                        true,
                        format!(
                            "event {:?}, change type {:?}, corp {:?}",
                            m.event().unwrap_or("-"),
                            m.change_type().unwrap_or("-"),
                            m.corp_id().unwrap_or("-")
                        ),
                    ),
                    Err(e) => d.push(
                        "message",
                        false,
                        format!("the decrypted message is not XML we accept: {e}"),
                    ),
                }
            }
            d.plaintext = Some(text);
        }
        Err(e) => {
            let other = apps
                .iter()
                .find(|a| a.name != app.name && crypto::decrypt(&a.aes_key, &encrypted).is_ok());
            let hint = match (&e, other) {
                (_, Some(a)) => format!(
                    " It decrypts with the EncodingAESKey of app {:?}: the keys of the two apps are swapped.",
                    a.name
                ),
                (CryptoError::BadPadding, None) => {
                    " A Token that matches with a key that does not is typical after \
                    regenerating only the EncodingAESKey in the console."
                        .to_owned()
                }
                (CryptoError::InvalidBase64, None) => {
                    " The text was probably URL-decoded twice ('+' became ' ').".to_owned()
                }
                _ => String::new(),
            };
            d.push("decrypt", false, format!("{e} [{}].{hint}", e.code()));
        }
    }
    d
}

/// Renders a diagnosis for a terminal.
pub fn render(d: &Diagnosis, show_plaintext: bool) -> String {
    let mut out = String::new();
    for s in &d.steps {
        out.push_str(&format!(
            "{} {:<11} {}\n",
            if s.ok { "ok  " } else { "FAIL" },
            s.check,
            s.detail
        ));
    }
    if show_plaintext {
        if let Some(p) = &d.plaintext {
            out.push_str("\n--- decrypted message ---\n");
            out.push_str(p);
            out.push('\n');
        }
    } else if d.plaintext.is_some() {
        out.push_str(
            "(add --show-plaintext to print the decrypted message; it may hold personal data)\n",
        );
    }
    out.push_str(if d.ok() {
        "\nEvery check passed: the service accepts this request.\n"
    } else {
        "\nThe first FAIL line is the problem.\n"
    });
    out
}
