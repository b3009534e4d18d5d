//! `sluice-nexmark`: runs Nexmark queries on an embedded Sluice engine and prints their
//! throughput, after checking each one's result against a DataFusion batch query.
//!
//! Each measured run is a child process of this binary (`--run-one`), so every run has
//! a fresh engine, a fresh heap and its own peak RSS.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use serde::Serialize;
use sluice_nexmark_bench::bench::{Measurement, run_once};
use sluice_nexmark_bench::parquet::ensure_parquet;
use sluice_nexmark_bench::queries::{self, Query};
use sluice_nexmark_bench::reference::Reference;
use sluice_nexmark_bench::{Error, Result, gate};

/// Nexmark q0-q22 on Sluice: correctness gate, then throughput.
#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-nexmark")]
struct Args {
    /// Comma-separated queries (`q0,q1,q2`) or `all`.
    #[arg(long, default_value = "all")]
    queries: String,
    /// Events of the whole Nexmark stream (`nexmark.event.num`) per measured run.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// `streaming_parallelism` of the views (default: the engine's, one per core).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Measured runs per query; the table shows their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Events of the correctness gate run before measuring each query.
    #[arg(long, default_value_t = 20_000)]
    gate_events: u64,
    /// `end-to-end`: the sources generate the events in process. `engine`: the events
    /// are written to Parquet once (under --parquet-dir) and the sources read them back.
    #[arg(long, value_enum, default_value_t = Mode::EndToEnd)]
    mode: Mode,
    /// Where the engine-only mode keeps its Parquet files (one directory per event count,
    /// reused by later runs).
    #[arg(long, default_value = "target/nexmark-parquet")]
    parquet_dir: PathBuf,
    /// Keep operator state in RocksDB under a temporary data directory, each operator
    /// subtask holding at most this many MiB of it in memory (`sluice serve`'s default
    /// is 64), instead of all of it in memory.
    #[arg(long)]
    operator_cache_mb: Option<usize>,
    /// Internal: measure one run of this query and print it as JSON.
    #[arg(long, hide = true)]
    run_one: Option<String>,
}

/// Where the measured runs' events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    EndToEnd,
    Engine,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = match &args.run_one {
        Some(name) => runtime.block_on(run_child(&args, name)),
        None => runtime.block_on(run_all(&args)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sluice-nexmark: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_child(args: &Args, name: &str) -> Result<bool> {
    let query = queries::select(name)?[0];
    let parquet = (args.mode == Mode::Engine).then_some(args.parquet_dir.as_path());
    let measurement = run_once(
        query,
        args.events,
        args.parallelism,
        parquet,
        args.operator_cache_mb,
    )
    .await?;
    println!(
        "{}",
        serde_json::to_string(&measurement).expect("a measurement serializes")
    );
    Ok(true)
}

/// The machine the numbers were measured on.
#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    memory_gib: f64,
    cpu: String,
}

impl Machine {
    fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let mem_kib: f64 = field(&meminfo, "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: mem_kib / (1024.0 * 1024.0),
            cpu: field(&cpuinfo, "model name"),
        }
    }
}

/// The medians of a query's runs and the throughput derived from them.
#[derive(Debug, Serialize)]
struct Summary {
    wall_s: f64,
    cpu_s: f64,
    events_per_s: f64,
    /// Events per CPU second: throughput per core actually used.
    events_per_cpu_s: f64,
    /// Events per second divided by the machine's cores.
    events_per_s_per_core: f64,
    peak_rss_mb: f64,
    rows: u64,
    checksum: String,
}

#[derive(Debug, Serialize)]
struct QueryResult {
    query: &'static str,
    /// `ok`, `unsupported`, `gate_failed` or `error`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gate_rows: Option<usize>,
    runs: Vec<Measurement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    median: Option<Summary>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    events: u64,
    mode: Mode,
    gate_events: u64,
    parallelism: Option<usize>,
    runs: usize,
    profile: &'static str,
    queries: Vec<QueryResult>,
}

async fn run_all(args: &Args) -> Result<bool> {
    if args.runs == 0 {
        return Err(Error::new("--runs must be at least 1"));
    }
    let selected = queries::select(&args.queries)?;
    let machine = Machine::probe();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if profile == "debug" {
        eprintln!("warning: a debug build; its numbers are meaningless, use --release");
    }
    let mut args = args.clone();
    if args.mode == Mode::Engine {
        // Children get the directory of this event count.
        args.parquet_dir = ensure_parquet(&args.parquet_dir, args.events).await?;
    }
    let args = &args;
    let mut reference = None;
    let mut results = Vec::new();
    for query in selected {
        let result = run_query(args, query, &mut reference, machine.cores).await;
        if let Some(reason) = &result.reason {
            eprintln!("{}: {}: {reason}", query.name, result.status);
        }
        results.push(result);
    }
    let report = Report {
        machine,
        events: args.events,
        mode: args.mode,
        gate_events: args.gate_events,
        parallelism: args.parallelism,
        runs: args.runs,
        profile,
        queries: results,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, json + "\n")
            .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(report
        .queries
        .iter()
        .all(|q| matches!(q.status, "ok" | "unsupported")))
}

