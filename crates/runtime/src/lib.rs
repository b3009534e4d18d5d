//! The dataflow runtime: the [`Message`] contract between operators, the operators
//! themselves, and the tasks that run chains of them over bounded channels.
//!
//! Nothing here knows SQL: operators are built from DataFusion physical expressions and
//! aggregate functions by the layer above (`cluster`), from a `StreamGraph` the `sql`
//! crate planned.

pub mod exchange;
pub mod keygroup;
pub mod message;
pub mod metrics;
pub mod operators;
pub mod sink;
pub mod source;
pub mod task;

#[cfg(test)]
mod test_support;

pub use exchange::{Collector, ExchangeOutput, InputGate, Partitioning};
pub use message::{BarrierKind, CheckpointBarrier, Message, RowKind, Watermark};
pub use sink::{SinkOutput, SinkWriter};
pub use source::{SourceEvent, SourceReader};
pub use task::{Subtask, TaskInput};
