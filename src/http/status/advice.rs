//! What an operator should do about a refused callback or URL verification, by class, in English and
//! Chinese. The classes are the `outcome` labels (see [`crate::ingest::Outcome`]).

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// From `?lang=` when given, else the first of `zh`/`en` in `Accept-Language` (browsers list the
    /// preferred language first), else English.
    pub fn negotiate(query_lang: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(q) = query_lang {
            return if q.to_ascii_lowercase().starts_with("zh") {
                Lang::Zh
            } else {
                Lang::En
            };
        }
        for tag in accept_language.unwrap_or("").split(',') {
            let tag = tag
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Lang::Zh;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::En
    }

    /// The `lang` attribute of the page.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }
}

/// The fix for a rejection class, or `None` for an outcome that needs none (passed, stored, ...).
pub fn fix(class: &str, lang: Lang) -> Option<&'static str> {
    let (en, zh) = match class {
        "bad_signature" => (
            "The Token differs: the Token in the WeCom console (接收消息 → 设置API接收) and this app's token \
             (WECOM_TOKEN or `token` in [[apps]]) must be the same string. Copy it again into both, restart, \
             and press 保存 in the console.",
            "Token 不一致：企业微信后台（接收消息 → 设置API接收）填写的 Token 必须与本服务该应用的 token（WECOM_TOKEN \
             或 [[apps]] 中的 token）完全相同。两边重新粘贴同一个值，重启服务后在后台再点「保存」。",
        ),
        "decrypt_error" | "bad_padding" | "invalid_base64" | "bad_key" => (
            "The EncodingAESKey differs: the console's EncodingAESKey and this app's (WECOM_ENCODING_AES_KEY) \
             must be the same 43 characters. Generate a pair with `wecom-callback gen-key`, enter it in both \
             places, restart, and press 保存.",
            "EncodingAESKey 不一致：后台的 EncodingAESKey 必须与本服务的 WECOM_ENCODING_AES_KEY 完全相同（43 个字符）。\
             可用 `wecom-callback gen-key` 生成一对，两边填写相同的值，重启后再点「保存」。",
        ),
        "receive_id_mismatch" => (
            "The message is for another corp or suite: set this app's corp id (WECOM_CORP_ID, or receive_ids) \
             to 我的企业 → 企业信息 → 企业ID; for a third-party suite, the suite id (and your provider corpid for \
             URL verification).",
            "消息属于其他企业或套件：请把该应用的 corp id（WECOM_CORP_ID 或 receive_ids）设为「我的企业 → 企业信息 → \
             企业ID」；第三方应用请填写 suite id（URL 验证还需服务商 corpid）。",
        ),
        "stale_timestamp" => (
            "The request's timestamp is far from this server's clock: synchronise the clock (NTP, e.g. \
             `timedatectl set-ntp true`). A replayed old request is refused on purpose.",
            "请求的时间戳与本机时钟相差太大：请校准服务器时间（NTP，例如 `timedatectl set-ntp true`）。\
             重放的旧请求会被有意拒绝。",
        ),
        "bad_query" => (
            "The query string is missing or altered: the URL in the console must be exactly \
             https://your.domain/callback/{app}, and the proxy must pass the query string through unchanged.",
            "查询参数缺失或被改写：后台填写的 URL 必须正好是 https://你的域名/callback/{app}，\
             反向代理必须原样转发查询参数。",
        ),
        "unknown_app" => (
            "No app is configured under this path: use /callback/{name} with a configured app's name.",
            "该路径下没有配置应用：请使用 /callback/{应用名}，应用名须是已配置的。",
        ),
        "not_utf8" | "doctype" | "entity" | "too_complex" | "malformed" | "missing_encrypt"
        | "duplicate_encrypt" | "empty_encrypt" => (
            "The body is not WeCom's <xml><Encrypt>…</Encrypt></xml>: something other than WeCom posted, or a \
             proxy rewrote the body.",
            "请求体不是企业微信的 <xml><Encrypt>…</Encrypt></xml>：可能不是企业微信发来的，或代理改写了请求体。",
        ),
        "bad_message" => (
            "It decrypted, but the message is not XML this service can read: run `wecom-callback decrypt \
             --last` and report the message.",
            "解密成功但内容不是可读的 XML：请运行 `wecom-callback decrypt --last` 并反馈该消息。",
        ),
        "too_large" => (
            "The body is over [http] max_body_bytes: raise it if WeCom's messages are that large.",
            "请求体超过 [http] max_body_bytes：若企业微信的消息确实这么大，请调大该值。",
        ),
        "body_timeout" | "body_error" => (
            "The body arrived too slowly or the connection broke: check the proxy and the network path.",
            "请求体到达太慢或连接中断：请检查代理和网络。",
        ),
        "db_unavailable" | "spool_full" | "spool_error" => (
            "Answered 503: the database did not take the callback in time and the spool could not either. \
             Check PostgreSQL (`wecom-callback doctor`) and the spool directory's disk.",
            "已回复 503：数据库未能及时写入且本地缓冲（spool）也无法写入。请检查 PostgreSQL（`wecom-callback doctor`）\
             和 spool 目录所在磁盘。",
        ),
        _ => return None,
    };
    Some(match lang {
        Lang::En => en,
        Lang::Zh => zh,
    })
}

