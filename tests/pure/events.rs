//! Typed events for every event type in docs/protocol.md §6 (samples from WeCom's public pages), in CDATA and
//! bare-text form.

use wecom_callback::wecom::events::*;
use wecom_callback::wecom::message::parse_message;

/// Strips every CDATA wrapper, giving the bare-text variant of a sample.
fn bare(xml: &str) -> String {
    xml.replace("<![CDATA[", "").replace("]]>", "")
}

fn both(xml: &str) -> TypedEvent {
    let a = interpret(&parse_message(xml.as_bytes()).expect("cdata form parses"));
    let b = interpret(&parse_message(bare(xml).as_bytes()).expect("bare form parses"));
    assert_eq!(a, b, "CDATA and bare forms must mean the same");
    a
}

const ADD: &str = "<xml>\n<ToUserName><![CDATA[toUser]]></ToUserName>\n<FromUserName><![CDATA[sys]]></FromUserName>\n<CreateTime>1403610513</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[change_external_contact]]></Event>\n<ChangeType><![CDATA[add_external_contact]]></ChangeType>\n<UserID><![CDATA[zhangsan]]></UserID>\n<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID>\n<State><![CDATA[teststate]]></State>\n<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>\n</xml>";

#[test]
fn add_and_half_add() {
    let e = both(ADD);
    assert_eq!(e.corp_id.as_deref(), Some("toUser"));
    assert_eq!(e.time, Some(1_403_610_513));
    assert_eq!(
        e.kind,
        EventKind::ExternalContact(ExternalContactEvent {
            userid: "zhangsan".into(),
            external_userid: "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA".into(),
            change: ContactChange::Add {
                state: Some("teststate".into()),
                welcome_code: Some("WELCOMECODE".into()),
            },
        })
    );
    let half = both(&ADD.replace("add_external_contact", "add_half_external_contact"));
    assert!(matches!(
        half.kind,
        EventKind::ExternalContact(ExternalContactEvent {
            change: ContactChange::AddHalf { .. },
            ..
        })
    ));
}

#[test]
fn deletes_edit_and_transfer_fail() {
    let del = "<xml>\n<ToUserName><![CDATA[toUser]]></ToUserName>\n<FromUserName><![CDATA[sys]]></FromUserName>\n<CreateTime>1403610513</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[change_external_contact]]></Event>\n<ChangeType><![CDATA[del_external_contact]]></ChangeType>\n<UserID><![CDATA[zhangsan]]></UserID>\n<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA]]></ExternalUserID>\n<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>\n</xml>";
    let EventKind::ExternalContact(c) = both(del).kind else {
        panic!("contact event")
    };
    assert_eq!(
        c.change,
        ContactChange::DeletedByStaff {
            source: Some(DeleteSource::DeleteByTransfer)
        }
    );

    let EventKind::ExternalContact(c) = both(
        &del.replace("del_external_contact", "del_follow_user")
            .replace("<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>\n", ""),
    )
    .kind
    else {
        panic!()
    };
    assert_eq!(c.change, ContactChange::DeletedByCustomer);

    let EventKind::ExternalContact(c) =
        both(&del.replace("del_external_contact", "edit_external_contact")).kind
    else {
        panic!()
    };
    assert_eq!(c.change, ContactChange::Edit);

    let fail = "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[transfer_fail]]></ChangeType><FailReason><![CDATA[customer_refused]]></FailReason><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID></xml>";
    let EventKind::ExternalContact(c) = both(fail).kind else {
        panic!()
    };
    assert_eq!(
        c.change,
        ContactChange::TransferFail {
            reason: Some(FailReason::CustomerRefused)
        }
    );
    let EventKind::ExternalContact(c) =
        both(&fail.replace("customer_refused", "customer_limit_exceed")).kind
    else {
        panic!()
    };
    assert_eq!(
        c.change,
        ContactChange::TransferFail {
            reason: Some(FailReason::CustomerLimitExceed)
        }
    );
}

