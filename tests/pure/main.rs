//! Tests of the pure parts (crypto, XML and events, the diagnose tool, the fuzz corpora): no database, no
//! server. One binary instead of four, so the dependency tree is linked once.

mod crypto;
mod diagnose;
mod events;
mod fuzz_corpus;