/// An outcome label (`stored`, `bad_signature`, ...) in words, for the Chinese page; the English page shows
/// the label itself (the metric and log class operators grep for). Unknown labels are shown as they are.
pub fn outcome_name(outcome: &str, lang: Lang) -> &str {
    if lang == Lang::En {
        return outcome;
    }
    match outcome {
        "url_verified" => "URL 验证通过",
        "stored" => "已存储",
        "unknown_type" => "已存储（本版本不解析的类型）",
        "duplicate" => "重复（已存过）",
        "spooled" => "已写入本地缓冲",
        "db_unavailable" => "数据库不可用",
        "spool_full" => "本地缓冲已满",
        "spool_error" => "本地缓冲写入失败",
        "too_large" => "请求体过大",
        "body_timeout" => "请求体超时",
        "body_error" => "请求体读取失败",
        "unknown_app" => "未知应用",
        "bad_query" => "查询参数错误",
        "not_utf8" => "非 UTF-8",
        "doctype" => "含 DOCTYPE",
        "entity" => "含未知实体",
        "too_complex" => "XML 过于复杂",
        "malformed" => "XML 格式错误",
        "missing_encrypt" => "缺少 Encrypt",
        "duplicate_encrypt" => "重复的 Encrypt",
        "empty_encrypt" => "Encrypt 为空",
        "bad_signature" => "签名错误",
        "stale_timestamp" => "时间戳过期",
        "decrypt_error" => "解密失败",
        "receive_id_mismatch" => "ReceiveId 不符",
        "bad_message" => "消息无法解析",
        other => other,
    }
}

/// A resync run's status (`running`, `done`, `failed`, `abandoned`) in the page's language.
pub fn resync_status(status: &str, lang: Lang) -> &str {
    match (lang, status) {
        (Lang::Zh, "running") => "进行中",
        (Lang::Zh, "done") => "完成",
        (Lang::Zh, "failed") => "失败",
        (Lang::Zh, "abandoned") => "已放弃（下一次重新开始）",
        (_, other) => other,
    }
}

/// A drift counter's name (see [`crate::store::resync::Drift`]) in the page's language.
pub fn drift_name(key: &str, lang: Lang) -> &str {
    if lang == Lang::En {
        return key;
    }
    match key {
        "contacts_created" => "新增客户",
        "follows_created" => "新增跟进关系",
        "follows_updated" => "更新跟进关系",
        "follows_removed" => "删除跟进关系",
        "follows_removal_refused" => "拒绝删除的跟进关系（超过比例上限）",
        "follows_unlisted_kept" => "列表漏列但经 externalcontact/get 确认仍在的跟进关系（保留）",
        "chats_created" => "新增客户群",
        "chats_updated" => "更新客户群",
        "chats_dismissed" => "解散客户群",
        "staff_unlisted_kept" => "列表漏列但经 user/get 确认仍在的成员（保留）",
        "chats_unlisted_kept" => "列表漏列但经 groupchat/get 确认仍在的客户群（保留）",
        "tags_created" => "新增标签",
        "tags_updated" => "更新标签",
        "tags_deleted" => "删除标签",
        "skipped" => "跳过",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_first_known_language() {
        assert_eq!(
            Lang::negotiate(None, Some("zh-CN,zh;q=0.9,en;q=0.8")),
            Lang::Zh
        );
        assert_eq!(
            Lang::negotiate(None, Some("en-US,en;q=0.9,zh;q=0.5")),
            Lang::En
        );
        assert_eq!(Lang::negotiate(None, Some("fr-FR, zh-TW;q=0.5")), Lang::Zh);
        assert_eq!(Lang::negotiate(None, None), Lang::En);
        assert_eq!(Lang::negotiate(Some("zh"), Some("en")), Lang::Zh);
    }

    #[test]
    fn every_refusal_class_has_a_fix_in_both_languages() {
        for class in [
            "bad_signature",
            "decrypt_error",
            "receive_id_mismatch",
            "stale_timestamp",
            "bad_query",
            "malformed",
            "too_large",
            "db_unavailable",
        ] {
            let (en, zh) = (fix(class, Lang::En), fix(class, Lang::Zh));
            assert!(en.is_some() && zh.is_some(), "{class}");
            assert_ne!(en, zh, "{class}");
        }
        assert_eq!(fix("url_verified", Lang::En), None);
        assert_eq!(fix("stored", Lang::Zh), None);
    }

    /// Every outcome label the service records (`Outcome::as_str`) has Chinese words (else the Chinese page shows English).
    #[test]
    fn every_outcome_has_a_chinese_name() {
        // Outcome::as_str's labels.
        for label in [
            "url_verified",
            "stored",
            "unknown_type",
            "duplicate",
            "spooled",
            "db_unavailable",
            "spool_full",
            "spool_error",
            "too_large",
            "body_timeout",
            "body_error",
            "unknown_app",
            "bad_query",
            "not_utf8",
            "doctype",
            "entity",
            "too_complex",
            "malformed",
            "missing_encrypt",
            "duplicate_encrypt",
            "empty_encrypt",
            "bad_signature",
            "stale_timestamp",
            "decrypt_error",
            "receive_id_mismatch",
            "bad_message",
        ] {
            assert_eq!(outcome_name(label, Lang::En), label);
            assert!(
                outcome_name(label, Lang::Zh)
                    .chars()
                    .any(|c| c > '\u{2e80}'),
                "{label} has no Chinese name"
            );
        }
    }
}
