//! HTTP: the actix [`server`] and its handlers, which translate between HTTP and the core, nothing more.

pub mod api;
pub mod auth;
mod callback;
pub mod changes;
mod directory;
pub mod error;
mod health;
pub mod identity;
pub mod server;
pub mod state;
pub mod status;
pub mod suite_corps;

pub use callback::{receive_callback, verify_url};
pub use health::{healthz, metrics, readyz, verification_file};
pub use state::AppState;
