//! One measured run of one query: a fresh engine, the sources bounded to N events, the
//! query into a blackhole sink, and FLUSH, which returns once the sources are read to
//! their end and the sink has received every change.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_common::config::ServeConfig;

use crate::engine::Engine;
use crate::queries::Query;
use crate::{Error, Result};

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    /// From `CREATE SINK` until `FLUSH` returned.
    pub wall_s: f64,
    /// User + system CPU time of the whole process over the same interval.
    pub cpu_s: f64,
    /// The process's peak resident set size when `FLUSH` returned.
    pub peak_rss_bytes: u64,
    /// Rows the sink's changelog leaves (insertions minus retractions).
    pub rows: u64,
    /// The sink's checksum of those rows (`sluice_runtime::sink::rows_checksum`).
    pub checksum: u64,
}

/// Runs `query` once over `events` Nexmark events. Measure one run per process: peak
/// RSS is the process's lifetime peak, so a second run in the same process would report
/// the first's peak if that was higher.
/// With `parquet`, the sources read the events from the Parquet files in that directory
/// (engine-only mode) instead of generating them. With `operator_cache_mb`, operator state
/// beyond that many MiB per subtask spills to RocksDB (see [`spilling_config`]).
pub async fn run_once(
    query: &Query,
    events: u64,
    parallelism: Option<usize>,
    parquet: Option<&Path>,
    operator_cache_mb: Option<usize>,
) -> Result<Measurement> {
    let Some(mb) = operator_cache_mb else {
        return measure(
            query,
            events,
            parallelism,
            parquet,
            ServeConfig::ephemeral(),
        )
        .await;
    };
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let data_dir = std::env::temp_dir().join(format!(
        "sluice-nexmark-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let config = spilling_config(&data_dir, mb);
    let measured = measure(query, events, parallelism, parquet, config).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    measured
}

/// `sluice serve`'s durable defaults in `data_dir` (RocksDB state, operators spilling
/// beyond `operator_cache_mb` MiB per subtask), without periodic checkpoints: the
/// run measures the spilling, not the uploads.
pub fn spilling_config(data_dir: &Path, operator_cache_mb: usize) -> ServeConfig {
    ServeConfig {
        data_dir: data_dir.to_path_buf(),
        operator_cache_mb,
        checkpoint_interval: 0.0,
        ..ServeConfig::default()
    }
}

async fn measure(
    query: &Query,
    events: u64,
    parallelism: Option<usize>,
    parquet: Option<&Path>,
    config: ServeConfig,
) -> Result<Measurement> {
    let mut engine = Engine::start_with(config).await?;
    if let Some(p) = parallelism {
        engine.set_parallelism(p).await?;
    }
    match parquet {
        Some(dir) => engine.create_parquet_sources(dir).await?,
        None => engine.create_sources(events).await?,
    }
    let create = query.create_sink_sql()?;

    let (cpu_before, _) = resource_usage()?;
    let start = Instant::now();
    engine.run(&create).await?;
    engine.flush().await?;
    let wall = start.elapsed();
    let (cpu_after, peak_rss_bytes) = resource_usage()?;

    let sink = engine.sink(&query.sink_name())?;
    Ok(Measurement {
        wall_s: wall.as_secs_f64(),
        cpu_s: (cpu_after - cpu_before).as_secs_f64(),
        peak_rss_bytes,
        rows: sink.rows().max(0) as u64,
        checksum: sink.checksum,
    })
}

/// The process's CPU time so far (user + system) and peak RSS in bytes, from
/// `getrusage(RUSAGE_SELF)`.
pub fn resource_usage() -> Result<(Duration, u64)> {
    // SAFETY: `rusage` is plain old data; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed `rusage` for the call's duration.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Err(Error::new(format!(
            "getrusage failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    // Linux reports ru_maxrss in kilobytes.
    let peak_rss = usage.ru_maxrss as u64 * 1024;
    Ok((time(usage.ru_utime) + time(usage.ru_stime), peak_rss))
}
