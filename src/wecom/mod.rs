//! The WeCom callback protocol, pure: no I/O, the clock injected. See `docs/protocol.md`.

pub mod crypto;
pub mod envelope;
pub mod errcode;
pub mod events;
pub mod message;
pub mod verify;
pub mod xml;
