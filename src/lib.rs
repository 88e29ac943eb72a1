//! wecom-callback: verifies, decrypts and durably records WeCom (企业微信) callbacks in PostgreSQL.
//!
//! Data flow: HTTP ([`routes`]) → verification ([`callback`], over [`crypto`], [`envelope`], [`message`])
//! → group-commit writer ([`store`]) → `wecom_events`. Only after the commit does the handler answer.
//! Then the [`projector`] applies each stored event ([`events`]) to the synced tables
//! ([`store::projections`]), which backends read through SQL or [`routes`]' JSON API.

pub mod callback;
pub mod cli;
pub mod configuration;
pub mod crypto;
pub mod diagnose;
pub mod drain;
pub mod embedded;
pub mod envelope;
pub mod errcode;
pub mod events;
pub mod message;
pub mod metrics;
pub mod projector;
pub mod resync;
pub mod routes;
pub mod send_test;
pub mod spool;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod wecom_api;
pub mod worker;
pub mod xml;
