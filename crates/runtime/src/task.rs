//! Subtasks: one input (a source reader or an input gate), a chain of operators, and an
//! output (an exchange or a sink), run as one tokio task.

use std::collections::VecDeque;

use futures::FutureExt;
use sluice_common::error::Result;
use tokio::sync::mpsc;

use crate::exchange::{Collector, InputGate};
use crate::message::{BarrierKind, CheckpointBarrier, Message};
use crate::metrics::SubtaskMetrics;
use crate::operators::{Operator, StateEntry, run_chain_from};
use crate::source::{SourceEvent, SourceReader};
use sluice_state::spill::DbCheckpoint;

/// Capacity of a source's barrier injection channel.
pub const BARRIER_INJECTION_CAPACITY: usize = 64;

/// Where a subtask's messages come from.
pub enum TaskInput {
    /// A source split, with the channel the coordinator injects barriers through.
    Source {
        reader: Box<dyn SourceReader>,
        barriers: mpsc::Receiver<CheckpointBarrier>,
    },
    /// Upstream subtasks.
    Gate(InputGate),
}

/// What a subtask reports after a checkpoint barrier passed it: the state of every
/// operator of its chain (and of its sink), and its source's position.
#[derive(Debug)]
pub struct SubtaskSnapshot {
    pub barrier: CheckpointBarrier,
    /// The subtask's stable id within its job (`chain-subtask`, e.g. `1-0`).
    pub subtask: String,
    /// The job (view id) it belongs to.
    pub job: u64,
    /// One entry list per operator of the chain, in chain order.
    pub operators: Vec<Vec<StateEntry>>,
    /// RocksDB checkpoints of operators' spill stores, by position in the chain: their
    /// entries belong to those operators' state as much as `operators` does.
    pub databases: Vec<(usize, DbCheckpoint)>,
    /// The view partition the subtask's sink writes, and its rows.
    pub sink: Option<(usize, Vec<StateEntry>)>,
    /// The source reader's position, for a source subtask.
    pub position: Option<u64>,
    /// How long the barrier waited to be aligned across the subtask's inputs (ms).
    pub alignment_ms: u64,
}

/// Where a subtask sends its snapshots; the checkpoint coordinator listens.
#[derive(Debug, Clone)]
pub struct SnapshotReporter {
    pub job: u64,
    pub subtask: String,
    pub sender: mpsc::UnboundedSender<SubtaskSnapshot>,
}

/// One parallel instance of a chain of operators.
pub struct Subtask {
    pub name: String,
    pub input: TaskInput,
    pub chain: Vec<Box<dyn Operator>>,
    pub output: Box<dyn Collector>,
    /// Set when the job takes checkpoints.
    pub reporter: Option<SnapshotReporter>,
    /// Counted as it runs (shared with its output's exchange, which counts
    /// backpressure).
    pub metrics: std::sync::Arc<SubtaskMetrics>,
}

/// A subtask's chain and output, which every message goes through.
struct Pipeline {
    chain: Vec<Box<dyn Operator>>,
    output: Box<dyn Collector>,
    reporter: Option<SnapshotReporter>,
    metrics: std::sync::Arc<SubtaskMetrics>,
    /// The alignment time of the barrier being pushed (zero for sources).
    alignment: std::time::Duration,
}

