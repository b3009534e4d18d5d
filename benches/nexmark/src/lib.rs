//! Nexmark on Sluice: the queries, a correctness gate and a throughput harness.
//!
//! The queries live in `queries/qN.sql`, one `CREATE MATERIALIZED VIEW nexmark_qN AS ...`
//! each, over the sources `bid`, `auction` and `person` ([`sources`]). A query Sluice
//! cannot run yet keeps its canonical SQL and says why on its first line
//! (`-- unsupported: <reason>`); [`queries`] embeds and classifies them.
//!
//! [`gate`] runs a query as a streaming view over a bounded nexmark source and compares
//! the view, as a multiset of rows, with the same `SELECT` run by plain DataFusion over
//! the same events ([`reference`]), and checks that a blackhole sink of the same query
//! receives a changelog leaving exactly the view's rows. [`bench`] measures one run of
//! a query into a blackhole sink (wall time, CPU time, peak RSS, output rows and the
//! sink's order-independent checksum); the
//! `sluice-nexmark` binary runs the gate first and refuses to report throughput for a
//! query that fails it.

pub mod bench;
pub mod engine;
pub mod gate;
pub mod parquet;
pub mod queries;
pub mod reference;
pub mod rows;
pub mod sources;

/// What went wrong in a benchmark or gate run, with the query or statement it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl From<sluice_common::error::SluiceError> for Error {
    fn from(e: sluice_common::error::SluiceError) -> Error {
        Error(format!("{} (SQLSTATE {:?})", e.message, e.state))
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Error {
        Error(e.to_string())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Error {
        Error(e.to_string())
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for Error {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Error {
        Error(e.to_string())
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
