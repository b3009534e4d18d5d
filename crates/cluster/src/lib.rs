//! The coordinator (Flink's JobManager) and the worker (TaskManager). `sluice serve` runs
//! both in one process; the [`Coordinator`] is the front door every protocol (pgwire,
//! REST, Flight SQL) calls.

mod coordinator;

pub use coordinator::{
    CommandTag, Coordinator, Described, JobInfo, RelationInfo, Session, StatementResult,
};
pub use sluice_sql::{ParsedStatement, Statement};
