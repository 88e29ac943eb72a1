//! After the synced tables: the change feed's sequencer (committed changes → ordered feed, see
//! [`crate::store::feed`]) and its webhook delivery. [`plan`] (what to send next) and [`sign`] (Standard
//! Webhooks signatures) are pure; [`guard`] keeps deliveries off private addresses; [`sender`] and
//! [`sequencer`] are the supervised tasks (see [`crate::tasks`]).

pub mod guard;
pub mod plan;
pub mod sender;
pub mod sequencer;
pub mod sign;