#[test]
fn third_party_form_uses_the_authorising_corp() {
    let xml = "<xml>\n<SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId>\n<AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId>\n<InfoType><![CDATA[change_external_contact]]></InfoType>\n<TimeStamp>1403610513</TimeStamp>\n<ChangeType><![CDATA[add_external_contact]]></ChangeType>\n<UserID><![CDATA[zhangsan]]></UserID>\n<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID>\n<State><![CDATA[teststate]]></State>\n<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>\n</xml>";
    let e = both(xml);
    assert_eq!(e.corp_id.as_deref(), Some("wxf8b4f85f3a794e77"));
    assert_eq!(e.suite_id.as_deref(), Some("ww4asffe99e54c0f4c"));
    assert_eq!(e.time, Some(1_403_610_513));
    assert!(matches!(
        e.kind,
        EventKind::ExternalContact(ExternalContactEvent {
            change: ContactChange::Add { .. },
            ..
        })
    ));
}

#[test]
fn chat_update_create_dismiss() {
    let xml = "<xml>\n<ToUserName><![CDATA[ww55ca070cb9b7eb22]]></ToUserName>\n<FromUserName><![CDATA[sys]]></FromUserName>\n<CreateTime>1403610513</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[change_external_chat]]></Event>\n<ChatId><![CDATA[wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ]]></ChatId>\n<ChangeType><![CDATA[update]]></ChangeType>\n<UpdateDetail><![CDATA[add_member]]></UpdateDetail>\n<JoinScene>1</JoinScene>\n<QuitScene>0</QuitScene>\n<MemChangeCnt>10</MemChangeCnt>\n<MemChangeList>\n<Item>Jack</Item>\n<Item>Rose</Item>\n</MemChangeList>\n<LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer>\n<CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer>\n</xml>";
    let EventKind::ExternalChat(c) = both(xml).kind else {
        panic!("chat")
    };
    assert_eq!(c.chat_id, "wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ");
    assert_eq!(
        c.change,
        ChatChange::Update(ChatUpdate {
            detail: UpdateDetail::AddMember,
            join_scene: Some(1),
            quit_scene: Some(0),
            mem_change_cnt: Some(10),
            mem_change_list: vec!["Jack".into(), "Rose".into()],
            last_mem_ver: Some("9c3f97c2ada667dfb5f6d03308d963e1".into()),
            cur_mem_ver: Some("71217227bbd112ecfe3a49c482195cb4".into()),
        })
    );
    let name = "<xml><ToUserName><![CDATA[wwea4ccebadeefd11a]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700642907</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wree9uDgAAfxkLu5-lEbsmQBjsb7V8Cg]]></ChatId><ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[change_name]]></UpdateDetail><JoinScene>0</JoinScene><MemChangeCnt>2</MemChangeCnt><LastMemVer><![CDATA[6ebe7c3f89cb839ec2e1720f04eae2e0]]></LastMemVer><CurMemVer><![CDATA[15722766561cf8bce92480a3d1457654]]></CurMemVer></xml>";
    let EventKind::ExternalChat(c) = both(name).kind else {
        panic!("chat")
    };
    let ChatChange::Update(u) = c.change else {
        panic!("update")
    };
    assert_eq!(u.detail, UpdateDetail::ChangeName);
    assert_eq!(u.quit_scene, None);
    assert!(u.mem_change_list.is_empty());
    for (ct, want) in [
        ("create", ChatChange::Create),
        ("dismiss", ChatChange::Dismiss),
    ] {
        let xml = format!(
            "<xml><ToUserName><![CDATA[c]]></ToUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[CHAT_ID]]></ChatId><ChangeType><![CDATA[{ct}]]></ChangeType></xml>"
        );
        let EventKind::ExternalChat(c) = both(&xml).kind else {
            panic!("chat")
        };
        assert_eq!(c.change, want);
    }
}

