//! WeCom server API error codes: what each means and the usual fix (docs/protocol.md §8). Pure.
//!
//! WeCom's errmsg is terse and sometimes misleading; this table is what an operator wants to read instead.
//! Code by number only: "开发者的程序应该根据errcode来判断出错的情况，而不应该依赖errmsg来匹配".

use std::fmt;

/// One known error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrcodeInfo {
    pub code: i64,
    /// WeCom's own description (from its global errcode list), with our English gloss when we have one.
    pub meaning: String,
    /// WeCom's own description alone (Chinese, from its global errcode list), for Chinese readers.
    pub description: String,
    /// What usually causes it and what to do: ours for the common codes, else a pointer to WeCom's lookup.
    pub fix: String,
    /// Whether calling again (after a pause) can succeed.
    pub retryable: bool,
    /// Whether the fix is ours (false: only WeCom's description is known).
    pub has_fix: bool,
}

/// WeCom's global errcode list with its descriptions (see the file's header and scripts/errcodes).
pub const CODES_TSV: &str = include_str!("errcodes.tsv");
/// Our fix texts for the common codes.
pub const FIXES_TSV: &str = include_str!("errcode_fixes.tsv");

/// The data lines of a TSV: not blank, not a `#` comment.
fn data_lines(tsv: &'static str) -> impl Iterator<Item = &'static str> {
    tsv.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
}

fn table() -> &'static [ErrcodeInfo] {
    static TABLE: std::sync::OnceLock<Vec<ErrcodeInfo>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // Both files are checked by the tests below: a malformed line is skipped, never a panic.
        let fixes: std::collections::HashMap<i64, (bool, &str, &str)> = data_lines(FIXES_TSV)
            .filter_map(|l| {
                let mut f = l.splitn(4, '\t');
                let code = f.next()?.trim().parse().ok()?;
                let retryable = f.next()? == "true";
                Some((code, (retryable, f.next()?, f.next()?)))
            })
            .collect();
        let mut table: Vec<ErrcodeInfo> = data_lines(CODES_TSV)
            .filter_map(|l| {
                let (code, description) = l.split_once('\t')?;
                let code: i64 = code.trim().parse().ok()?;
                Some(match fixes.get(&code) {
                    Some((retryable, gloss, fix)) => ErrcodeInfo {
                        code,
                        meaning: if gloss.is_empty() {
                            description.to_owned()
                        } else {
                            format!("{description} ({gloss})")
                        },
                        description: description.to_owned(),
                        fix: (*fix).to_owned(),
                        retryable: *retryable,
                        has_fix: true,
                    },
                    None => ErrcodeInfo {
                        code,
                        meaning: description.to_owned(),
                        description: description.to_owned(),
                        fix: format!(
                            "No fix text of ours: WeCom's description above says what is wrong with the request; \
                             WeCom's lookup: https://open.work.weixin.qq.com/devtool/query?e={code}"
                        ),
                        retryable: code == -1,
                        has_fix: false,
                    },
                })
            })
            .collect();
        table.sort_by_key(|i| i.code);
        table
    })
}

/// The entry for `code`, if known.
pub fn explain(code: i64) -> Option<&'static ErrcodeInfo> {
    let t = table();
    t.binary_search_by_key(&code, |i| i.code)
        .ok()
        .map(|i| &t[i])
}

/// Every known code, in code order.
pub fn all() -> &'static [ErrcodeInfo] {
    table()
}

/// The errcode in something pasted: a bare number (`60020`, `-40001`), WeCom's JSON answer
/// (`{"errcode":60020,...}`), an errmsg or URL with `devtool/query?e=60020`, or a log line with
/// `errcode 60020` / `errcode=60020`.
pub fn find_code(pasted: &str) -> Option<i64> {
    let t = pasted.trim();
    if let Ok(n) = t.parse() {
        return Some(n);
    }
    let number_after = |marker: &str| -> Option<i64> {
        let (_, rest) = t.split_once(marker)?;
        let rest = rest.trim_start_matches([' ', '"', ':', '=']);
        let end = rest
            .char_indices()
            .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
            .map_or(rest.len(), |(i, _)| i);
        rest[..end].parse().ok()
    };
    number_after("query?e=")
        .or_else(|| number_after("\"errcode\""))
        .or_else(|| number_after("errcode"))
        .or_else(|| number_after("wecom_code"))
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
            Some(i) if i.has_fix => write!(f, ": {}. {}", i.meaning, i.fix)?,
            Some(i) => write!(
                f,
                ": {}. Look it up with `wecom-callback explain {}`",
                i.meaning, self.errcode
            )?,
            None => write!(
                f,
                ": not in our table; look it up with `wecom-callback explain {}` or at https://open.work.weixin.qq.com/devtool/query?e={}",
                self.errcode, self.errcode
            )?,
        }
        if self.errcode == 60020
            && let Some(ip) = &self.from_ip
        {
            write!(f, " The address to add is {ip}.")?;
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
    fn both_files_parse_completely_and_agree() {
        let mut seen = std::collections::HashSet::new();
        for l in data_lines(CODES_TSV) {
            let (code, description) = l.split_once('\t').expect("code<TAB>description");
            let code: i64 = code.parse().expect("numeric code");
            assert!(seen.insert(code), "{code} twice in errcodes.tsv");
            assert!(!description.trim().is_empty(), "{code} without description");
        }
        assert_eq!(all().len(), seen.len(), "every line is in the table");
        assert!(all().len() > 280, "the global list, not a handful");
        for l in data_lines(FIXES_TSV) {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "code, retryable, gloss, fix: {l}");
            let code: i64 = f[0].parse().expect("numeric code");
            assert!(matches!(f[1], "true" | "false"), "{l}");
            assert!(
                seen.contains(&code),
                "{code} has a fix but is not in errcodes.tsv"
            );
            assert!(explain(code).is_some_and(|i| i.has_fix));
        }
        for code in -40011..=-40001 {
            assert!(
                explain(code).is_some_and(|i| i.has_fix),
                "callback code {code}"
            );
        }
    }

    #[test]
    fn codes_are_found_in_what_users_paste() {
        assert_eq!(find_code("-40001"), Some(-40001));
        assert_eq!(find_code(" 60020 "), Some(60020));
        assert_eq!(
            find_code(r#"{"errcode":60020,"errmsg":"not allow to access from your ip"}"#),
            Some(60020)
        );
        assert_eq!(
            find_code(
                "not allow to access from your ip, hint: [1], from ip: 9.30.0.138, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"
            ),
            Some(60020)
        );
        assert_eq!(
            find_code("WeCom errcode 45009 (api freq out of limit)"),
            Some(45009)
        );
        assert_eq!(
            find_code("callback rejected class=bad_signature wecom_code=-40001"),
            Some(-40001)
        );
        assert_eq!(find_code("nothing here"), None);
    }

    #[test]
    fn the_table_covers_protocol_md() {
        for code in [
            -1, 40001, 40013, 40014, 40029, 40096, 41001, 42001, 45009, 45033, 48002, 60011, 60020,
            81017, 84061, 84074,
        ] {
            assert!(explain(code).is_some_and(|i| i.has_fix), "{code}");
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
