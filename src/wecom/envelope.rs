//! The outer POST body: `<xml><ToUserName/><Encrypt/><AgentID/></xml>`. Parsed before the signature can be
//! checked, so it goes through the hardened reader. Pure.

use crate::wecom::xml::{self, XmlError};

/// The fields of the outer envelope that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The signed, encrypted message.
    pub encrypt: String,
    /// A routing hint only: the receive id inside the ciphertext is what is checked.
    pub to_user_name: Option<String>,
    pub agent_id: Option<String>,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    Xml(#[from] XmlError),
    #[error("no Encrypt element")]
    MissingEncrypt,
    #[error("more than one Encrypt element")]
    DuplicateEncrypt,
    #[error("the Encrypt element is empty")]
    EmptyEncrypt,
}

impl EnvelopeError {
    /// Short class name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            EnvelopeError::Xml(e) => e.label(),
            EnvelopeError::MissingEncrypt => "missing_encrypt",
            EnvelopeError::DuplicateEncrypt => "duplicate_encrypt",
            EnvelopeError::EmptyEncrypt => "empty_encrypt",
        }
    }
}

/// Parses the outer body. `Encrypt` must appear exactly once, directly under the root: the value that was
/// signed must be the value that is decrypted.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let root = xml::parse(body)?;
    let mut encrypt = None;
    let mut to_user_name = None;
    let mut agent_id = None;
    for child in root.children {
        match child.name.as_str() {
            "Encrypt" => {
                if encrypt.is_some() {
                    return Err(EnvelopeError::DuplicateEncrypt);
                }
                encrypt = Some(child.text);
            }
            "ToUserName" => to_user_name = Some(child.text),
            "AgentID" => agent_id = Some(child.text),
            _ => {}
        }
    }
    let encrypt = encrypt.ok_or(EnvelopeError::MissingEncrypt)?;
    if encrypt.is_empty() {
        return Err(EnvelopeError::EmptyEncrypt);
    }
    Ok(Envelope {
        encrypt,
        to_user_name,
        agent_id: agent_id.filter(|a| !a.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_order_cdata_or_bare() {
        let e = parse_envelope(
            b"<xml>\n<AgentID>218</AgentID>\n<Encrypt><![CDATA[abc=]]></Encrypt>\n<ToUserName><![CDATA[wx1]]></ToUserName>\n</xml>",
        )
        .expect("parses");
        assert_eq!(e.encrypt, "abc=");
        assert_eq!(e.to_user_name.as_deref(), Some("wx1"));
        assert_eq!(e.agent_id.as_deref(), Some("218"));
        let e = parse_envelope(b"<xml><Encrypt>abc</Encrypt><AgentID><![CDATA[]]></AgentID></xml>")
            .expect("parses");
        assert_eq!(e.agent_id, None);
    }

    #[test]
    fn exactly_one_direct_encrypt() {
        assert_eq!(
            parse_envelope(b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>"),
            Err(EnvelopeError::DuplicateEncrypt)
        );
        assert_eq!(
            parse_envelope(b"<xml><A><Encrypt>a</Encrypt></A></xml>"),
            Err(EnvelopeError::MissingEncrypt)
        );
        assert_eq!(
            parse_envelope(b"<xml><Encrypt> </Encrypt></xml>"),
            Err(EnvelopeError::EmptyEncrypt)
        );
    }
}
