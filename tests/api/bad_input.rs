//! Every class of bad input: a clear 4xx, nothing stored, the process still serving.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::{
    MAIN, SUITE, TestApp, envelope, read_reply, sign_callback, sign_callback_with, sign_encrypted,
    spawn_app, spawn_app_with, unix_now,
};

const XML: &str = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><FromUserName>sys</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>del_follow_user</ChangeType><UserID>u</UserID><ExternalUserID>wm1</ExternalUserID></xml>";

async fn assert_healthy(app: &TestApp) {
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
}

#[tokio::test]
async fn malformed_query_strings_get_400() {
    let app = spawn_app().await;
    let cb = sign_callback(&MAIN, XML, unix_now());
    let sig = &cb.signature;
    let ts = &cb.timestamp;
    let n = &cb.nonce;
    for query in [
        String::new(),
        format!("timestamp={ts}&nonce={n}"),
        format!("msg_signature={sig}&nonce={n}"),
        format!("msg_signature={sig}&timestamp={ts}"),
        format!("msg_signature={sig}&msg_signature={sig}&timestamp={ts}&nonce={n}"),
        format!("msg_signature={sig}&timestamp={ts}&timestamp={ts}&nonce={n}"),
        format!("msg_signature={sig}&timestamp={ts}&nonce={n}&nonce={n}"),
        format!("msg_signature=zz{}&timestamp={ts}&nonce={n}", &sig[2..]),
        format!("msg_signature={sig}&timestamp=12ab&nonce={n}"),
        format!("msg_signature={sig}&timestamp={ts}&nonce="),
        format!("msg_signature={sig}&timestamp={ts}&nonce=%FF%FE"),
    ] {
        let r = app.post_raw("main", &query, cb.body.clone()).await;
        assert_eq!(r.status().as_u16(), 400, "query {query:?}");
    }
    assert_eq!(app.event_count().await, 0);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let app = spawn_app().await;
    let cb = sign_callback(&MAIN, XML, unix_now());
    let e = &cb.encrypt;
    for body in [
        String::new(),
        "not xml at all".to_owned(),
        format!("<xml><Encrypt><![CDATA[{e}]]></Encrypt>"),
        format!(
            "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><xml><Encrypt>{e}</Encrypt><X>&lol2;</X></xml>"
        ),
        format!(
            "<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>{e}</Encrypt><A>&xxe;</A></xml>"
        ),
        format!("<xml><Encrypt>{e}</Encrypt><A>&xxe;</A></xml>"),
        "<xml><ToUserName>x</ToUserName></xml>".to_owned(),
        format!("<xml><Encrypt>{e}</Encrypt><Encrypt>{e}</Encrypt></xml>"),
        format!("<xml><Encrypt>{e}</Encrypt></xml><xml/>"),
        format!("{}<xml><Encrypt>{e}</Encrypt></xml>", "<a>".repeat(100)),
    ] {
        let r = app.post_raw("main", &cb.query, body.clone()).await;
        assert_eq!(r.status().as_u16(), 400, "body {body:?}");
    }
    // Not UTF-8.
    let r = app
        .client
        .post(format!("{}?{}", app.url("main"), cb.query))
        .body(vec![0xff, 0xfe, b'<', 0, b'x', 0])
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(app.event_count().await, 0);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn every_authentication_failure_looks_the_same() {
    let app = spawn_app().await;
    // The window is checked in whole seconds: start early in a second so "now + 301" cannot turn into
    // "now + 300" by the time the server reads its clock.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_millis()
        > 300
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = unix_now();
    let mut replies = Vec::new();

    // 1. Signature mismatch: signed with another token.
    let mut cb = sign_callback(&MAIN, XML, now);
    cb.query = cb.query.replace(
        &cb.signature,
        &wecom_callback::wecom::crypto::signature("wrong", &cb.timestamp, &cb.nonce, &cb.encrypt),
    );
    replies.push(("signature", app.post("main", &cb).await));

    // 2. A correct signature over a tampered Encrypt: still a signature failure.
    let cb = sign_callback(&MAIN, XML, now);
    let tampered = envelope(MAIN.receive_id, &format!("A{}", &cb.encrypt[1..]));
    replies.push(("tampered", app.post_raw("main", &cb.query, tampered).await));

    // 3. Correctly signed, but not base64: reaches the decryptor.
    replies.push((
        "base64",
        app.post("main", &sign_encrypted(&MAIN, "!!!notbase64!!!", now))
            .await,
    ));

    // 4. Correctly signed, encrypted with another key: padding fails.
    let other_key = sign_callback(&SUITE, XML, now);
    replies.push((
        "key",
        app.post("main", &sign_encrypted(&MAIN, &other_key.encrypt, now))
            .await,
    ));

    // 5. Correctly signed base64 whose length is not a multiple of 16.
    replies.push((
        "length",
        app.post("main", &sign_encrypted(&MAIN, "QUJDREVGRw==", now))
            .await,
    ));

    // 6. The wrong receive id inside the ciphertext.
    replies.push((
        "receive id",
        app.post(
            "main",
            &sign_callback_with(&MAIN, XML, "wwSOMEONEELSE", now),
        )
        .await,
    ));

    // 7 and 8. Outside the replay window, both directions.
    replies.push((
        "old",
        app.post("main", &sign_callback(&MAIN, XML, now - 301))
            .await,
    ));
    replies.push((
        "future",
        app.post("main", &sign_callback(&MAIN, XML, now + 301))
            .await,
    ));

    // 9. Decrypts, but the plaintext is not XML.
    replies.push((
        "not xml",
        app.post("main", &sign_callback(&MAIN, "{\"json\": true}", now))
            .await,
    ));

    let mut bodies = Vec::new();
    for (what, r) in replies {
        assert_eq!(r.status().as_u16(), 403, "{what}");
        bodies.push((what, r.text().await.expect("body")));
    }
    let first = bodies[0].1.clone();
    for (what, body) in &bodies {
        assert_eq!(body, &first, "{what} must not reveal which step failed");
    }
    assert!(
        !first.to_lowercase().contains("signature") && !first.to_lowercase().contains("decrypt")
    );
    assert_eq!(app.event_count().await, 0);

    // The edges of the window are inside it.
    for (offset, id) in [(-299, "wmA"), (299, "wmB")] {
        let xml = XML.replace("wm1", id);
        let r = app
            .post("main", &sign_callback(&MAIN, &xml, now + offset))
            .await;
        assert_eq!(r.status().as_u16(), 200, "offset {offset}");
    }
    assert_eq!(app.event_count().await, 2);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn oversized_bodies_get_413_by_length_and_when_chunked() {
    let app = spawn_app().await;
    let cb = sign_callback(&MAIN, XML, unix_now());
    let huge = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70 * 1024));

    // Declared length over the limit: refused before the body is read.
    let r = app.post_raw("main", &cb.query, huge.clone()).await;
    assert_eq!(r.status().as_u16(), 413);

    // Chunked, no length: refused once the running total passes the limit.
    let mut request = format!(
        "POST /callback/main?{} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Type: text/xml\r\n\r\n",
        cb.query
    )
    .into_bytes();
    for chunk in huge.as_bytes().chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = app.raw_http(&request).await;
    assert_eq!(status, 413);

    assert_eq!(app.event_count().await, 0);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_others_are_served_meanwhile() {
    let app = spawn_app_with(&[MAIN], |s| {
        s.http.body_read_timeout = Duration::from_millis(800)
    })
    .await;
    let cb = sign_callback(&MAIN, XML, unix_now());
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /callback/main?{} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        cb.query,
        cb.body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&cb.body.as_bytes()[..10])
        .await
        .expect("some body");

    // While that one trickles, a normal callback is served.
    let other = sign_callback(&MAIN, &XML.replace("wm1", "wm2"), unix_now());
    let r = app.post("main", &other).await;
    assert_eq!(r.status().as_u16(), 200);

    let (status, _) = read_reply(&mut stream).await;
    assert_eq!(status, 408);
    assert_eq!(app.event_count().await, 1, "only the normal callback");
    assert_healthy(&app).await;
}
