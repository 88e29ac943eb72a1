//! `explain`: what a WeCom errcode means and the usual fix, offline.

use super::Context;

/// Options of `explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The errcode, e.g. 60020; omit to list every known code.
    pub errcode: Option<i64>,
}

/// Prints the explanation, or every known code.
pub async fn run(args: Args, _ctx: &Context) -> anyhow::Result<()> {
    match args.errcode {
        Some(code) => match crate::wecom::errcode::explain(code) {
            Some(i) => println!("{}: {}\n{}", i.code, i.meaning, i.fix),
            None => anyhow::bail!(
                "errcode {code} is not in our table; WeCom's lookup: https://open.work.weixin.qq.com/devtool/query?e={code}"
            ),
        },
        None => {
            for i in crate::wecom::errcode::all() {
                println!("{:>6}  {}\n        {}", i.code, i.meaning, i.fix);
            }
        }
    }
    Ok(())
}
