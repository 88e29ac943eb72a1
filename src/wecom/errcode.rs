//! WeCom server API error codes: what each means and the usual fix (docs/protocol.md §8). Pure.
//!
//! WeCom's errmsg is terse and sometimes misleading; this table is what an operator wants to read instead.
//! Code by number only: "开发者的程序应该根据errcode来判断出错的情况，而不应该依赖errmsg来匹配".

use std::fmt;

/// One known error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrcodeInfo {
    pub code: i64,
    /// WeCom's own wording.
    pub meaning: &'static str,
    /// What usually causes it and what to do.
    pub fix: &'static str,
    /// Whether calling again (after a pause) can succeed.
    pub retryable: bool,
}

const TABLE: &[ErrcodeInfo] = &[
    ErrcodeInfo {
        code: -1,
        meaning: "系统繁忙 (system busy)",
        fix: "WeCom is busy: retry later with backoff (WeCom advises at most 3 retries).",
        retryable: true,
    },
    ErrcodeInfo {
        code: 40001,
        meaning: "不合法的secret参数 (invalid secret)",
        fix: "The corpid/secret pair is wrong: the secret was reset, belongs to another app, or the app is disabled. Copy the secret again from 应用管理 → the app → Secret (客户联系 APIs need the secret of a self-built app listed in 「客户联系 → 可调用接口的应用」). Do not retry in a loop: repeated wrong secrets get this IP banned for an hour.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 40013,
        meaning: "不合法的CorpID (invalid corpid)",
        fix: "Check the corpid: 我的企业 → 企业信息 → 企业ID (starts with ww or wx).",
        retryable: false,
    },
    ErrcodeInfo {
        code: 40014,
        meaning: "不合法的access_token (invalid access_token)",
        fix: "The token expired early, is garbled, or is of the wrong kind (access_token vs suite/provider token). The service refetches it and retries once.",
        retryable: true,
    },
    ErrcodeInfo {
        code: 40029,
        meaning: "不合法的code (invalid code, jscode2session)",
        fix: "The wx.qy.login code is wrong, used twice, or older than 5 minutes: get a fresh one in the mini-program.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 40096,
        meaning: "不合法的外部联系人userid (invalid external_userid)",
        fix: "Use the external_userid of the caller's subject (corp vs service provider), and make sure the follower is in the app's visible range.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 41001,
        meaning: "缺少access_token参数 (access_token missing)",
        fix: "The token goes in the URL query, not the body (a bug in the caller).",
        retryable: false,
    },
    ErrcodeInfo {
        code: 42001,
        meaning: "access_token已过期 (access_token expired)",
        fix: "The service refetches the token and retries once.",
        retryable: true,
    },
    ErrcodeInfo {
        code: 45009,
        meaning: "接口调用超过限制 (API frequency limit)",
        fix: "Too many calls: back off. Remove debug=1 (it allows 5 calls a minute) and look for wrong-secret loops (they ban the IP for an hour).",
        retryable: true,
    },
    ErrcodeInfo {
        code: 45033,
        meaning: "接口并发调用超过限制 (API concurrency limit)",
        fix: "Lower the per-corp concurrency for this API.",
        retryable: true,
    },
    ErrcodeInfo {
        code: 48002,
        meaning: "API接口无权限调用 (API forbidden)",
        fix: "The app lacks the permission: 客户联系 APIs need the app in 「客户联系 → 可调用接口的应用」 (or, for 代开发/第三方, the 客户基础信息 permission, re-published with admin consent); a 代开发 token must come from the self-built gettoken with the permanent code.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 60011,
        meaning: "指定的成员/部门/标签参数无权限 (no privilege for this member/department/tag)",
        fix: "The target is outside the app's visible range (可见范围), or not editable by this app: widen the visible range.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 60020,
        meaning: "不安全的访问IP (IP not allowed)",
        fix: "Add this server's egress IP to the app's 企业可信IP (self-built apps) or the provider's IP whitelist (第三方/代开发). The console accepts trusted IPs only after a callback URL is verified, which this service provides; the change takes about a minute.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 81017,
        meaning: "群数量过多，需指定 owner_filter (too many chats without owner_filter)",
        fix: "Page groupchat/list by owner (owner_filter).",
        retryable: false,
    },
    ErrcodeInfo {
        code: 84061,
        meaning: "不存在外部联系人的关系 (no relation with this external contact)",
        fix: "The member does not (or no longer, or not yet) have this customer: after the member deleted the customer, or a half-add not yet confirmed. Treat as no follow relation.",
        retryable: false,
    },
    ErrcodeInfo {
        code: 84074,
        meaning: "没有外部联系人权限 (no external-contact permission)",
        fix: "Grant the 客户联系 permission to the app, and put the members in its visible range.",
        retryable: false,
    },
];

