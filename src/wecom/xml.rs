//! A hardened XML reader shared by the envelope and message parsers. Pure.
//!
//! WeCom's XML is small and flat, and the outer envelope is parsed before its signature can be checked, so the
//! reader accepts only what WeCom sends: UTF-8, one root, no DOCTYPE (which rules out entity expansion and
//! external entities), only the predefined entities and character references, bounded depth and size.

use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event};

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

/// Resolves `&name;` / `&#N;` / `&#xN;`. Only the five predefined entities and character references exist
/// without a DTD, and a DTD is refused, so every other name is refused here too: nothing is ever expanded
/// from a declaration, and an unknown name cannot silently vanish from the text.
fn resolve_reference(r: &BytesRef<'_>) -> Result<char, XmlError> {
    if r.is_char_ref() {
        // Refuses &#0;, surrogates and values beyond U+10FFFF; the error carries no input.
        return match r.resolve_char_ref() {
            Ok(Some(ch)) => Ok(ch),
            Ok(None) | Err(_) => Err(XmlError::UnknownEntity),
        };
    }
    match &**r {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(XmlError::UnknownEntity),
    }
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
                    name: e.name().as_ref().to_owned(),
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
                    name: e.name().as_ref().to_owned(),
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
            // The reader hands over text without its references (they arrive as GeneralRef), so it contains
            // no '&' and needs no unescaping. Line ends are kept as sent, like the raw message that is stored.
            Event::Text(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t),
                None if t.trim().is_empty() => {}
                None => return Err(XmlError::TrailingContent),
            },
            Event::GeneralRef(r) => {
                let ch = resolve_reference(&r)?;
                match stack.last_mut() {
                    Some(el) => el.text.push(ch),
                    None => return Err(XmlError::TrailingContent),
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(el) => el.text.push_str(&c),
                None => return Err(XmlError::TrailingContent),
            },
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
    fn the_predefined_entities_resolve_once_and_in_place() {
        let root = parse(
            b"<xml><A>a&lt;b&gt;c&amp;d&apos;e&quot;f</A><B>&amp;lt;</B><C>&lt;x/&gt;</C></xml>",
        )
        .expect("parses");
        assert_eq!(root.children[0].text, "a<b>c&d'e\"f");
        // One level only: "&amp;lt;" is the text "&lt;", not "<".
        assert_eq!(root.children[1].text, "&lt;");
        // A resolved '<' is text, never markup.
        assert_eq!(root.children[2].text, "<x/>");
        assert!(root.children[2].children.is_empty());
        // References next to CDATA and whitespace still trim as one text.
        let root = parse(b"<xml><A> &#32;<![CDATA[x]]>&amp; </A></xml>").expect("parses");
        assert_eq!(root.children[0].text, "x&");
    }

    #[test]
    fn every_other_entity_and_any_doctype_is_refused() {
        for doc in [
            &b"<xml>&xxe;</xml>"[..],
            b"<xml><A>&nbsp;</A></xml>",
            b"<xml><A>&LT;</A></xml>",
            b"<xml><A>&#0;</A></xml>",
            b"<xml><A>&#xD800;</A></xml>",
            b"<xml><A>&#x110000;</A></xml>",
            b"<xml><A>&#xZZ;</A></xml>",
            b"<xml><A>&#;</A></xml>",
        ] {
            assert_eq!(
                parse(doc),
                Err(XmlError::UnknownEntity),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        // A dangling '&' is not well-formed.
        assert!(parse(b"<xml><A>a & b</A></xml>").is_err());
        // Outside the root, a reference is content after (or before) the document.
        assert_eq!(parse(b"<xml/>&amp;"), Err(XmlError::TrailingContent));
        // Internal subsets (billion laughs) and external entities never get as far as a reference.
        let laughs = b"<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><xml>&lol2;</xml>";
        assert_eq!(parse(laughs), Err(XmlError::DocType));
        let xxe = b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml>&e;</xml>";
        assert_eq!(parse(xxe), Err(XmlError::DocType));
        assert_eq!(
            parse(b"<xml><!DOCTYPE x></xml>").map(|_| ()),
            Err(XmlError::DocType)
        );
    }

    #[test]
    fn character_references_are_decoded() {
        let root = parse(b"<xml><A>&#20320;&#x597D;</A></xml>").expect("parses");
        assert_eq!(root.children[0].text, "你好");
    }
}
