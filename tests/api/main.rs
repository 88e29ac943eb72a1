//! End-to-end tests: real PostgreSQL, the real server over loopback HTTP.

mod bad_input;
mod callbacks;
mod captures;
mod cli;
mod database_down;
mod dedupe;
mod directory;
mod embedded;
mod enrichment;
#[path = "../common/fake_wecom.rs"]
mod fake_wecom;
mod feed;
mod health;
mod helpers;
mod http_errors;
mod identity;
mod ingest;
mod maintenance;
mod messages;
mod miniprogram;
mod ordering;
mod provider;
mod rebuild;
mod replicas;
mod resync;
mod simcorp;
#[path = "../common/snapshot.rs"]
mod snapshot;
mod status;
mod supervision;
mod sync;
mod tools;
mod verify_url;
mod webhooks;
mod wecom_api;
