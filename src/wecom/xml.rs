//! A hardened XML reader shared by the envelope and message parsers. Pure.
//!
//! WeCom's XML is small and flat, and the outer envelope is parsed before its signature can be checked, so the
//! reader accepts only what WeCom sends: UTF-8, one root, no DOCTYPE (which rules out entity expansion and
//! external entities), only the predefined entities and character references, bounded depth and size.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Deepest nesting accepted (WeCom's messages go three levels deep at most).
pub const MAX_DEPTH: usize = 16;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 10_000;

/// An element: its name, its trimmed text (CDATA and plain text concatenated) and its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

/// Why a document was refused. The messages never quote the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the body is empty")]
    Empty,
    #[error("a DOCTYPE is not allowed")]
    DocType,
    #[error(
        "entity references other than &lt; &gt; &amp; &apos; &quot; and character references are not allowed"
    )]
    UnknownEntity,
    #[error("processing instructions are not allowed")]
    ProcessingInstruction,
    #[error("elements nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("more than one root element, or text outside the root")]
    TrailingContent,
    #[error("no root element")]
    NoRoot,
    #[error("not well-formed XML: {0}")]
    Malformed(String),
}

impl XmlError {
    /// Short class name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            XmlError::NotUtf8 => "not_utf8",
            XmlError::DocType => "doctype",
            XmlError::UnknownEntity => "entity",
            XmlError::TooDeep | XmlError::TooManyElements => "too_complex",
            _ => "malformed",
        }
    }
}

fn malformed(e: quick_xml::Error) -> XmlError {
    match e {
        quick_xml::Error::Escape(_) => XmlError::UnknownEntity,
        other => XmlError::Malformed(other.to_string()),
    }
}

fn name_of(raw: &[u8]) -> Result<String, XmlError> {
    std::str::from_utf8(raw)
        .map(str::to_owned)
        .map_err(|_| XmlError::NotUtf8)
}

/// Parses a document into its root element.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    let text = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    // A UTF-8 byte order mark is harmless; anything else before '<' is not.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let mut seen_anything = false;

    loop {
        let event = reader.read_event().map_err(malformed)?;
        match event {
            Event::Decl(_) if !seen_anything => {}
            Event::Decl(_) | Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Comment(_) => {}
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError::TrailingContent);
            }
            Event::Start(e) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                stack.push(Element {
                    name: name_of(e.name().as_ref())?,
                    text: String::new(),
                    children: Vec::new(),
                });
            }
            Event::Empty(e) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let el = Element {
                    name: name_of(e.name().as_ref())?,
                    text: String::new(),
                    children: Vec::new(),
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let mut el = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unexpected end tag".into()))?;
                let trimmed = el.text.trim();
                if trimmed.len() != el.text.len() {
                    el.text = trimmed.to_owned();
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(malformed)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(XmlError::TrailingContent),
                }
            }
            Event::CData(c) => {
                let s = std::str::from_utf8(c.as_ref()).map_err(|_| XmlError::NotUtf8)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(s),
                    None => return Err(XmlError::TrailingContent),
                }
            }
            Event::Eof => break,
        }
        seen_anything = true;
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("unclosed element".into()));
    }
    root.ok_or(XmlError::NoRoot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdata_and_text_are_concatenated_and_trimmed() {
        let root = parse(b"<xml><A> <![CDATA[x]]></A><B>1 &amp; 2</B><C/></xml>").expect("parses");
        assert_eq!(root.name, "xml");
        assert_eq!(root.children[0].text, "x");
        assert_eq!(root.children[1].text, "1 & 2");
        assert_eq!(root.children[2].text, "");
    }

    #[test]
    fn refuses_what_wecom_never_sends() {
        assert_eq!(parse(b"<!DOCTYPE x><xml/>"), Err(XmlError::DocType));
        assert_eq!(parse(b"<xml>&xxe;</xml>"), Err(XmlError::UnknownEntity));
        assert_eq!(parse(b"<xml/><xml/>"), Err(XmlError::TrailingContent));
        assert_eq!(parse(b"<xml/>junk"), Err(XmlError::TrailingContent));
        assert_eq!(
            parse(b"<xml><?php x?></xml>"),
            Err(XmlError::ProcessingInstruction)
        );
        assert_eq!(parse(&[0xff, 0xfe]), Err(XmlError::NotUtf8));
        assert_eq!(parse(b"  "), Err(XmlError::Empty));
        assert!(matches!(
            parse(b"<xml><a></xml>"),
            Err(XmlError::Malformed(_))
        ));
        assert!(matches!(parse(b"<xml>"), Err(XmlError::Malformed(_))));
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn declaration_comment_and_bom_are_fine() {
        let root = parse(
            "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi --><xml><A>1</A></xml>\n"
                .as_bytes(),
        )
        .expect("parses");
        assert_eq!(root.children[0].text, "1");
        assert_eq!(
            parse(b"<xml/><?xml version=\"1.0\"?>"),
            Err(XmlError::ProcessingInstruction)
        );
    }

    #[test]
    fn character_references_are_decoded() {
        let root = parse(b"<xml><A>&#20320;&#x597D;</A></xml>").expect("parses");
        assert_eq!(root.children[0].text, "你好");
    }
}
