//! wecom-callback: verifies, decrypts and durably records WeCom (企业微信) callbacks in PostgreSQL.
//!
//! Data flow: HTTP ([`routes`]) → verification ([`callback`], over [`crypto`], [`envelope`], [`message`])
//! → group-commit writer ([`store`]) → `wecom_events`. Only after the commit does the handler answer.

pub mod callback;
pub mod cli;
pub mod configuration;
pub mod crypto;
pub mod envelope;
pub mod message;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod xml;
