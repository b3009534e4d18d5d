//! Runs every `sql-tests/*.slt` file against a fresh server with sqllogictest.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::server::{TestServer, TestWorker, fresh_data_dir};

/// An error as the client saw it: message and SQLSTATE.
#[derive(Debug)]
pub struct SqlError {
    message: String,
    sqlstate: Option<String>,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "{} (SQLSTATE {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlError {
                message: db.message().to_string(),
                sqlstate: Some(db.code().code().to_string()),
            },
            None => SqlError {
                message: e.to_string(),
                sqlstate: None,
            },
        }
    }
}

/// sqllogictest's view of a Sluice connection (simple query protocol, text values).
pub struct Sluice {
    client: Client,
}

#[async_trait]
impl AsyncDB for Sluice {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let messages = self.client.simple_query(sql).await?;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(c) => columns = Some(c.len()),
                SimpleQueryMessage::Row(row) => rows.push(
                    (0..row.len())
                        .map(|i| match row.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.to_string(),
                        })
                        .collect(),
                ),
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sluice"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }

    async fn run_command(command: std::process::Command) -> std::io::Result<std::process::Output> {
        tokio::process::Command::from(command).output().await
    }

    fn error_sql_state(err: &SqlError) -> Option<String> {
        err.sqlstate.clone()
    }
}

/// The marker of a volatile value (a time) in an expected row.
const IGNORE: &str = "<slt:ignore>";

/// sqllogictest's comparison of normalized rows, except that in an expected row
/// `<slt:ignore>` matches any text. Unlike sqllogictest's own handling of the marker
/// (which matches the fragments between markers anywhere in the whole output), rows
/// must match one for one, so a missing or extra row still fails.
fn validate(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    if !expected.iter().any(|line| line.contains(IGNORE)) {
        return sqllogictest::default_validator(normalizer, actual, expected);
    }
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(row, line)| {
            let row: Vec<String> = row.iter().map(normalizer).collect();
            row_matches(&row.join(" "), &normalizer(line))
        })
}

/// Whether `row` is `pattern` with each `<slt:ignore>` replaced by some text.
fn row_matches(row: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split(IGNORE).collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let Some(mut rest) = row.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    parts.len() == 1 && rest.is_empty() || parts.len() > 1 && rest.ends_with(last)
}

#[test]
fn ignore_markers_match_within_their_row_only() {
    assert!(row_matches("a 1 Insert 123", "a 1 Insert <slt:ignore>"));
    assert!(row_matches("a 1 x 2", "a <slt:ignore> x <slt:ignore>"));
    assert!(!row_matches("b 1 Insert 123", "a 1 Insert <slt:ignore>"));
    assert!(!row_matches(
        "a 1 Insert 123",
        "<slt:ignore> Delete <slt:ignore>"
    ));
    let normalizer: sqllogictest::Normalizer = sqllogictest::default_normalizer;
    let rows = |r: &[&str]| -> Vec<Vec<String>> { r.iter().map(|v| vec![v.to_string()]).collect() };
    let expected = vec!["a <slt:ignore>".to_string()];
    assert!(validate(normalizer, &rows(&["a 1"]), &expected));
    assert!(
        !validate(normalizer, &rows(&["a 1", "a 2"]), &expected),
        "an extra row fails"
    );
}

/// How long one slt file may take.
const FILE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Every slt file, or with `SLUICE_SLT=part` only those whose name contains `part`.
fn slt_files() -> Vec<PathBuf> {
    let only = std::env::var("SLUICE_SLT").unwrap_or_default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql-tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| p.to_string_lossy().contains(&only))
        .collect();
    files.sort();
    files
}

/// Where an slt file runs.
#[derive(Clone, Copy)]
enum Deployment {
    /// `sluice serve`: everything in one process.
    Embedded,
    /// `sluice serve --operator-cache-mb 0`: every GROUP BY group, join bucket, Top-N
    /// partition and key's sessions goes to RocksDB after each batch and is read back
    /// for the next row of its key.
    EmbeddedSpilling,
    /// `sluice coordinator` with this many `sluice worker` processes of [`WORKER_SLOTS`]
    /// slots, which run the jobs' stateful subtasks, spilling all their keyed state to
    /// RocksDB (`--data-dir`, `--operator-cache-mb 0`).
    Workers(usize),
}

/// Slots per worker: two workers have the four slots of the widest job of the suite
/// (`SET streaming_parallelism = 4`), which would wait for slots with fewer.
const WORKER_SLOTS: u32 = 2;

async fn run_file(path: &Path, deployment: Deployment) -> Result<(), String> {
    // Failed jobs restart after 50 ms, 100 ms, 200 ms rather than seconds.
    let flags = ["--restart-backoff", "0.05"];
    let (server, _workers) = match deployment {
        Deployment::Embedded => (TestServer::start_with(fresh_data_dir(), &flags), Vec::new()),
        Deployment::EmbeddedSpilling => {
            let flags = [&flags[..], &["--operator-cache-mb", "0"]].concat();
            (TestServer::start_with(fresh_data_dir(), &flags), Vec::new())
        }
        Deployment::Workers(n) => {
            let server = TestServer::start_coordinator(fresh_data_dir(), &flags);
            let rpc = server.rpc_addr.expect("the coordinator's rpc address");
            let workers: Vec<TestWorker> = (0..n)
                .map(|_| TestWorker::start_spilling(rpc, WORKER_SLOTS))
                .collect();
            (server, workers)
        }
    };
    let conn_str = server.conn_str();
    let mut runner = sqllogictest::Runner::new(move || {
        let conn_str = conn_str.clone();
        async move {
            let (client, connection) =
                tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Sluice { client })
        }
    });
    runner.with_validator(validate);
    // A statement that never returns (a lost FLUSH, a deadlock) fails its file instead of
    // stalling the whole suite.
    let result = match tokio::time::timeout(FILE_DEADLINE, runner.run_file_async(path)).await {
        Ok(result) => result.map_err(|e| format!("{}: {}", path.display(), e.display(false))),
        Err(_) => Err(format!(
            "{}: did not finish within {FILE_DEADLINE:?} (a statement hangs)",
            path.display()
        )),
    };
    drop(server);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slt_file_passes_against_a_fresh_server() {
    run_every_file(Deployment::Embedded).await;
}

/// The same files with no memory for aggregate groups, join rows, Top-N partitions and
/// sessions: every result must come out the same when each is spilled to RocksDB and
/// read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slt_file_passes_with_operator_state_spilled_to_rocksdb() {
    run_every_file(Deployment::EmbeddedSpilling).await;
}

/// The same files with the stateful operators on two worker processes: every operator
/// and expression the suite plans crosses the data plane and the graph codec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slt_file_passes_against_a_coordinator_with_two_workers() {
    run_every_file(Deployment::Workers(2)).await;
}

async fn run_every_file(deployment: Deployment) {
    let files = slt_files();
    assert!(!files.is_empty(), "no sql-tests/*.slt files found");
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = run_file(file, deployment).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} slt files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
