//! `explain`: what a WeCom errcode means and the usual fix, offline.

use super::Context;
use crate::wecom::errcode::{self, WecomError};

/// Options of `explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The errcode (60020, -40001), or what WeCom answered, pasted as is: its JSON, the errmsg with its
    /// `hint` and `more info at …?e=60020` URL, or a log line. Omit to list every known code.
    #[arg(allow_hyphen_values = true, num_args = 0.., value_name = "ERRCODE_OR_ERRMSG")]
    pub pasted: Vec<String>,
}

/// Prints the explanation, or every known code.
pub async fn run(args: Args, _ctx: &Context) -> anyhow::Result<()> {
    if args.pasted.is_empty() {
        for i in errcode::all() {
            println!("{:>8}  {}", i.code, i.meaning);
            if i.has_fix {
                println!("          {}", i.fix);
            }
        }
        return Ok(());
    }
    let pasted = args.pasted.join(" ");
    print!("{}", text(&pasted)?);
    Ok(())
}

/// The explanation of what was pasted.
pub fn text(pasted: &str) -> anyhow::Result<String> {
    let Some(code) = errcode::find_code(pasted) else {
        anyhow::bail!(
            "no errcode found in {pasted:?}: pass the number (e.g. 60020 or -40001) or paste WeCom's answer \
             with its errcode"
        );
    };
    let Some(i) = errcode::explain(code) else {
        anyhow::bail!(
            "errcode {code} is not in WeCom's published list that this version carries; WeCom's lookup: \
             https://open.work.weixin.qq.com/devtool/query?e={code}"
        );
    };
    let mut out = format!("{}: {}\n{}\n", i.code, i.meaning, i.fix);
    // What the errmsg itself carries.
    let parsed = WecomError::new(code, pasted);
    if let Some(ip) = parsed.from_ip {
        out.push_str(&format!(
            "WeCom saw this server as {ip}{}\n",
            if code == 60020 {
                ": add it to the app's 企业可信IP (应用管理 → the app → 企业可信IP)"
            } else {
                ""
            }
        ));
    }
    if let Some(hint) = parsed.hint {
        out.push_str(&format!(
            "hint {hint}: quote it to WeCom support (or paste it at https://open.work.weixin.qq.com/devtool/query?e={code})\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::text;

    #[test]
    fn a_pasted_errmsg_is_explained_with_its_ip_and_hint() {
        let t = text("not allow to access from your ip, hint: [1576065934_28_e0f], from ip: 9.30.0.138, more info at https://open.work.weixin.qq.com/devtool/query?e=60020").expect("known");
        assert!(t.starts_with("60020: "), "{t}");
        assert!(
            t.contains("9.30.0.138: add it to the app's 企业可信IP"),
            "{t}"
        );
        assert!(t.contains("hint 1576065934_28_e0f"), "{t}");
        let t = text("-40001").expect("callback code");
        assert!(t.contains("签名验证错误") && t.contains("Token"), "{t}");
        let t = text("86220").expect("a code of the global list without our fix");
        assert!(t.contains("指定的会话参数不合法"), "{t}");
        assert!(text("no code").is_err());
        assert!(
            text("99999999")
                .expect_err("unknown")
                .to_string()
                .contains("devtool/query?e=99999999")
        );
    }
}
