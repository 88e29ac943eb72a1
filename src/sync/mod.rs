//! Everything after `wecom_events`: the [`plan`]ner says what each event means for the synced tables (pure),
//! the [`projector`] applies batches of stored events to them, the
//! [`client`] calls WeCom's API, the [`worker`] runs the API jobs events queue (enrichment), and [`resync`]
//! reconciles the tables with WeCom in full.

pub mod client;
pub mod directory;
pub mod plan;
pub mod projector;
pub mod provider;
pub mod resync;
pub mod worker;