/// The entry for `code`, if known.
pub fn explain(code: i64) -> Option<&'static ErrcodeInfo> {
    TABLE.iter().find(|e| e.code == code)
}

/// Every known code, for `explain --all` and the README.
pub fn all() -> &'static [ErrcodeInfo] {
    TABLE
}

/// An error answer from WeCom's API, with everything an operator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WecomError {
    pub errcode: i64,
    pub errmsg: String,
    /// The `hint: [...]` WeCom embeds in errmsg: quote it to WeCom support.
    pub hint: Option<String>,
    /// The `from ip: a.b.c.d` WeCom embeds in errmsg (the address to add to 企业可信IP for 60020).
    pub from_ip: Option<String>,
}

impl WecomError {
    /// Parses the hint and caller IP out of errmsg.
    pub fn new(errcode: i64, errmsg: &str) -> WecomError {
        let hint = errmsg.split_once("hint: [").and_then(|(_, rest)| {
            rest.split_once(']')
                .map(|(h, _)| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        });
        let from_ip = errmsg.split_once("from ip: ").map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '.' || *c == ':')
                .collect::<String>()
        });
        WecomError {
            errcode,
            errmsg: errmsg.to_owned(),
            hint,
            from_ip: from_ip.filter(|ip| !ip.is_empty()),
        }
    }

    /// Our explanation, if the code is known.
    pub fn info(&self) -> Option<&'static ErrcodeInfo> {
        explain(self.errcode)
    }

    /// Whether calling again can help (-1, 45009, 45033, token errors).
    pub fn retryable(&self) -> bool {
        self.info().is_some_and(|i| i.retryable)
    }

    /// For an API called with a token: the token must be refetched (and the call retried once). For gettoken
    /// itself 40001 means the secret is wrong, which no refetch cures; the client never retries gettoken on it.
    pub fn is_token_error(&self) -> bool {
        matches!(self.errcode, 40001 | 40014 | 42001)
    }
}

impl fmt::Display for WecomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WeCom errcode {} ({})", self.errcode, self.errmsg)?;
        match self.info() {
            Some(i) => write!(f, ": {}. {}", i.meaning, i.fix)?,
            None => write!(
                f,
                ": not in our table; look it up with `wecom-callback explain {}` or at https://open.work.weixin.qq.com/devtool/query?e={}",
                self.errcode, self.errcode
            )?,
        }
        if self.errcode == 60020 {
            if let Some(ip) = &self.from_ip {
                write!(f, " The address to add is {ip}.")?;
            }
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint for WeCom support: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WecomError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_protocol_md() {
        for code in [
            -1, 40001, 40013, 40014, 40029, 40096, 41001, 42001, 45009, 45033, 48002, 60011, 60020,
            81017, 84061, 84074,
        ] {
            assert!(explain(code).is_some(), "{code}");
        }
    }

    #[test]
    fn errmsg_parts_are_extracted() {
        let e = WecomError::new(
            60020,
            "not allow to access from your ip, hint: [1576065934_28_e0fae07666aa64636023c1fa7e8f49a4], from ip: 9.30.0.138, more info at https://open.work.weixin.qq.com/devtool/query?e=60020",
        );
        assert_eq!(e.from_ip.as_deref(), Some("9.30.0.138"));
        assert_eq!(
            e.hint.as_deref(),
            Some("1576065934_28_e0fae07666aa64636023c1fa7e8f49a4")
        );
        let text = e.to_string();
        assert!(
            text.contains("9.30.0.138") && text.contains("企业可信IP"),
            "{text}"
        );
        assert!(!e.retryable());
        assert!(WecomError::new(45009, "api freq out of limit").retryable());
        assert!(WecomError::new(42001, "access_token expired").is_token_error());
        assert!(WecomError::new(40001, "invalid credential").is_token_error());
        assert!(!WecomError::new(60020, "x").is_token_error());
        assert!(
            WecomError::new(99999, "x")
                .to_string()
                .contains("explain 99999")
        );
    }
}
