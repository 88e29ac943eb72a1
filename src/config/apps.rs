//! The apps (one per callback URL): from `[[apps]]` tables in the file, or a single app from the
//! environment.
//!
//! Environment variables (read through clap, see [`AppArgs`]): `WECOM_TOKEN`, `WECOM_ENCODING_AES_KEY`,
//! `WECOM_CORP_ID`, `WECOM_RECEIVE_IDS`, `WECOM_APP_NAME`, `WECOM_APP_KIND`, `WECOM_SECRET`.

use std::collections::HashSet;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::file::DEFAULT_APP_NAME;
use crate::app::{AppConfig, AppKind};
use crate::wecom::crypto::AesKey;

/// One `[[apps]]` table in the file.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApp {
    /// The URL path segment: `/callback/NAME`.
    pub name: Option<String>,
    /// `self_built` (default), `agency`, `suite_instruction` or `suite_data`; checked with the rest.
    pub kind: Option<String>,
    /// The Token from the admin console.
    pub token: Option<String>,
    /// The 43-character EncodingAESKey.
    pub encoding_aes_key: Option<String>,
    /// Receive ids this URL accepts.
    pub receive_ids: Option<Vec<String>>,
    /// Shorthand for `receive_ids = [corp_id]`.
    pub corp_id: Option<String>,
    /// The app's Secret (应用管理 → the app → Secret), to call WeCom's API. Optional.
    pub secret: Option<String>,
}

impl fmt::Debug for FileApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileApp")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("receive_ids", &self.receive_ids)
            .field("corp_id", &self.corp_id)
            .finish_non_exhaustive()
    }
}

/// A single app from flags or environment variables (for every command that needs an app).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Single app (without [[apps]] in a file)")]
pub struct AppArgs {
    /// The Token from the WeCom admin console (接收消息服务器配置).
    #[arg(long, env = "WECOM_TOKEN", global = true, hide_env_values = true, value_parser = super::secret)]
    pub token: Option<SecretString>,
    /// The 43-character EncodingAESKey from the same page.
    #[arg(long, env = "WECOM_ENCODING_AES_KEY", global = true, hide_env_values = true,
          value_parser = super::secret)]
    pub encoding_aes_key: Option<SecretString>,
    /// Your corpid (我的企业 → 企业信息 → 企业ID): the receive id to accept.
    #[arg(long, env = "WECOM_CORP_ID", global = true)]
    pub corp_id: Option<String>,
    /// Extra receive ids, comma-separated (suite id, provider corpid).
    #[arg(
        long,
        env = "WECOM_RECEIVE_IDS",
        global = true,
        value_delimiter = ',',
        value_name = "ID,..."
    )]
    pub receive_ids: Vec<String>,
    /// The URL path segment: callbacks arrive at /callback/NAME.
    #[arg(long, env = "WECOM_APP_NAME", global = true, value_name = "NAME",
          help = format!("The URL path segment: callbacks arrive at /callback/NAME [default: {DEFAULT_APP_NAME}]"))]
    pub app_name: Option<String>,
    /// The kind of endpoint, which decides the reply body.
    #[arg(long, env = "WECOM_APP_KIND", global = true, value_parser = app_kind, value_name = "KIND", help = kind_help())]
    pub app_kind: Option<AppKind>,
    /// The app's Secret, to call WeCom's API (details, resync) [default: none, events only].
    #[arg(long, env = "WECOM_SECRET", global = true, hide_env_values = true, value_parser = super::secret)]
    pub secret: Option<SecretString>,
}

impl AppArgs {
    pub(super) fn is_set(&self) -> bool {
        given_secret(&self.token).is_some()
            || given_secret(&self.encoding_aes_key).is_some()
            || given(&self.corp_id).is_some()
            || self.receive_ids.iter().any(|id| !id.trim().is_empty())
    }
}

