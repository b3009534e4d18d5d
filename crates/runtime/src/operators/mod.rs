//! Operators: the steps of a chain. One file per operator family.
//!
//! An operator is synchronous and batch-at-a-time: it turns one input message into zero
//! or more output messages. Asynchrony (channels, backpressure) lives in the task that
//! runs a chain, so operators stay easy to test and to chain without channels.

pub mod aggregate;
pub mod calc;
pub mod materialize;
pub mod retractable;
pub mod watermark;

use arrow::array::RecordBatch;
use sluice_common::error::Result;

use crate::message::{CheckpointBarrier, Message, Watermark};

/// A step of a chain. Default methods forward watermarks and barriers unchanged.
pub trait Operator: Send {
    /// A short name for logs and EXPLAIN.
    fn name(&self) -> &'static str;

    /// Processes rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()>;

    fn process_watermark(&mut self, watermark: Watermark, out: &mut Vec<Message>) -> Result<()> {
        out.push(Message::Watermark(watermark));
        Ok(())
    }

    /// Called when barrier `barrier` is aligned; state snapshots hook in here.
    fn process_barrier(
        &mut self,
        barrier: CheckpointBarrier,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        out.push(Message::Barrier(barrier));
        Ok(())
    }

    /// Called once at end of input, before `EndOfStream` is forwarded.
    fn finish(&mut self, _out: &mut Vec<Message>) -> Result<()> {
        Ok(())
    }
}

/// Runs `message` through `chain`, returning what comes out of its last operator.
pub fn run_chain(chain: &mut [Box<dyn Operator>], message: Message) -> Result<Vec<Message>> {
    let mut current = vec![message];
    for op in chain.iter_mut() {
        let mut next = Vec::with_capacity(current.len());
        for m in current {
            match m {
                Message::Batch(b) => {
                    if b.num_rows() > 0 {
                        op.process_batch(b, &mut next)?
                    }
                }
                Message::Watermark(w) => op.process_watermark(w, &mut next)?,
                Message::Barrier(b) => op.process_barrier(b, &mut next)?,
                Message::EndOfStream => {
                    op.finish(&mut next)?;
                    next.push(Message::EndOfStream);
                }
            }
        }
        current = next;
    }
    Ok(current)
}
