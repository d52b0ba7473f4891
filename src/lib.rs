//! kefu: an intelligent customer-service engine for Chinese retail banks.
//!
//! The engine core is pure: a message goes in, a structured reply comes out. Storage,
//! the banking backend and channels sit behind traits at its edges. Start reading at
//! [`engine::Engine::handle`]; `ARCHITECTURE.md` is the guided tour.

pub mod banking;
pub mod channels;
pub mod config;
pub mod engine;
pub mod error;
pub mod handoff;
pub mod intents;
pub mod knowledge;
pub mod pii;
pub mod report;
pub mod retrieval;
pub mod store;
pub mod text;

pub use error::{Error, Result};
