//! `gen-key`: a fresh random Token and EncodingAESKey, in WeCom's alphabet and lengths.

use rand::Rng;

use super::Context;

/// Options of `gen-key` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints `WECOM_TOKEN=…` and `WECOM_ENCODING_AES_KEY=…`, ready for an environment file.
pub async fn run(_args: Args, _ctx: &Context) -> anyhow::Result<()> {
    let mut rng = rand::rng();
    // The admin console takes an EncodingAESKey of letters and digits only (字符范围为A-Z，a-z，0-9), while the
    // base64 of random bytes has '+' or '/' three times in four: draw until the key is all letters and digits
    // (about four draws on average; still 32 uniformly random bytes among those whose encoding qualifies).
    let key = loop {
        let key = crate::wecom::crypto::AesKey::from_bytes(rng.random());
        if key
            .to_encoding_aes_key()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        {
            break key;
        }
    };
    let token: String = (0..32)
        .map(|_| {
            let c = rng.random_range(0..62u8);
            (match c {
                0..=9 => b'0' + c,
                10..=35 => b'a' + c - 10,
                _ => b'A' + c - 36,
            }) as char
        })
        .collect();
    println!("WECOM_TOKEN={token}");
    println!("WECOM_ENCODING_AES_KEY={}", key.to_encoding_aes_key());
    eprintln!(
        "Paste both into the WeCom admin console (应用 → 接收消息 → 设置API接收: Token and EncodingAESKey) and give the \
         same values to this service. Keep them secret."
    );
    Ok(())
}