impl Pipeline {
    /// Runs `message` (from logical input `input`) through the chain into the output.
    /// After a checkpoint barrier, snapshots the chain: nothing else has run since the
    /// barrier passed, so each operator's state is its state at the barrier.
    async fn push(&mut self, input: usize, message: Message, position: Option<u64>) -> Result<()> {
        let checkpoint = match &message {
            Message::Barrier(b) if b.kind != BarrierKind::Flush => Some(*b),
            _ => None,
        };
        if let Message::Batch(batch) = &message {
            self.metrics.add_rows_in(batch.num_rows());
        }
        for out in run_chain_from(&mut self.chain, input, message)? {
            match &out {
                Message::Batch(batch) => self.metrics.add_rows_out(batch.num_rows()),
                Message::Watermark(w) => self.metrics.set_watermark(w.0),
                _ => {}
            }
            self.output.collect(out).await?;
        }
        if let (Some(barrier), Some(reporter)) = (checkpoint, &self.reporter) {
            let operators = self
                .chain
                .iter_mut()
                .map(|op| op.snapshot_state())
                .collect::<Result<Vec<_>>>()?;
            let mut databases = Vec::new();
            for (k, op) in self.chain.iter_mut().enumerate() {
                if let Some(checkpoint) = op.snapshot_database()? {
                    databases.push((k, checkpoint));
                }
            }
            let snapshot = SubtaskSnapshot {
                barrier,
                subtask: reporter.subtask.clone(),
                job: reporter.job,
                operators,
                databases,
                sink: self.output.snapshot_state()?,
                position,
                alignment_ms: self.alignment.as_millis() as u64,
            };
            // The coordinator may have stopped listening (shutting down): nothing to do.
            let _ = reporter.sender.send(snapshot);
        }
        Ok(())
    }
}

impl Subtask {
    /// Runs until end of stream (or, for a source, until its barrier channel closes,
    /// which is how a job is stopped).
    pub async fn run(self) -> Result<()> {
        let Subtask {
            name,
            input,
            chain,
            output,
            reporter,
            metrics,
        } = self;
        tracing::debug!(subtask = %name, "started");
        let mut pipeline = Pipeline {
            chain,
            output,
            reporter,
            metrics,
            alignment: std::time::Duration::ZERO,
        };
        match input {
            TaskInput::Gate(mut gate) => {
                while let Some(message) = gate.next().await? {
                    if matches!(message, Message::Barrier(_)) {
                        pipeline.alignment = gate.last_alignment();
                    }
                    pipeline.push(gate.last_input(), message, None).await?;
                }
            }
            TaskInput::Source {
                mut reader,
                mut barriers,
            } => {
                // Barriers wait here until the reader has reached their target position.
                let mut pending: VecDeque<(CheckpointBarrier, u64)> = VecDeque::new();
                let mut ended = false;
                loop {
                    while let Some(&(barrier, target)) = pending.front() {
                        if !ended && reader.position() < target {
                            break;
                        }
                        if barrier.kind == BarrierKind::Flush && !ended {
                            // A bounded source may be at its end: if so, let the end of
                            // stream carry the FLUSH, so what operators emit at the end
                            // of input (windows and sessions closing) is in the view when
                            // FLUSH returns. Cancel-safe: a pending read loses nothing.
                            match reader.next_event().now_or_never().transpose()? {
                                Some(SourceEvent::Batch(batch)) => {
                                    pipeline.push(0, Message::Batch(batch), None).await?
                                }
                                Some(SourceEvent::End) => ended = true,
                                Some(SourceEvent::Progress) | None => {}
                            }
                        }
                        pending.pop_front();
                        if ended && barrier.kind == BarrierKind::Flush {
                            continue;
                        }
                        let position = Some(reader.position());
                        pipeline
                            .push(0, Message::Barrier(barrier), position)
                            .await?;
                    }
                    if ended {
                        pipeline.push(0, Message::EndOfStream, None).await?;
                        break;
                    }
                    tokio::select! {
                        biased;
                        injected = barriers.recv() => match injected {
                            Some(barrier) => {
                                let target = match barrier.kind {
                                    BarrierKind::Flush => reader.flush_target(),
                                    BarrierKind::Checkpoint | BarrierKind::Savepoint => reader.position(),
                                };
                                pending.push_back((barrier, target));
                            }
                            None => break,
                        },
                        event = reader.next_event() => match event? {
                            SourceEvent::Batch(batch) => pipeline.push(0, Message::Batch(batch), None).await?,
                            SourceEvent::Progress => {}
                            SourceEvent::End => ended = true,
                        },
                    }
                }
            }
        }
        tracing::debug!(subtask = %name, "finished");
        Ok(())
    }
}