async fn run_query(
    args: &Args,
    query: &'static Query,
    reference: &mut Option<Reference>,
    cores: usize,
) -> QueryResult {
    let mut result = QueryResult {
        query: query.name,
        status: "unsupported",
        reason: query.unsupported().map(str::to_string),
        gate_rows: None,
        runs: Vec::new(),
        median: None,
    };
    if result.reason.is_some() {
        return result;
    }
    match gate_query(args, query, reference).await {
        Ok(report) if report.passed() => result.gate_rows = Some(report.view_rows),
        Ok(report) => {
            result.status = "gate_failed";
            result.reason = report.mismatch;
            return result;
        }
        Err(e) => {
            result.status = "error";
            result.reason = Some(format!("at the gate: {e}"));
            return result;
        }
    }
    for run in 1..=args.runs {
        eprintln!(
            "{}: run {run}/{} over {} events",
            query.name, args.runs, args.events
        );
        match measure_in_child(args, query) {
            Ok(m) => result.runs.push(m),
            Err(e) => {
                result.status = "error";
                result.reason = Some(e.to_string());
                return result;
            }
        }
    }
    let first = &result.runs[0];
    if let Some(other) = result
        .runs
        .iter()
        .find(|m| (m.rows, m.checksum) != (first.rows, first.checksum))
    {
        result.status = "error";
        result.reason = Some(format!(
            "runs disagree: {} rows (checksum {:016x}) vs {} rows (checksum {:016x})",
            first.rows, first.checksum, other.rows, other.checksum
        ));
        return result;
    }
    result.status = "ok";
    result.median = Some(summarize(args.events, &result.runs, cores));
    result
}

async fn gate_query(
    args: &Args,
    query: &Query,
    reference: &mut Option<Reference>,
) -> Result<gate::GateReport> {
    if reference.is_none() {
        eprintln!(
            "gate: generating {} events for the reference",
            args.gate_events
        );
        *reference = Some(Reference::generate(args.gate_events).await?);
    }
    let reference = reference.as_ref().expect("generated above");
    let report = gate::check(query, reference, args.parallelism).await?;
    eprintln!(
        "{}: gate {} ({} rows over {} events)",
        query.name,
        if report.passed() { "passed" } else { "FAILED" },
        report.view_rows,
        args.gate_events
    );
    Ok(report)
}

fn measure_in_child(args: &Args, query: &Query) -> Result<Measurement> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(format!("cannot find this executable: {e}")))?;
    let mut command = Command::new(exe);
    command
        .args(["--run-one", query.name])
        .args(["--events", &args.events.to_string()]);
    if args.mode == Mode::Engine {
        command.args(["--mode", "engine", "--parquet-dir"]);
        command.arg(&args.parquet_dir);
    }
    if let Some(p) = args.parallelism {
        command.args(["--parallelism", &p.to_string()]);
    }
    if let Some(mb) = args.operator_cache_mb {
        command.args(["--operator-cache-mb", &mb.to_string()]);
    }
    let output = command
        .output()
        .map_err(|e| Error::new(format!("cannot start a measured run: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::new(format!(
            "the measured run of {} failed ({}): {}",
            query.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        Error::new(format!(
            "the measured run of {} printed `{line}`, not a measurement: {e}",
            query.name
        ))
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn summarize(events: u64, runs: &[Measurement], cores: usize) -> Summary {
    let wall_s = median(runs.iter().map(|m| m.wall_s).collect());
    let cpu_s = median(runs.iter().map(|m| m.cpu_s).collect());
    let peak_rss = median(runs.iter().map(|m| m.peak_rss_bytes as f64).collect());
    let events_per_s = events as f64 / wall_s;
    Summary {
        wall_s,
        cpu_s,
        events_per_s,
        events_per_cpu_s: events as f64 / cpu_s,
        events_per_s_per_core: events_per_s / cores as f64,
        peak_rss_mb: peak_rss / (1024.0 * 1024.0),
        rows: runs[0].rows,
        checksum: format!("{:016x}", runs[0].checksum),
    }
}

fn print_report(report: &Report) {
    let m = &report.machine;
    println!(
        "Nexmark on Sluice ({} build, {} mode): {} events, {} run(s) per query (median), parallelism {}",
        report.profile,
        match report.mode {
            Mode::EndToEnd => "end-to-end",
            Mode::Engine => "engine-only",
        },
        report.events,
        report.runs,
        report
            .parallelism
            .map_or("default".to_string(), |p| p.to_string()),
    );
    println!(
        "machine: {} cores, {:.1} GiB, {}",
        m.cores, m.memory_gib, m.cpu
    );
    println!();
    println!(
        "| query | events | wall s | CPU s | events/s | events/s per CPU-core | events/s per core | peak RSS MB | rows | checksum |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for q in &report.queries {
        if let Some(s) = &q.median {
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                q.query,
                report.events,
                s.wall_s,
                s.cpu_s,
                s.events_per_s,
                s.events_per_cpu_s,
                s.events_per_s_per_core,
                s.peak_rss_mb,
                s.rows,
                s.checksum
            );
        }
    }
    let others: Vec<_> = report
        .queries
        .iter()
        .filter(|q| q.median.is_none())
        .collect();
    if !others.is_empty() {
        println!();
        for q in others {
            let reason = q.reason.as_deref().unwrap_or("");
            println!("{} {}: {}", q.query, q.status, reason);
        }
    }
}
