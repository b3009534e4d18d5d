//! Subtasks: one input (a source reader or an input gate), a chain of operators, and an
//! output (an exchange or a sink), run as one tokio task.

use std::collections::VecDeque;

use sluice_common::error::Result;
use tokio::sync::mpsc;

use crate::exchange::{Collector, InputGate};
use crate::message::{BarrierKind, CheckpointBarrier, Message};
use crate::operators::{Operator, run_chain_from};
use crate::source::{SourceEvent, SourceReader};

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

/// One parallel instance of a chain of operators.
pub struct Subtask {
    pub name: String,
    pub input: TaskInput,
    pub chain: Vec<Box<dyn Operator>>,
    pub output: Box<dyn Collector>,
}

impl Subtask {
    /// Runs until end of stream (or, for a source, until its barrier channel closes,
    /// which is how a job is stopped).
    pub async fn run(self) -> Result<()> {
        let Subtask {
            name,
            input,
            mut chain,
            mut output,
        } = self;
        tracing::debug!(subtask = %name, "started");
        let mut emit = async |input: usize, message: Message| -> Result<()> {
            for out in run_chain_from(&mut chain, input, message)? {
                output.collect(out).await?;
            }
            Ok(())
        };
        match input {
            TaskInput::Gate(mut gate) => {
                while let Some(message) = gate.next().await? {
                    emit(gate.last_input(), message).await?;
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
                        pending.pop_front();
                        emit(0, Message::Barrier(barrier)).await?;
                    }
                    if ended {
                        emit(0, Message::EndOfStream).await?;
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
                            SourceEvent::Batch(batch) => emit(0, Message::Batch(batch)).await?,
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
