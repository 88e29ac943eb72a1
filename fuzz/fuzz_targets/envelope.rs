#![no_main]
//! The outer envelope parser sees untrusted bytes before any authentication.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wecom_callback::wecom::envelope::parse_envelope(data);
});