#[test]
fn tags_in_any_order_with_or_without_strategy() {
    let create = "<xml>\n<ToUserName><![CDATA[CORPID]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\n<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event>\n<Id><![CDATA[TAG_ID]]></Id>\n<TagType><![CDATA[tag]]></TagType>\n<ChangeType><![CDATA[create]]></ChangeType>\n<StrategyId>1</StrategyId>\n</xml>";
    let EventKind::ExternalTag(t) = both(create).kind else {
        panic!("tag")
    };
    assert_eq!(
        t,
        ExternalTagEvent {
            id: "TAG_ID".into(),
            tag_type: Some(TagType::Tag),
            strategy_id: Some("1".into()),
            change: TagChange::Create
        }
    );
    let capture = "<xml><ToUserName><![CDATA[CORPID]]></ToUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><ChangeType><![CDATA[create]]></ChangeType><Id><![CDATA[etjmgTCQAAYIEtCEn30FEiMU9jH_HaaA]]></Id><TagType><![CDATA[tag_group]]></TagType></xml>";
    let EventKind::ExternalTag(t) = both(capture).kind else {
        panic!("tag")
    };
    assert_eq!(t.tag_type, Some(TagType::TagGroup));
    assert_eq!(t.strategy_id, None);
    let shuffle = "<xml><ToUserName><![CDATA[CORPID]]></ToUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event><Id><![CDATA[TAG_ID]]></Id><StrategyId><![CDATA[STRATEGY_ID]]></StrategyId><ChangeType><![CDATA[shuffle]]></ChangeType></xml>";
    let EventKind::ExternalTag(t) = both(shuffle).kind else {
        panic!("tag")
    };
    assert_eq!(t.change, TagChange::Shuffle);
    assert_eq!(t.tag_type, None);
}

#[test]
fn contact_changes() {
    let update_tag = "<xml>\n\t<ToUserName><![CDATA[toUser]]></ToUserName>\n\t<FromUserName><![CDATA[sys]]></FromUserName>\n\t<CreateTime>1403610513</CreateTime>\n\t<MsgType><![CDATA[event]]></MsgType>\n\t<Event><![CDATA[change_contact]]></Event>\n\t<ChangeType><![CDATA[update_tag]]></ChangeType>\n\t<TagId>1</TagId>\n\t<AddUserItems><![CDATA[zhangsan,lisi]]></AddUserItems>\n\t<DelUserItems><![CDATA[zhangsan1,lisi1]]></DelUserItems>\n\t<AddPartyItems><![CDATA[1,2]]></AddPartyItems>\n\t<DelPartyItems><![CDATA[3,4]]></DelPartyItems>\n</xml>";
    let EventKind::Contact(ContactEvent::UpdateTag(t)) = both(update_tag).kind else {
        panic!("update_tag")
    };
    assert_eq!(t.tag_id, "1");
    assert_eq!(t.add_user_items, vec!["zhangsan", "lisi"]);
    assert_eq!(t.del_party_items, vec!["3", "4"]);
    let user = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>update_user</ChangeType><UserID>zhangsan</UserID><NewUserID>zhangsan2</NewUserID><Department>1,2,3</Department></xml>";
    let EventKind::Contact(ContactEvent::UpdateUser(u)) = both(user).kind else {
        panic!("update_user")
    };
    assert_eq!(u.new_userid.as_deref(), Some("zhangsan2"));
    assert_eq!(u.department, vec!["1", "2", "3"]);
    let party = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>create_party</ChangeType><Id>2</Id><ParentId>1</ParentId></xml>";
    assert!(
        matches!(both(party).kind, EventKind::Contact(ContactEvent::CreateParty(PartyChange { ref id, .. })) if id == "2")
    );
    let del = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>zhangsan</UserID></xml>";
    assert_eq!(
        both(del).kind,
        EventKind::Contact(ContactEvent::DeleteUser {
            userid: "zhangsan".into()
        })
    );
}

