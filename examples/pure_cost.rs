//! Runs one step of the pure core N times (`pure_cost STEP N`, STEP one of signature, decrypt, envelope,
//! message, all, none), for `scripts/pure-cost`, which counts its instructions under callgrind: a figure that,
//! unlike criterion's times, does not move with other load on a shared machine.
use secrecy::SecretString;
use std::hint::black_box;
use wecom_callback::app::{AppConfig, AppKind};
use wecom_callback::wecom::crypto::{self, AesKey};
use wecom_callback::wecom::verify::{self, CallbackQuery};
use wecom_callback::wecom::{envelope, message};
const TOKEN: &str = "QDG6eK";
const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const CORP: &str = "wx5823bf96d3bd56c7";
const XML: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID><State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>";
fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let key = AesKey::from_encoding_aes_key(KEY).expect("key");
    let encrypt =
        crypto::encrypt_with_random(&key, *b"0123456789abcdef", XML.as_bytes(), CORP.as_bytes());
    let (ts, nonce) = ("1700000000", "1372623149");
    let sig = crypto::signature(TOKEN, ts, nonce, &encrypt);
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>"
    );
    let app = AppConfig {
        name: "main".into(),
        kind: AppKind::SelfBuilt,
        token: SecretString::from(TOKEN),
        aes_key: key.clone(),
        receive_ids: vec![CORP.into()],
        secret: None,
    };
    let query = CallbackQuery {
        msg_signature: sig.clone(),
        timestamp: ts.into(),
        nonce: nonce.into(),
        echostr: None,
    };
    for _ in 0..n {
        match what.as_str() {
            "signature" => {
                let _ = black_box(crypto::verify_signature(
                    TOKEN,
                    ts,
                    nonce,
                    black_box(&encrypt),
                    &sig,
                ));
            }
            "decrypt" => {
                let _ = black_box(crypto::decrypt(&key, black_box(&encrypt)));
            }
            "envelope" => {
                let _ = black_box(envelope::parse_envelope(black_box(body.as_bytes())));
            }
            "message" => {
                let _ = black_box(message::parse_message(black_box(XML.as_bytes())));
            }
            "all" => {
                let _ = black_box(verify::verify_callback(
                    &app,
                    query.clone(),
                    black_box(body.as_bytes()),
                    0,
                    0,
                ));
            }
            _ => {} // "none": the set-up alone, subtracted by the script
        }
    }
}
