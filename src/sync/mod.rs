//! Everything after `wecom_events`: the [`projector`] applies stored events to the synced tables, the
//! [`client`] calls WeCom's API, the [`worker`] runs the API jobs events queue (enrichment), and [`resync`]
//! reconciles the tables with WeCom in full.

pub mod client;
pub mod plan;
pub mod projector;
pub mod resync;
pub mod worker;
