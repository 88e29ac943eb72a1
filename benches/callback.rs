//! The CPU cost of one callback without I/O: signature, decryption, parsing, and all of them together as the
//! handler runs them (`verify_callback`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;
use wecom_callback::app::{AppConfig, AppKind};
use wecom_callback::wecom::crypto::{self, AesKey};
use wecom_callback::wecom::verify::{self, CallbackQuery};
use wecom_callback::wecom::{envelope, message};

const TOKEN: &str = "QDG6eK";
const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const CORP: &str = "wx5823bf96d3bd56c7";
const XML: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID><State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>";

fn bench(c: &mut Criterion) {
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

    let mut g = c.benchmark_group("callback");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_signature", |b| {
        b.iter(|| crypto::verify_signature(TOKEN, ts, nonce, black_box(&encrypt), &sig))
    });
    g.bench_function("decrypt", |b| {
        b.iter(|| crypto::decrypt(&key, black_box(&encrypt)))
    });
    g.bench_function("parse_envelope", |b| {
        b.iter(|| envelope::parse_envelope(black_box(body.as_bytes())))
    });
    g.bench_function("parse_message", |b| {
        b.iter(|| message::parse_message(black_box(XML.as_bytes())))
    });
    g.bench_with_input(
        BenchmarkId::new("verify_decrypt_parse", "add_external_contact"),
        &body,
        |b, body| {
            b.iter(|| {
                verify::verify_callback(&app, query.clone(), black_box(body.as_bytes()), 0, 0)
                    .expect("valid")
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
