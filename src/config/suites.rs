//! Service providers: `[[suites]]` (third-party suites and 代开发 templates) and `[provider]`.
//!
//! Each suite serves its instruction URL (第三方 指令回调URL / 代开发 模版回调URL) at `/callback/{name}`: the suite
//! becomes an app of kind `suite_instruction` accepting the suite id (POST) and the provider corpid (GET
//! verification) as receive ids.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::app::{AppConfig, AppKind};
use crate::sync::provider::{DEFAULT_EVENT_RETENTION, Provider, SecretKey, Suite, SuiteKind};
use crate::wecom::crypto::AesKey;

/// One `[[suites]]` table.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSuite {
    /// The URL path segment of its instruction URL: `/callback/NAME`.
    pub name: Option<String>,
    /// `third_party` (第三方应用, default) or `agency` (代开发应用模板).
    pub kind: Option<String>,
    /// SuiteID (or the 代开发 template id).
    pub suite_id: Option<String>,
    /// Secret of the suite (or template).
    pub suite_secret: Option<String>,
    /// The Token of its callback settings.
    pub token: Option<String>,
    /// The EncodingAESKey of its callback settings.
    pub encoding_aes_key: Option<String>,
    /// Your provider corpid (服务商的 CorpID): WeCom verifies the URL with it.
    pub provider_corp_id: Option<String>,
    /// Names of `[[apps]]` (kind `suite_data` or `agency`) that are this suite's data callback URLs.
    pub data_apps: Option<Vec<String>>,
}

impl std::fmt::Debug for FileSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSuite")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("suite_id", &self.suite_id)
            .finish_non_exhaustive()
    }
}

/// `[provider]`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileProvider {
    /// 32 bytes, base64: seals permanent codes at rest (`WECOM_SECRET_KEY` overrides).
    pub secret_key: Option<String>,
    /// Seconds after `cancel_auth` before the corp's synced rows are deleted (default 0: at once).
    pub delete_rows_after_secs: Option<u64>,
    /// Days after `cancel_auth` before the corp's stored events are deleted (default 30, kept for audit).
    pub delete_events_after_days: Option<u64>,
}

impl std::fmt::Debug for FileProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileProvider").finish_non_exhaustive()
    }
}

