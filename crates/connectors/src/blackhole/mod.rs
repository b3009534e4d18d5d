//! The `blackhole` sink: accepts every change and writes it nowhere.
//!
//! It is what benchmarks write into, so that the cost of an external system does not
//! hide the engine's (Flink's and RisingWave's Nexmark runs do the same). What it
//! received is still visible: `SHOW SINKS` shows the rows and the checksum that every
//! sink's output counts (see `sluice_runtime::sink`), which is how a benchmark checks
//! that its query produced the right result.
//!
//! Options: only `connector = 'blackhole'`.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use sluice_common::error::Result;
use sluice_runtime::message::CheckpointBarrier;
use sluice_runtime::sink::SinkWriter;

use crate::check_known_options;

/// Checks a blackhole sink's options: it takes none but `connector`.
pub fn validate_options(options: &BTreeMap<String, String>) -> Result<()> {
    check_known_options("blackhole", options, &[])
}

/// A sink subtask that drops what it is given.
#[derive(Debug, Default)]
pub struct BlackholeWriter;

#[async_trait]
impl SinkWriter for BlackholeWriter {
    async fn write(&mut self, _batch: RecordBatch) -> Result<()> {
        Ok(())
    }

    async fn barrier(&mut self, _barrier: CheckpointBarrier) -> Result<()> {
        Ok(())
    }

    async fn commit(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
