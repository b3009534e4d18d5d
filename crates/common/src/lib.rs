//! What every Sluice crate shares: errors with SQLSTATE codes ([`error`]) and the
//! configuration of a Sluice process ([`config`]).

pub mod config;
pub mod error;

pub use error::{Result, SluiceError, SqlState};