/// Builds the suites (and their instruction apps) with every problem pushed to `problems`.
pub(super) fn build(
    suites: Vec<FileSuite>,
    provider: &FileProvider,
    env_key: Option<&SecretString>,
    problems: &mut Vec<String>,
) -> (Provider, Vec<AppConfig>) {
    let mut out = Provider {
        delete_rows_after: Duration::from_secs(provider.delete_rows_after_secs.unwrap_or(0)),
        delete_events_after: provider
            .delete_events_after_days
            .map(|d| Duration::from_secs(d.saturating_mul(86_400)))
            .unwrap_or(DEFAULT_EVENT_RETENTION),
        ..Provider::default()
    };
    let key_text = env_key
        .map(|k| k.expose_secret().to_owned())
        .filter(|k| !k.trim().is_empty())
        .or_else(|| provider.secret_key.clone());
    if let Some(k) = key_text {
        match SecretKey::from_base64(&k) {
            Ok(key) => out.key = Some(key),
            Err(e) => problems.push(format!("WECOM_SECRET_KEY / provider.secret_key {e}")),
        }
    }
    let mut apps = Vec::new();
    for (i, s) in suites.into_iter().enumerate() {
        let at = |field: &str| format!("suites[{i}].{field}");
        let before = problems.len();
        let mut required = |field: &str, v: Option<String>, what: &str| -> String {
            match v.filter(|v| !v.trim().is_empty()) {
                Some(v) => v.trim().to_owned(),
                None => {
                    problems.push(format!("{} is missing: {what}", at(field)));
                    String::new()
                }
            }
        };
        let name = required("name", s.name, "the path segment of its URL /callback/NAME");
        let suite_id = required(
            "suite_id",
            s.suite_id,
            "the SuiteID (服务商后台 → 应用管理 → the app → 基本信息) or the 代开发 template id",
        );
        let secret = required(
            "suite_secret",
            s.suite_secret,
            "the suite's Secret from the same page",
        );
        let token = required("token", s.token, "the Token of the app's 回调配置");
        let aes = required(
            "encoding_aes_key",
            s.encoding_aes_key,
            "the EncodingAESKey of the app's 回调配置",
        );
        let provider_corp = required(
            "provider_corp_id",
            s.provider_corp_id,
            "your provider CorpID (服务商后台 → 服务商信息 → 基本信息): WeCom verifies the URL with it",
        );
        let kind = match s.kind.as_deref().map(str::trim) {
            None | Some("third_party") => SuiteKind::ThirdParty,
            Some("agency") => SuiteKind::Agency,
            Some(other) => {
                problems.push(format!(
                    "{} {other:?} is unknown; use third_party (第三方应用) or agency (代开发应用模板)",
                    at("kind")
                ));
                SuiteKind::ThirdParty
            }
        };
        let aes_key = if aes.is_empty() {
            None
        } else {
            match AesKey::from_encoding_aes_key(&aes) {
                Ok(k) => Some(k),
                Err(e) => {
                    problems.push(format!("{}: {e}", at("encoding_aes_key")));
                    None
                }
            }
        };
        if problems.len() == before
            && let Some(aes_key) = aes_key
        {
            apps.push(AppConfig {
                name: name.clone(),
                kind: AppKind::SuiteInstruction,
                token: SecretString::from(token),
                aes_key,
                receive_ids: vec![suite_id.clone(), provider_corp],
                secret: None,
            });
            out.suites.push(Suite {
                name,
                kind,
                suite_id,
                secret: SecretString::from(secret),
                data_apps: s.data_apps.unwrap_or_default(),
            });
        }
    }
    if out.is_enabled() && out.key.is_none() {
        problems.push(
            "WECOM_SECRET_KEY / provider.secret_key is missing: [[suites]] store each corp's permanent code \
             sealed with it. Generate one with `openssl rand -base64 32` and keep it (losing it means every \
             corp must authorise again)"
                .to_owned(),
        );
    }
    (out, apps)
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, FileConfig, Overrides, build_settings};
    use crate::app::AppKind;

    const SUITE: &str = r#"
[[suites]]
name = "crm"
kind = "agency"
suite_id = "dkTEMPLATE"
suite_secret = "s"
token = "QDG6eK"
encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
provider_corp_id = "wwPROVIDER"
"#;

    fn file(extra: &str) -> FileConfig {
        toml::from_str(&format!("{extra}\n{SUITE}")).expect("toml")
    }

    #[test]
    fn a_suite_alone_is_a_configuration_and_becomes_its_instruction_app() {
        let s = build_settings(
            file("[provider]\nsecret_key = \"KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=\"\ndelete_events_after_days = 7"),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(s.apps.len(), 1);
        assert_eq!(s.apps[0].name, "crm");
        assert_eq!(s.apps[0].kind, AppKind::SuiteInstruction);
        assert_eq!(s.apps[0].receive_ids, vec!["dkTEMPLATE", "wwPROVIDER"]);
        assert_eq!(s.provider.suites[0].kind, super::SuiteKind::Agency);
        assert_eq!(
            s.provider.delete_events_after,
            std::time::Duration::from_secs(7 * 86_400)
        );
        assert!(!format!("{:?}", s.provider).contains("KioqKioq"));
    }

    #[test]
    fn a_suite_without_a_secret_key_is_refused_with_the_fix() {
        match build_settings(file(""), &Overrides::default()) {
            Err(ConfigError::Invalid(p)) => {
                assert_eq!(p.len(), 1, "{p:?}");
                assert!(p[0].contains("WECOM_SECRET_KEY"), "{}", p[0]);
                assert!(p[0].contains("openssl rand -base64 32"), "{}", p[0]);
            }
            other => panic!("expected the missing key, got {:?}", other.map(|_| ())),
        }
    }
}
