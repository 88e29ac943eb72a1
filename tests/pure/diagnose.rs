//! `decrypt`'s diagnosis: the right step fails, with the right hint.

use secrecy::SecretString;
use wecom_callback::app::{AppConfig, AppKind};
use wecom_callback::tools::diagnose::diagnose;
use wecom_callback::wecom::crypto::{self, AesKey};

fn app(name: &str, token: &str, key: &str, id: &str) -> AppConfig {
    AppConfig {
        name: name.into(),
        kind: AppKind::SelfBuilt,
        token: SecretString::from(token),
        aes_key: AesKey::from_encoding_aes_key(key).expect("key"),
        receive_ids: vec![id.into()],
        secret: None,
    }
}

const Q: &str = "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D";
const KEY_A: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const KEY_B: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

fn failing(d: &wecom_callback::tools::diagnose::Diagnosis) -> (&'static str, String) {
    let s = d.steps.iter().find(|s| !s.ok).expect("a failing step");
    (s.check, s.detail.clone())
}

#[test]
fn the_official_request_passes_every_check() {
    let a = app("a", "QDG6eK", KEY_A, "wx5823bf96d3bd56c7");
    let d = diagnose(std::slice::from_ref(&a), &a, Q, None, 1_409_659_600);
    assert!(d.ok(), "{d:?}");
    assert_eq!(d.plaintext.as_deref(), Some("1616140317555161061"));
}

#[test]
fn a_wrong_token_names_the_app_it_belongs_to() {
    let a = app("a", "otherToken", KEY_A, "wx5823bf96d3bd56c7");
    let b = app("b", "QDG6eK", KEY_B, "x");
    let d = diagnose(&[a.clone(), b], &a, Q, None, 0);
    let (check, detail) = failing(&d);
    assert_eq!(check, "signature");
    assert!(detail.contains("app \"b\""), "{detail}");
    let d = diagnose(std::slice::from_ref(&a), &a, Q, None, 0);
    assert!(failing(&d).1.contains("Token"), "{d:?}");
}

#[test]
fn a_wrong_key_is_told_apart_from_a_wrong_token() {
    let a = app("a", "QDG6eK", KEY_B, "wx5823bf96d3bd56c7");
    let d = diagnose(std::slice::from_ref(&a), &a, Q, None, 0);
    let (check, detail) = failing(&d);
    assert_eq!(check, "decrypt");
    assert!(
        detail.contains("EncodingAESKey") && detail.contains("-40008"),
        "{detail}"
    );
    // Swapped keys between two apps.
    let b = app("b", "x", KEY_A, "x");
    let d = diagnose(&[a.clone(), b], &a, Q, None, 0);
    assert!(failing(&d).1.contains("app \"b\""), "{d:?}");
}

#[test]
fn receive_id_found_versus_expected() {
    let a = app("a", "QDG6eK", KEY_A, "ww_expected");
    let d = diagnose(std::slice::from_ref(&a), &a, Q, None, 0);
    let (check, detail) = failing(&d);
    assert_eq!(check, "receive_id");
    assert!(
        detail.contains("wx5823bf96d3bd56c7") && detail.contains("ww_expected"),
        "{detail}"
    );
}

#[test]
fn a_double_decoded_query_and_a_bad_body_fail_early() {
    let a = app("a", "QDG6eK", KEY_A, "wx5823bf96d3bd56c7");
    let d = diagnose(
        std::slice::from_ref(&a),
        &a,
        &Q.replace("%2B", "+").replace('+', "%20"),
        None,
        0,
    );
    let (check, detail) = failing(&d);
    assert_eq!(check, "query");
    assert!(detail.contains("twice"), "{detail}");
    let d = diagnose(
        std::slice::from_ref(&a),
        &a,
        "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1&nonce=1",
        Some(b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"),
        0,
    );
    assert_eq!(failing(&d).0, "envelope");
}

#[test]
fn a_post_is_decrypted_and_classified() {
    let a = app("a", "QDG6eK", KEY_A, "wx5823bf96d3bd56c7");
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>del_follow_user</ChangeType></xml>";
    let e = crypto::encrypt(
        &a.aes_key,
        &mut rand::rng(),
        xml.as_bytes(),
        b"wx5823bf96d3bd56c7",
    );
    let sig = crypto::signature("QDG6eK", "1700000000", "7", &e);
    let body = format!("<xml><Encrypt><![CDATA[{e}]]></Encrypt></xml>");
    let d = diagnose(
        std::slice::from_ref(&a),
        &a,
        &format!("msg_signature={sig}&timestamp=1700000000&nonce=7"),
        Some(body.as_bytes()),
        1_700_000_000,
    );
    assert!(d.ok(), "{d:?}");
    assert!(
        d.steps
            .iter()
            .any(|s| s.check == "message" && s.detail.contains("del_follow_user"))
    );
    assert_eq!(d.plaintext.as_deref(), Some(xml));
}
