//! Operator tools: the step-by-step decrypt [`diagnose`], [`send_test`] (signed sample callbacks), and the
//! [`embedded`] private PostgreSQL cluster for a first run without a database.

pub mod capture;
pub mod diagnose;
pub mod embedded;
pub mod send_test;
