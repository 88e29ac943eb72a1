//! The decrypted inner message, with every element kept. Pure.
//!
//! Elements become JSON, in document order: a leaf is a string (trimmed, numbers stay strings), an element with
//! children is an object built the same way, and a name repeated at one level becomes an array. So
//! `<MemChangeList><Item>a</Item><Item>b</Item></MemChangeList>` is `{"MemChangeList":{"Item":["a","b"]}}`,
//! while a single `<Item>` stays a string; [`Message::list`] reads both shapes.

use serde_json::{Map, Value};

use crate::wecom::xml::{self, Element, XmlError};

/// Which of WeCom's two message forms a message is in (docs/protocol.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageForm {
    /// Self-built and 代开发 apps: `MsgType`, `Event`, `CreateTime`, corp in `ToUserName`.
    App,
    /// Third-party suites: `InfoType`, `TimeStamp`, corp in `AuthCorpId`.
    Suite,
    /// Neither.
    Unknown,
}

/// A parsed message: all of its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    fields: Map<String, Value>,
}

/// Parses a decrypted message. Unknown elements and values are kept, never refused.
pub fn parse_message(xml: &[u8]) -> Result<Message, XmlError> {
    let root = xml::parse(xml)?;
    Ok(Message {
        fields: children_to_map(root.children),
    })
}

fn children_to_map(children: Vec<Element>) -> Map<String, Value> {
    let mut map = Map::new();
    for child in children {
        let value = if child.children.is_empty() {
            Value::String(child.text)
        } else {
            Value::Object(children_to_map(child.children))
        };
        match map.get_mut(&child.name) {
            None => {
                map.insert(child.name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    map
}

impl Message {
    /// Builds a message from fields already in this shape (e.g. the stored `fields` column).
    pub fn from_fields(fields: Map<String, Value>) -> Message {
        Message { fields }
    }

    /// Every element.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Every element, owned.
    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }

    /// The text of a top-level leaf element (`Some("")` for an empty one; `None` when absent, repeated, or
    /// not a leaf).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// The texts of `<parent><child>…</child>…</parent>`, whether there is one child or many.
    pub fn list(&self, parent: &str, child: &str) -> Vec<String> {
        match self.fields.get(parent).and_then(|p| p.get(child)) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// `MsgType` (`event`, `text`, ...; absent in the suite form).
    pub fn msg_type(&self) -> Option<&str> {
        self.non_empty("MsgType")
    }

    /// The event name: `Event`, or `InfoType` in the suite form.
    pub fn event(&self) -> Option<&str> {
        self.non_empty("Event").or_else(|| self.info_type())
    }

    /// `InfoType` (suite form only).
    pub fn info_type(&self) -> Option<&str> {
        self.non_empty("InfoType")
    }

    /// `ChangeType`.
    pub fn change_type(&self) -> Option<&str> {
        self.non_empty("ChangeType")
    }

    /// `CreateTime`, or `TimeStamp` in the suite form, in unix seconds.
    pub fn event_time(&self) -> Option<i64> {
        self.non_empty("CreateTime")
            .or_else(|| self.non_empty("TimeStamp"))
            .and_then(|t| t.parse().ok())
    }

    /// The corp the message is about: `AuthCorpId` (suite form), else `ToUserName`.
    pub fn corp_id(&self) -> Option<&str> {
        self.non_empty("AuthCorpId").or_else(|| match self.form() {
            MessageForm::Suite => None,
            _ => self.non_empty("ToUserName"),
        })
    }

    /// `SuiteId` (suite form).
    pub fn suite_id(&self) -> Option<&str> {
        self.non_empty("SuiteId")
    }

    /// Which form the message is in, by the presence of `InfoType` versus `MsgType`/`Event`.
    pub fn form(&self) -> MessageForm {
        if self.fields.contains_key("InfoType") {
            MessageForm::Suite
        } else if self.fields.contains_key("MsgType") || self.fields.contains_key("Event") {
            MessageForm::App
        } else {
            MessageForm::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_and_classifies() {
        let m = parse_message(
            b"<xml><ToUserName><![CDATA[ww1]]></ToUserName><CreateTime>1403610513</CreateTime>\
              <MsgType>event</MsgType><Event>change_external_chat</Event><ChangeType>update</ChangeType>\
              <MemChangeList><Item>Jack</Item><Item>Rose</Item></MemChangeList><Odd><X>1</X></Odd></xml>",
        )
        .expect("parses");
        assert_eq!(m.form(), MessageForm::App);
        assert_eq!(m.corp_id(), Some("ww1"));
        assert_eq!(m.event(), Some("change_external_chat"));
        assert_eq!(m.info_type(), None);
        assert_eq!(m.event_time(), Some(1_403_610_513));
        assert_eq!(m.list("MemChangeList", "Item"), vec!["Jack", "Rose"]);
        assert_eq!(m.fields()["Odd"]["X"], "1");
    }

    #[test]
    fn suite_form() {
        let m = parse_message(
            b"<xml><SuiteId>s1</SuiteId><AuthCorpId>c1</AuthCorpId><InfoType>change_auth</InfoType><TimeStamp>5</TimeStamp></xml>",
        )
        .expect("parses");
        assert_eq!(m.form(), MessageForm::Suite);
        assert_eq!(m.event(), Some("change_auth"));
        assert_eq!(m.info_type(), Some("change_auth"));
        assert_eq!(m.corp_id(), Some("c1"));
        assert_eq!(m.suite_id(), Some("s1"));
        assert_eq!(m.event_time(), Some(5));
        let ticket =
            parse_message(b"<xml><SuiteId>s1</SuiteId><InfoType>suite_ticket</InfoType></xml>")
                .expect("parses");
        assert_eq!(ticket.corp_id(), None, "a suite ticket is about no corp");
    }

    #[test]
    fn single_item_list_and_repeated_top_level() {
        let m = parse_message(b"<xml><L><Item>a</Item></L><R>1</R><R>2</R></xml>").expect("parses");
        assert_eq!(m.list("L", "Item"), vec!["a"]);
        assert_eq!(m.get("R"), None);
        assert_eq!(m.fields()["R"], serde_json::json!(["1", "2"]));
    }
}
