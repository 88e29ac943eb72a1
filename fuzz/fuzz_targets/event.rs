#![no_main]
//! The inner message parser and the event interpreter: authenticated input, but a bug must not crash us.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wecom_callback::wecom::message::parse_message(data) {
        let _ = wecom_callback::wecom::events::interpret(&m);
    }
});
