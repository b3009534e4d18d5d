//! The coordinator (Flink's JobManager) and the worker (TaskManager). `sluice serve` runs
//! both in one process; the [`Coordinator`] is the front door every protocol (pgwire,
//! REST, Flight SQL) calls, and [`job`] deploys stream graphs as running subtasks.

mod checkpoints;
mod coordinator;
pub mod dataplane;
pub mod job;
pub mod membership;
pub mod metadata;
mod providers;
pub mod remote;
mod results;
pub mod rpc;

pub use coordinator::{
    CommandTag, Coordinator, Described, JobCheckpoint, JobDetail, JobInfo, RelationInfo, Session,
    SinkInfo, StatementResult,
};
pub use sluice_sql::{ParsedStatement, Statement};
