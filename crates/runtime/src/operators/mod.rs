//! Operators: the steps of a chain. One file per operator family.
//!
//! An operator is synchronous and batch-at-a-time: it turns one input message into zero
//! or more output messages. Asynchrony (channels, backpressure) lives in the task that
//! runs a chain, so operators stay easy to test and to chain without channels.

pub mod aggregate;
pub mod calc;
pub mod change_log;
pub mod encoding;
pub mod join;
mod keyed_spill;
pub mod materialize;
pub mod over;
pub mod retractable;
pub mod session;
pub mod temporal;
pub mod temporal_join;
pub mod topn;
pub mod ttl;
pub mod union;
pub mod unnest;
pub mod watermark;

use arrow::array::RecordBatch;
use sluice_common::error::Result;

use sluice_state::SpillStore;
use sluice_state::spill::{RestoredDb, WRITE_CHUNK};

use crate::message::{CheckpointBarrier, Message, Watermark};

/// One entry of an operator's keyed state in a checkpoint: key group, key and value.
/// The key group is what lets a snapshot be restored at another parallelism.
pub type StateEntry = (u16, Vec<u8>, Vec<u8>);

pub use sluice_state::snapshot::OPERATOR_WIDE;

/// What an operator subtask restores from a checkpoint: the entries of its entries
/// files, and the RocksDB checkpoints of spill stores (see
/// [`Operator::snapshot_database`]) whose entries in `key_groups` are its own.
#[derive(Debug, Default)]
pub struct RestoredState<'a> {
    pub entries: Vec<StateEntry>,
    pub databases: Vec<&'a RestoredDb>,
    /// The key groups the subtask owns; `None`: all of the databases' entries (the
    /// subtask restores the one store it had, at the same parallelism).
    pub key_groups: Option<Vec<u16>>,
}

impl RestoredState<'_> {
    /// State of entries alone.
    pub fn of_entries(entries: Vec<StateEntry>) -> Self {
        RestoredState {
            entries,
            ..RestoredState::default()
        }
    }

    /// Every entry, the databases' read into memory.
    pub fn into_entries(mut self) -> Vec<StateEntry> {
        for db in &self.databases {
            self.entries
                .extend(db.table().scan(self.key_groups.as_deref()));
        }
        self.entries
    }

    /// Copies the databases' entries into `store` a chunk at a time, without holding
    /// them all in memory.
    pub fn copy_databases_into(&self, store: &mut SpillStore) {
        for db in &self.databases {
            db.table()
                .scan_chunks(self.key_groups.as_deref(), WRITE_CHUNK, &mut |chunk| {
                    store.put(chunk)
                });
        }
    }
}

/// A step of a chain. Default methods forward watermarks and barriers unchanged.
pub trait Operator: Send {
    /// A short name for logs and EXPLAIN.
    fn name(&self) -> &'static str;

    /// Processes rows.
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()>;

    /// Processes rows of logical input `input`. Only the first operator of a chain can
    /// have several inputs (a join); the others see input 0.
    fn process_batch_from(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        debug_assert_eq!(input, 0, "{} has one input", self.name());
        self.process_batch(batch, out)
    }

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

    /// The operator's state, taken right after a checkpoint barrier passed it: it holds
    /// the effect of every row before the barrier and of none after. Stateless
    /// operators have none.
    fn snapshot_state(&mut self) -> Result<Vec<StateEntry>> {
        Ok(Vec::new())
    }

    /// A RocksDB checkpoint of state the operator keeps in a spill store on disk, taken
    /// right after [`Self::snapshot_state`]: its entries are part of the snapshot (and
    /// restored through [`Self::restore_state`] with the others). Uploaded incrementally.
    fn snapshot_database(&mut self) -> Result<Option<sluice_state::spill::DbCheckpoint>> {
        Ok(None)
    }

    /// Restores what [`Self::snapshot_state`] and [`Self::snapshot_database`] took,
    /// before the operator sees any message. Operators that spill copy the databases
    /// into their own store; the others read them into memory.
    fn restore(&mut self, state: RestoredState<'_>) -> Result<()> {
        self.restore_state(state.into_entries())
    }

    /// Restores what [`Self::snapshot_state`] took (with the entries of any database
    /// [`Self::snapshot_database`] took), before the operator sees any message.
    fn restore_state(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        if entries.is_empty() {
            Ok(())
        } else {
            Err(sluice_common::error::SluiceError::internal(format!(
                "{} keeps no state, but a checkpoint holds state for it",
                self.name()
            )))
        }
    }
}

/// [`Operator::restore`] for an operator that may spill into the store `store` returns:
/// the entries through [`Operator::restore_state`] (which puts keyed ones in the store),
/// then the restored databases copied into the store, never all in memory. Without a
/// store, everything through `restore_state`. True when databases were copied into the
/// store, which `restore_state` did not see (so indexes over the store must be rebuilt).
pub(crate) fn restore_spilling<O: Operator>(
    operator: &mut O,
    mut state: RestoredState<'_>,
    store: fn(&mut O) -> Option<&mut SpillStore>,
) -> Result<bool> {
    if store(operator).is_none() {
        operator.restore_state(state.into_entries())?;
        return Ok(false);
    }
    operator.restore_state(std::mem::take(&mut state.entries))?;
    state.copy_databases_into(store(operator).expect("checked above"));
    Ok(!state.databases.is_empty())
}

/// Runs `message` through `chain`, returning what comes out of its last operator.
pub fn run_chain(chain: &mut [Box<dyn Operator>], message: Message) -> Result<Vec<Message>> {
    run_chain_from(chain, 0, message)
}

/// Like [`run_chain`], for a message from logical input `input` of the first operator.
pub fn run_chain_from(
    chain: &mut [Box<dyn Operator>],
    input: usize,
    message: Message,
) -> Result<Vec<Message>> {
    let mut current = vec![message];
    for (position, op) in chain.iter_mut().enumerate() {
        let mut next = Vec::with_capacity(current.len());
        for m in current {
            match m {
                Message::Batch(b) => {
                    if b.num_rows() > 0 {
                        let from = if position == 0 { input } else { 0 };
                        op.process_batch_from(from, b, &mut next)?
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
