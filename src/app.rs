//! The configured apps: one per "接收消息服务器" configuration in the WeCom admin console. Domain types, used by
//! verification, ingest and sync alike; [`crate::config`] builds them from the configuration.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use serde::Deserialize;

use crate::wecom::crypto::AesKey;

/// Which kind of WeCom endpoint an app is. It decides the reply body (docs/protocol.md §5.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AppKind {
    /// 企业内部开发: a self-built app's callback URL. Receive id: the corpid. Reply: empty 200.
    #[default]
    SelfBuilt,
    /// 代开发: the developed app's own callback URL (data callbacks). Reply: empty 200.
    Agency,
    /// A third-party suite's 指令回调URL, or a 代开发 template's callback URL. Receive id: the suite id
    /// (template id). Reply: the literal `success`.
    SuiteInstruction,
    /// A third-party suite's 数据回调URL. Receive id: the authorising corp's corpid. Reply: empty 200.
    SuiteData,
}

impl AppKind {
    /// The body WeCom expects after a callback was accepted.
    pub fn success_body(self) -> &'static str {
        match self {
            AppKind::SuiteInstruction => "success",
            AppKind::SelfBuilt | AppKind::Agency | AppKind::SuiteData => "",
        }
    }

    /// The name used in configuration files and environment variables.
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::SelfBuilt => "self_built",
            AppKind::Agency => "agency",
            AppKind::SuiteInstruction => "suite_instruction",
            AppKind::SuiteData => "suite_data",
        }
    }
}

impl FromStr for AppKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "self_built" => Ok(AppKind::SelfBuilt),
            "agency" => Ok(AppKind::Agency),
            "suite_instruction" => Ok(AppKind::SuiteInstruction),
            "suite_data" => Ok(AppKind::SuiteData),
            other => Err(format!(
                "unknown app kind {other:?}; use one of self_built (企业内部开发), agency (代开发), \
                 suite_instruction (第三方指令回调 / 代开发模版回调), suite_data (第三方数据回调)"
            )),
        }
    }
}

/// One callback endpoint, i.e. one "接收消息服务器" configuration in the WeCom admin console.
#[derive(Clone)]
pub struct AppConfig {
    /// The URL path segment: callbacks arrive at `/callback/{name}`.
    pub name: String,
    pub kind: AppKind,
    /// The Token from the admin console. Used to sign; never logged.
    pub token: SecretString,
    /// The key decoded from the EncodingAESKey.
    pub aes_key: AesKey,
    /// Receive ids accepted inside the ciphertext: the corpid for a self-built app, the suite id for an
    /// instruction URL, the provider's corpid for third-party URL verification, ...
    pub receive_ids: Vec<String>,
    /// The app's Secret, for WeCom's API (details, resync). `None`: events only, no API calls.
    pub secret: Option<SecretString>,
}

impl AppConfig {
    /// The corp the API is called for: the first receive id (the corpid, for a self-built app).
    pub fn api_corp_id(&self) -> Option<&str> {
        self.receive_ids.first().map(String::as_str)
    }
}

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("token", &"<redacted>")
            .field("aes_key", &self.aes_key)
            .field("receive_ids", &self.receive_ids)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}
