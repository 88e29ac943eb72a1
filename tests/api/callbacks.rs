//! Signed, encrypted callbacks of every kind, end to end into `wecom_events`.

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::helpers::{MAIN, SUITE, sign_callback, spawn_app, spawn_app_with, unix_now};

fn contact(change_type: &str, extra: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[sys]]></FromUserName>\n\
         <CreateTime>1403610513</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n\
         <Event><![CDATA[change_external_contact]]></Event>\n<ChangeType><![CDATA[{change_type}]]></ChangeType>\n\
         <UserID><![CDATA[zhangsan]]></UserID>\n<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA]]></ExternalUserID>\n{extra}</xml>"
    )
}

struct Case {
    xml: String,
    event: Option<&'static str>,
    change_type: Option<&'static str>,
    msg_type: Option<&'static str>,
    /// (json path under `fields`, expected text)
    field: (&'static str, &'static str),
}

fn app_form_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (ct, extra, field) in [
        (
            "add_external_contact",
            "<State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>",
            ("State", "teststate"),
        ),
        ("edit_external_contact", "", ("UserID", "zhangsan")),
        (
            "add_half_external_contact",
            "<State>half</State><WelcomeCode>WC2</WelcomeCode>",
            ("WelcomeCode", "WC2"),
        ),
        (
            "del_external_contact",
            "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>",
            ("Source", "DELETE_BY_TRANSFER"),
        ),
        (
            "del_follow_user",
            "",
            ("ExternalUserID", "woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"),
        ),
        (
            "transfer_fail",
            "<FailReason><![CDATA[customer_refused]]></FailReason>",
            ("FailReason", "customer_refused"),
        ),
    ] {
        cases.push(Case {
            xml: contact(ct, extra),
            event: Some("change_external_contact"),
            change_type: Some(ct),
            msg_type: Some("event"),
            field,
        });
    }
    cases.push(Case {
        xml: "<xml>\n<ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[sys]]></FromUserName>\n<CreateTime>1403610513</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[change_external_chat]]></Event>\n<ChatId><![CDATA[wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ]]></ChatId>\n<ChangeType><![CDATA[update]]></ChangeType>\n<UpdateDetail><![CDATA[add_member]]></UpdateDetail>\n<JoinScene>1</JoinScene>\n<QuitScene>0</QuitScene>\n<MemChangeCnt>10</MemChangeCnt>\n<MemChangeList>\n<Item>Jack</Item>\n<Item>Rose</Item>\n</MemChangeList>\n<LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer>\n<CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer>\n</xml>".to_owned(),
        event: Some("change_external_chat"),
        change_type: Some("update"),
        msg_type: Some("event"),
        field: ("UpdateDetail", "add_member"),
    });
    cases.push(Case {
        xml: "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><ChangeType><![CDATA[create]]></ChangeType><Id><![CDATA[etjmgTCQAAYIEtCEn30FEiMU9jH_HaaA]]></Id><TagType><![CDATA[tag]]></TagType></xml>".to_owned(),
        event: Some("change_external_tag"),
        change_type: Some("create"),
        msg_type: Some("event"),
        field: ("TagType", "tag"),
    });
    cases.push(Case {
        xml: "<xml>\n\t<ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n\t<FromUserName><![CDATA[sys]]></FromUserName>\n\t<CreateTime>1403610513</CreateTime>\n\t<MsgType><![CDATA[event]]></MsgType>\n\t<Event><![CDATA[change_contact]]></Event>\n\t<ChangeType><![CDATA[update_tag]]></ChangeType>\n\t<TagId>1</TagId>\n\t<AddUserItems><![CDATA[zhangsan,lisi]]></AddUserItems>\n</xml>".to_owned(),
        event: Some("change_contact"),
        change_type: Some("update_tag"),
        msg_type: Some("event"),
        field: ("AddUserItems", "zhangsan,lisi"),
    });
    // An event this service has never heard of: stored and acknowledged like any other.
    cases.push(Case {
        xml: "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><FromUserName>sys</FromUserName><CreateTime>1403610513</CreateTime><MsgType>event</MsgType><Event>brand_new_event_2027</Event><ChangeType>something_new</ChangeType><NewField><Nested>v</Nested></NewField></xml>".to_owned(),
        event: Some("brand_new_event_2027"),
        change_type: Some("something_new"),
        msg_type: Some("event"),
        field: ("NewField", ""),
    });
    // An unknown MsgType.
    cases.push(Case {
        xml: "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><FromUserName>u1</FromUserName><CreateTime>1403610514</CreateTime><MsgType>hologram</MsgType><MsgId>1</MsgId></xml>".to_owned(),
        event: None,
        change_type: None,
        msg_type: Some("hologram"),
        field: ("MsgId", "1"),
    });
    cases
}

