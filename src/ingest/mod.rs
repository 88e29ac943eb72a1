//! From a verified callback to an acknowledged one: the group-commit [`writer`], the [`spool`] that takes
//! callbacks when the database cannot in time, and the [`drain`] that stores spooled callbacks later.

pub mod drain;
pub mod outcome;
pub mod spool;
pub mod writer;

pub use outcome::Outcome;
