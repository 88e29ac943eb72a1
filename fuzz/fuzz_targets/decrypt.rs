#![no_main]
//! The decryptor with the real key layout: any text must give a value or an error, never a panic.
use libfuzzer_sys::fuzz_target;
use wecom_callback::wecom::crypto::{AesKey, decrypt};

fuzz_target!(|data: &[u8]| {
    let key = AesKey::from_bytes([7u8; 32]);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decrypt(&key, text);
    }
    // Also as raw ciphertext, so the fuzzer reaches the padding and length checks.
    let b64 = base64_encode(data);
    let _ = decrypt(&key, &b64);
});

fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = match c.len() {
            3 => (c[0] as u32) << 16 | (c[1] as u32) << 8 | c[2] as u32,
            2 => (c[0] as u32) << 16 | (c[1] as u32) << 8,
            _ => (c[0] as u32) << 16,
        };
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
