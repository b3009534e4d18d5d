//! The `blackhole` sink: accepts every change and writes it nowhere.
//!
//! It is what benchmarks write into, so that the cost of an external system does not
//! hide the engine's (Flink's and RisingWave's Nexmark runs do the same). What it
//! received is still visible: `SHOW SINKS` shows the rows and the checksum that every
//! sink's output counts (see `sluice_runtime::sink`), which is how a benchmark checks
//! that its query produced the right result.
//!
//! Options: `connector = 'blackhole'`, and `rows-per-second`: take at most this many rows
//! per second per subtask, a deliberately slow sink that shows backpressure reaching the
//! sources (unlimited when not given).

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use sluice_common::error::{Result, SluiceError};
use sluice_runtime::message::CheckpointBarrier;
use sluice_runtime::sink::SinkWriter;
use tokio::time::{Duration, Instant};

use crate::check_known_options;

const RATE: &str = "rows-per-second";

/// Checks a blackhole sink's options: `connector` and an optional `rows-per-second`.
pub fn validate_options(options: &BTreeMap<String, String>) -> Result<()> {
    check_known_options("blackhole", options, &[RATE])?;
    rate(options).map(|_| ())
}

/// The `rows-per-second` limit, if any: a positive number.
fn rate(options: &BTreeMap<String, String>) -> Result<Option<f64>> {
    let Some(text) = options.get(RATE) else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Some(rate)),
        _ => Err(SluiceError::invalid_parameter(format!(
            "blackhole option {RATE} must be a positive number of rows, not \"{text}\""
        ))),
    }
}

/// A sink subtask that drops what it is given, at most at its rate.
#[derive(Debug, Default)]
pub struct BlackholeWriter {
    /// Rows per second, and when the first row arrived with the rows taken since.
    rate: Option<f64>,
    taken: Option<(Instant, u64)>,
}

impl BlackholeWriter {
    pub fn new(options: &BTreeMap<String, String>) -> Result<BlackholeWriter> {
        validate_options(options)?;
        Ok(BlackholeWriter {
            rate: rate(options)?,
            taken: None,
        })
    }
}

#[async_trait]
impl SinkWriter for BlackholeWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        // The n-th row is taken no earlier than n / rate seconds after the first.
        let (start, taken) = self.taken.get_or_insert_with(|| (Instant::now(), 0));
        *taken += batch.num_rows() as u64;
        let due = *start + Duration::from_secs_f64(*taken as f64 / rate);
        tokio::time::sleep_until(due).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rate: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("connector".to_string(), "blackhole".to_string()),
            (RATE.to_string(), rate.to_string()),
        ])
    }

    #[test]
    fn the_rate_must_be_a_positive_number() {
        assert!(validate_options(&options("100")).is_ok());
        assert!(validate_options(&options("0.5")).is_ok());
        for bad in ["0", "-3", "fast", "NaN", "inf"] {
            let e = validate_options(&options(bad)).unwrap_err();
            assert!(
                e.message.contains("rows-per-second"),
                "{bad}: {}",
                e.message
            );
        }
    }

    #[tokio::test]
    async fn a_limited_writer_takes_rows_no_faster_than_its_rate() {
        let mut writer = BlackholeWriter::new(&options("20000")).unwrap();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false),
        ]));
        let rows = std::sync::Arc::new(arrow::array::Int64Array::from(vec![1; 500]));
        let batch = RecordBatch::try_new(schema, vec![rows]).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            writer.write(batch.clone()).await.unwrap();
        }
        // 2000 rows at 20000 rows/s: a timer never fires early, so at least 100 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // Without a limit nothing waits: the same rows take no timer at all.
        let mut unlimited = BlackholeWriter::new(&BTreeMap::new()).unwrap();
        assert!(unlimited.rate.is_none());
        unlimited.write(batch).await.unwrap();
        assert!(unlimited.taken.is_none());
    }
}