#[test]
fn suite_events() {
    let ticket = "<xml><SuiteId><![CDATA[ww4asffe99e54c0fxxxx]]></SuiteId><InfoType> <![CDATA[suite_ticket]]></InfoType><TimeStamp>1403610513</TimeStamp><SuiteTicket><![CDATA[asdfasfdasdfasdf]]></SuiteTicket></xml>";
    let e = both(ticket);
    assert_eq!(
        e.kind,
        EventKind::Suite(SuiteEvent::SuiteTicket {
            ticket: "asdfasfdasdfasdf".into()
        })
    );
    assert_eq!(e.suite_id.as_deref(), Some("ww4asffe99e54c0fxxxx"));
    let create = "<xml>\n\t<SuiteId><![CDATA[ww4asffe9xxx4c0f4c]]></SuiteId>\n\t<AuthCode><![CDATA[AUTHCODE]]></AuthCode>\n\t<InfoType><![CDATA[create_auth]]></InfoType>\n\t<TimeStamp>1403610513</TimeStamp>\n\t<State><![CDATA[123]]></State>\n</xml>";
    assert_eq!(
        both(create).kind,
        EventKind::Suite(SuiteEvent::CreateAuth {
            auth_code: "AUTHCODE".into(),
            state: Some("123".into())
        })
    );
    let change = "<xml>\n\t<SuiteId><![CDATA[ww4asffe99exxx0f4c]]></SuiteId>\n\t<InfoType><![CDATA[change_auth]]></InfoType>\n\t<TimeStamp>1403610513</TimeStamp>\n\t<AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId>\n\t<State><![CDATA[abc]]></State>\n</xml>";
    let e = both(change);
    assert_eq!(
        e.kind,
        EventKind::Suite(SuiteEvent::ChangeAuth {
            auth_corp_id: "wxf8b4f85f3a794e77".into(),
            state: Some("abc".into())
        })
    );
    assert_eq!(e.corp_id.as_deref(), Some("wxf8b4f85f3a794e77"));
    let cancel = "<xml>\n\t<SuiteId><![CDATA[ww4asffe99e54cxxxx]]></SuiteId>\n\t<InfoType><![CDATA[cancel_auth]]></InfoType>\n\t<TimeStamp>1403610513</TimeStamp>\n\t<AuthCorpId><![CDATA[wxf8b4f85fxx794xxx]]></AuthCorpId>\n</xml>";
    assert_eq!(
        both(cancel).kind,
        EventKind::Suite(SuiteEvent::CancelAuth {
            auth_corp_id: "wxf8b4f85fxx794xxx".into()
        })
    );
    let reset = "<xml><SuiteId>dk4asffe9xxx4c0f4c</SuiteId><AuthCode>AUTHCODE</AuthCode><InfoType>reset_permanent_code</InfoType><TimeStamp>1403610513</TimeStamp></xml>";
    assert_eq!(
        both(reset).kind,
        EventKind::Suite(SuiteEvent::ResetPermanentCode {
            auth_code: Some("AUTHCODE".into()),
            auth_corp_id: None
        })
    );
    let reset2 = "<xml><SuiteId>dk1</SuiteId><AuthCorpId>wxc</AuthCorpId><InfoType>reset_permanent_code</InfoType><TimeStamp>1</TimeStamp></xml>";
    assert_eq!(
        both(reset2).kind,
        EventKind::Suite(SuiteEvent::ResetPermanentCode {
            auth_code: None,
            auth_corp_id: Some("wxc".into())
        })
    );
}

#[test]
fn anything_else_is_unknown_and_keeps_its_names() {
    let text = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content></xml>";
    assert_eq!(
        both(text).kind,
        EventKind::Unknown {
            event: None,
            change_type: None
        }
    );
    let new = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>brand_new</Event><ChangeType>x</ChangeType></xml>";
    assert_eq!(
        both(new).kind,
        EventKind::Unknown {
            event: Some("brand_new".into()),
            change_type: Some("x".into())
        }
    );
    // A known event missing its ids cannot be applied: Unknown, not a panic or an error.
    let broken = "<xml><ToUserName>c</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType></xml>";
    assert!(matches!(both(broken).kind, EventKind::Unknown { .. }));
    let audit = ADD.replace("add_external_contact", "msg_audit_approved");
    assert!(
        matches!(both(&audit).kind, EventKind::ExternalContact(ExternalContactEvent { change: ContactChange::Other(ref s), .. }) if s == "msg_audit_approved")
    );
}
