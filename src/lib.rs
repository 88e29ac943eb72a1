//! wecom-callback: verifies, decrypts and durably records WeCom (企业微信) callbacks in PostgreSQL, and keeps
//! synced tables of a corp's customers, follows, group chats and tags.
//!
//! # Layout
//! The folders are the stages a callback passes through, in order:
//!
//! - [`wecom`]: the WeCom protocol, pure (no I/O): crypto, hardened XML, envelope, message, verification
//!   ([`wecom::verify`] is the only way to a `VerifiedCallback`), typed events, errcodes.
//! - [`http`]: the actix server and its handlers, which only translate between HTTP and the core.
//! - [`ingest`]: from a verified callback to an acknowledged one: the group-commit writer, the spool (when the
//!   database cannot take a callback in time) and its drain.
//! - [`sync`]: after `wecom_events`: the planners (the projection rules, pure: event → register writes;
//!   [`sync::plan`] for customers, chats and tags, [`sync::directory`] for staff), the projector (batches of
//!   events → one merged write per table), the WeCom API client (with its cluster-wide limiter), the job
//!   worker (enrichment, staff details, pending ids), the full resync, and [`sync::provider`] (service
//!   providers: suites, authorised corps, their tokens and data deletion).
//! - [`tasks`]: supervision of the background tasks (projector, worker, resync, drain, writer, spool thread):
//!   their restart or fail-the-process policy, and the one cancellation token they stop on.
//! - [`store`]: PostgreSQL, and the only module that writes SQL (including the API observation log that lets
//!   `rebuild` lose nothing).
//! - [`deliver`]: after the synced tables: the change feed's sequencer (committed changes → the ordered feed of
//!   [`store::feed`]) and webhook delivery (what to send next and Standard Webhooks signatures pure, the
//!   private-address guard, the supervised sender per subscriber).
//! - [`config`]: configuration (file, environment, flags), validated once with every problem at once.
//! - [`cli`]: the `wecom-callback` subcommands. [`tools`]: operator tools (decrypt diagnosis, send-test, the
//!   private PostgreSQL cluster).
//! - [`app`]: the configured apps; [`domain`]: closed sets of kinds and statuses; [`metrics`], [`telemetry`].
//!
//! Data flow: HTTP → verify → ingest (group commit) → `wecom_events` → only then `success`. The projector then
//! plans each stored event ([`sync::plan`]) and applies a batch of plans to the synced tables
//! ([`store::projections`]), which backends read through SQL or the JSON API.

pub mod app;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod tools;
pub mod wecom;