// An empty variable (`WECOM_RECEIVE_IDS=` in a compose file) means "not set", as it always has; clap passes
// it through as an empty value.
fn given(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

fn given_secret(s: &Option<SecretString>) -> Option<String> {
    s.as_ref()
        .map(|s| s.expose_secret().to_owned())
        .filter(|s| !s.is_empty())
}

/// `WECOM_APP_KIND`: empty means the default, like an unset variable; otherwise [`AppKind`]'s own message.
fn app_kind(s: &str) -> Result<AppKind, String> {
    if s.trim().is_empty() {
        Ok(AppKind::default())
    } else {
        s.parse()
    }
}

fn kind_help() -> String {
    let names: Vec<&str> = <AppKind as clap::ValueEnum>::value_variants()
        .iter()
        .map(|k| k.as_str())
        .collect();
    format!(
        "The kind of endpoint, which decides the reply body: {} [default: {}]",
        names.join(", "),
        AppKind::default().as_str()
    )
}

pub(super) fn build(
    file_apps: Vec<FileApp>,
    env: &AppArgs,
    problems: &mut Vec<String>,
) -> Vec<AppConfig> {
    let raw: Vec<(String, FileApp)> = if file_apps.is_empty() {
        if !env.is_set() {
            problems.push(
                "no app is configured: set WECOM_TOKEN, WECOM_ENCODING_AES_KEY and WECOM_CORP_ID \
                 (the values you enter in the WeCom admin console under 接收消息服务器配置), \
                 or add an [[apps]] table to the configuration file"
                    .to_owned(),
            );
            return Vec::new();
        }
        let receive_ids: Vec<String> = env
            .receive_ids
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        vec![(
            "WECOM_".to_owned(),
            FileApp {
                name: given(&env.app_name),
                kind: env.app_kind.map(|k| k.as_str().to_owned()),
                token: given_secret(&env.token),
                encoding_aes_key: given_secret(&env.encoding_aes_key),
                receive_ids: (!receive_ids.is_empty()).then_some(receive_ids),
                corp_id: given(&env.corp_id),
                secret: given_secret(&env.secret),
            },
        )]
    } else {
        if env.is_set() {
            problems.push(
                "apps are configured both in the file ([[apps]]) and by WECOM_TOKEN / \
                 WECOM_ENCODING_AES_KEY / WECOM_CORP_ID; keep one of the two"
                    .to_owned(),
            );
        }
        file_apps
            .into_iter()
            .enumerate()
            .map(|(i, a)| (format!("apps[{i}]."), a))
            .collect()
    };

    let from_env = raw.len() == 1 && raw[0].0 == "WECOM_";
    let mut seen = HashSet::new();
    let mut apps = Vec::new();
    for (prefix, app) in raw {
        let setting = |field: &str, env_name: &str| {
            if from_env {
                env_name.to_owned()
            } else {
                format!("{prefix}{field}")
            }
        };
        let before = problems.len();

        let name = app.name.unwrap_or_else(|| {
            if from_env {
                DEFAULT_APP_NAME.to_owned()
            } else {
                String::new()
            }
        });
        if name.is_empty() {
            problems.push(format!(
                "{} is missing: every app needs a name, used in its callback URL /callback/NAME",
                setting("name", "WECOM_APP_NAME")
            ));
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || name.len() > 64
        {
            problems.push(format!(
                "{} {name:?} may only use letters, digits, '-' and '_' (at most 64): it is a URL path segment",
                setting("name", "WECOM_APP_NAME")
            ));
        } else if !seen.insert(name.clone()) {
            problems.push(format!(
                "{} {name:?} is used by two apps; names must be unique",
                setting("name", "WECOM_APP_NAME")
            ));
        }

        let kind = match app.kind.as_deref() {
            None => AppKind::default(),
            Some(k) => match k.parse() {
                Ok(kind) => kind,
                Err(e) => {
                    problems.push(format!("{}: {e}", setting("kind", "WECOM_APP_KIND")));
                    AppKind::default()
                }
            },
        };

        let token = app.token.unwrap_or_default();
        if let Err(why) = validate_token(&token) {
            problems.push(format!("{} {why}", setting("token", "WECOM_TOKEN")));
        }

        let aes_key = match app.encoding_aes_key.as_deref() {
            None | Some("") => {
                problems.push(format!(
                    "{} is missing: copy the EncodingAESKey (43 characters) from the WeCom admin console, \
                     or generate one with `wecom-callback gen-key` and paste it there",
                    setting("encoding_aes_key", "WECOM_ENCODING_AES_KEY")
                ));
                None
            }
            Some(k) => match AesKey::from_encoding_aes_key(k.trim()) {
                Ok(key) => Some(key),
                Err(e) => {
                    problems.push(format!(
                        "{}: {e}",
                        setting("encoding_aes_key", "WECOM_ENCODING_AES_KEY")
                    ));
                    None
                }
            },
        };

        let mut receive_ids = app.receive_ids.unwrap_or_default();
        if let Some(corp) = app.corp_id
            && !receive_ids.contains(&corp)
        {
            receive_ids.insert(0, corp);
        }
        if receive_ids.is_empty() {
            problems.push(format!(
                "{} is missing: set the receive ids this URL accepts — the corpid (企业ID, 我的企业 → 企业信息) \
                 for a self-built app; the suite id for a suite instruction URL (plus the provider corpid for \
                 its URL verification)",
                setting("receive_ids / corp_id", "WECOM_CORP_ID")
            ));
        }
        for id in &receive_ids {
            if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!(
                    "{} {id:?} contains whitespace; copy the id exactly",
                    setting("receive_ids", "WECOM_CORP_ID")
                ));
            }
        }

        if problems.len() == before
            && let Some(aes_key) = aes_key
        {
            apps.push(AppConfig {
                name,
                kind,
                token: SecretString::from(token),
                aes_key,
                receive_ids,
                secret: app
                    .secret
                    .filter(|s| !s.trim().is_empty())
                    .map(SecretString::from),
            });
        }
    }
    apps
}

/// WeCom: "Token 由英文或数字组成且长度不超过32位".
fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(
            "is missing: copy the Token from the WeCom admin console (接收消息服务器配置), or generate one \
             with `wecom-callback gen-key`"
                .to_owned(),
        );
    }
    if token.chars().count() > 32 {
        return Err(format!(
            "must be at most 32 characters; you gave {}",
            token.chars().count()
        ));
    }
    if let Some((i, _)) = token
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "may only contain letters and digits (WeCom's rule); character {} is not one — \
             check for a stray space or quote",
            i + 1
        ));
    }
    Ok(())
}
