//! What a subtask has done, counted as it runs and read by the coordinator (REST
//! `GET /jobs/{id}`) from another thread.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters of one subtask. Relaxed atomics: readers want recent values, not a
/// consistent cut.
#[derive(Debug)]
pub struct SubtaskMetrics {
    /// Rows that entered the subtask's chain.
    pub rows_in: AtomicU64,
    /// Rows the chain put out (to its exchange or its view or sink).
    pub rows_out: AtomicU64,
    /// The last watermark the subtask put out, ms since the Unix epoch (`i64::MIN`:
    /// none yet).
    watermark: AtomicI64,
    /// Nanoseconds the subtask waited for room in a full output channel: how much
    /// downstream slowed it (Flink's backpressured time).
    pub backpressured_ns: AtomicU64,
}

impl Default for SubtaskMetrics {
    fn default() -> Self {
        SubtaskMetrics {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            backpressured_ns: AtomicU64::new(0),
        }
    }
}

impl SubtaskMetrics {
    pub fn add_rows_in(&self, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn add_rows_out(&self, rows: usize) {
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn set_watermark(&self, ms: i64) {
        self.watermark.store(ms, Ordering::Relaxed);
    }

    /// The last watermark put out, if any.
    pub fn watermark(&self) -> Option<i64> {
        Some(self.watermark.load(Ordering::Relaxed)).filter(|&w| w != i64::MIN)
    }

    pub fn add_backpressure(&self, waited: std::time::Duration) {
        self.backpressured_ns
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    }
}
