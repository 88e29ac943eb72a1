//! HTTP handlers: they translate between HTTP and the core, nothing more.

pub mod api;
mod callback;
mod health;

pub use callback::{receive_callback, receive_default_callback, verify_default_url, verify_url};
pub use health::{healthz, metrics, readyz, verification_file};