fn key_of(xml: &str) -> String {
    hex::encode(Sha256::digest(xml.as_bytes()))
}

#[tokio::test]
async fn every_kind_of_app_callback_is_stored_once_with_its_fields() {
    let app = spawn_app().await;
    let cases = app_form_cases();
    for case in &cases {
        let cb = sign_callback(&MAIN, &case.xml, unix_now());
        let r = app.post("main", &cb).await;
        assert_eq!(r.status().as_u16(), 200, "{}", case.xml);
        // Self-built data callbacks get an empty 200 (docs/protocol.md §5.3).
        assert_eq!(r.text().await.expect("body"), "");

        let row = sqlx::query(
            "SELECT app, receive_id, corp_id, event_time, msg_type, event, info_type, change_type, message, \
                    fields, req_timestamp, req_nonce, msg_signature \
             FROM wecom_events WHERE dedupe_key = $1",
        )
        .bind(key_of(&case.xml))
        .fetch_one(&app.pool)
        .await
        .expect("row stored");
        assert_eq!(row.get::<String, _>("app"), "main");
        assert_eq!(row.get::<String, _>("receive_id"), "wx5823bf96d3bd56c7");
        assert_eq!(
            row.get::<Option<String>, _>("corp_id").as_deref(),
            Some("wx5823bf96d3bd56c7")
        );
        assert!(
            row.get::<Option<chrono::DateTime<chrono::Utc>>, _>("event_time")
                .is_some()
        );
        assert_eq!(
            row.get::<Option<String>, _>("msg_type").as_deref(),
            case.msg_type
        );
        assert_eq!(row.get::<Option<String>, _>("event").as_deref(), case.event);
        assert_eq!(row.get::<Option<String>, _>("info_type"), None);
        assert_eq!(
            row.get::<Option<String>, _>("change_type").as_deref(),
            case.change_type
        );
        assert_eq!(row.get::<String, _>("message"), case.xml);
        assert_eq!(row.get::<String, _>("req_timestamp"), cb.timestamp);
        assert_eq!(row.get::<String, _>("req_nonce"), cb.nonce);
        assert_eq!(row.get::<String, _>("msg_signature"), cb.signature);
        let fields: serde_json::Value = row.get("fields");
        let (name, expected) = case.field;
        if expected.is_empty() {
            assert!(fields.get(name).is_some(), "{name} kept in {fields}");
        } else {
            assert_eq!(fields[name], expected, "{fields}");
        }
    }
    assert_eq!(app.event_count().await, cases.len() as i64);

    // Nested and repeated elements are kept too.
    let fields: serde_json::Value = sqlx::query_scalar(
        "SELECT fields FROM wecom_events WHERE change_type = 'update' AND event = 'change_external_chat'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("chat row");
    assert_eq!(
        fields["MemChangeList"]["Item"],
        serde_json::json!(["Jack", "Rose"])
    );
    let created: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT event_time FROM wecom_events WHERE change_type = 'add_external_contact'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(created.timestamp(), 1_403_610_513);
}

#[tokio::test]
async fn a_suite_ticket_to_a_suite_instruction_url_gets_success() {
    let app = spawn_app().await;
    // The doc sample, with its space before the CDATA.
    let xml = "<xml><SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId><InfoType> <![CDATA[suite_ticket]]></InfoType><TimeStamp>1403610513</TimeStamp><SuiteTicket><![CDATA[asdfasfdasdfasdf]]></SuiteTicket></xml>";
    let cb = sign_callback(&SUITE, xml, unix_now());
    let r = app.post("suite", &cb).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "success");
    let row = sqlx::query(
        "SELECT receive_id, event, info_type, change_type, msg_type, event_time, fields FROM wecom_events",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(row.get::<String, _>("receive_id"), "ww4asffe99e54c0f4c");
    assert_eq!(
        row.get::<Option<String>, _>("event").as_deref(),
        Some("suite_ticket")
    );
    assert_eq!(
        row.get::<Option<String>, _>("info_type").as_deref(),
        Some("suite_ticket")
    );
    assert_eq!(row.get::<Option<String>, _>("msg_type"), None);
    assert_eq!(
        row.get::<Option<chrono::DateTime<chrono::Utc>>, _>("event_time")
            .map(|t| t.timestamp()),
        Some(1_403_610_513)
    );
    let fields: serde_json::Value = row.get("fields");
    assert_eq!(fields["SuiteTicket"], "asdfasfdasdfasdf");

    // A third-party contact event: the corp is the authorising corp, not the suite.
    let xml = "<xml><SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId><AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId><InfoType><![CDATA[change_external_contact]]></InfoType><TimeStamp>1403610513</TimeStamp><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID><State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>";
    let r = app
        .post("suite", &sign_callback(&SUITE, xml, unix_now()))
        .await;
    assert_eq!(r.text().await.expect("body"), "success");
    let corp: Option<String> = sqlx::query_scalar(
        "SELECT corp_id FROM wecom_events WHERE change_type = 'add_external_contact'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(corp.as_deref(), Some("wxf8b4f85f3a794e77"));
}

#[tokio::test]
async fn the_official_decrypt_vectors_are_stored_verbatim() {
    #[derive(serde::Deserialize)]
    struct V {
        kind: String,
        token: String,
        encoding_aes_key: String,
        receive_id: String,
        msg_signature: String,
        timestamp: String,
        nonce: String,
        encrypted: String,
        expected_plaintext: String,
    }
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let vs: Vec<V> = crate::verify_url::vectors()
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("vector"))
        .filter(|v: &V| v.kind == "decrypt_msg")
        .collect();
    assert!(vs.len() >= 3);
    let apps: Vec<_> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| crate::helpers::TestAppConfig {
            name: leak(&format!("d{i}")),
            kind: wecom_callback::app::AppKind::SelfBuilt,
            token: leak(&v.token),
            encoding_aes_key: leak(&v.encoding_aes_key),
            receive_id: leak(&v.receive_id),
        })
        .collect();
    let app = spawn_app_with(&apps, |s| {
        s.http.timestamp_tolerance = std::time::Duration::ZERO
    })
    .await;
    for (i, v) in vs.iter().enumerate() {
        let query = format!(
            "msg_signature={}&timestamp={}&nonce={}",
            v.msg_signature, v.timestamp, v.nonce
        );
        let body = crate::helpers::envelope(&v.receive_id, &v.encrypted);
        let r = app.post_raw(&format!("d{i}"), &query, body).await;
        assert_eq!(r.status().as_u16(), 200);
        let stored: String = sqlx::query_scalar("SELECT message FROM wecom_events WHERE app = $1")
            .bind(format!("d{i}"))
            .fetch_one(&app.pool)
            .await
            .expect("row");
        assert_eq!(stored, v.expected_plaintext);
    }
}
