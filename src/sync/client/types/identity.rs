//! Who a user or customer is: `miniprogram/jscode2session` and the unionid / pending-id conversions
//! (issue 13).

use secrecy::SecretString;
use serde::Deserialize;

use crate::sync::client::de;

/// `miniprogram/jscode2session`: who logged in with `wx.qy.login`.
#[derive(Debug, Default, Deserialize)]
pub struct Jscode2Session {
    /// The user's corp; empty when WeCom sent none.
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub corpid: String,
    /// Empty when WeCom sent none.
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub userid: String,
    /// Only third-party mini-programs get it.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub open_userid: Option<String>,
    /// Must never reach a client, nor a log.
    #[serde(default, deserialize_with = "de::opt_secret")]
    pub session_key: Option<SecretString>,
}

/// `externalcontact/unionid_to_external_userid` (self-built) or `idconvert/unionid_to_external_userid`
/// (third-party, 代开发): the customer a WeChat unionid is, or the pending id while it is none yet.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnionidConversion {
    /// Set when the person is a customer of the corp; an empty string counts as none.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub external_userid: Option<String>,
    /// Set when the person is not a customer yet (valid 90 days); an empty string counts as none.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub pending_id: Option<String>,
}

/// `idconvert/batch/external_userid_to_pending_id`: the pending ids of up to 100 customers.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PendingIdList {
    /// Only customers that have a pending id are listed.
    #[serde(default, deserialize_with = "de::objects")]
    pub result: Vec<PendingIdPair>,
}

/// One `result[]` entry of `idconvert/batch/external_userid_to_pending_id`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PendingIdPair {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub external_userid: String,
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub pending_id: String,
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;
    use crate::sync::client::types::decode;

    #[test]
    fn jscode2session_decodes_and_hides_the_session_key() {
        let s: Jscode2Session = decode(json!({
            "corpid": "CORPID", "userid": "USERID", "session_key": "kJtdi6RF+Dv67QkbLlPGjw==",
            "errcode": 0, "errmsg": "ok", "extra": [1]
        }));
        assert_eq!((s.corpid.as_str(), s.userid.as_str()), ("CORPID", "USERID"));
        assert!(s.open_userid.is_none());
        assert_eq!(
            s.session_key.as_ref().map(|k| k.expose_secret().to_owned()),
            Some("kJtdi6RF+Dv67QkbLlPGjw==".to_owned())
        );
        assert!(!format!("{s:?}").contains("kJtdi6RF"), "never in Debug");
        let s: Jscode2Session = decode(json!({"errcode": 0, "open_userid": "ou1", "corpid": 1}));
        assert_eq!((s.corpid.as_str(), s.userid.as_str()), ("", ""));
        assert_eq!(s.open_userid.as_deref(), Some("ou1"));
        assert!(s.session_key.is_none());
    }

    #[test]
    fn identity_answers_decode() {
        let c: UnionidConversion =
            decode(json!({"errcode": 0, "errmsg": "ok", "pending_id": "p1", "external_userid": 3}));
        assert_eq!(c.pending_id.as_deref(), Some("p1"));
        assert!(c.external_userid.is_none());
        let l: PendingIdList = decode(json!({"errcode": 0, "result": [
            {"external_userid": "wmE1", "pending_id": "p1"}, "junk", {"pending_id": "p2"}]}));
        assert_eq!(l.result.len(), 2);
        assert_eq!(
            (
                l.result[0].external_userid.as_str(),
                l.result[0].pending_id.as_str()
            ),
            ("wmE1", "p1")
        );
        assert_eq!(l.result[1].external_userid, "");
    }
}
