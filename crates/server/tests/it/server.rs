//! Starting and stopping a `sluice serve` process for one test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to print its ready line.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A running `sluice serve` on free ports with its own data directory; killed and
/// cleaned up on drop.
pub struct TestServer {
    child: Child,
    data_dir: PathBuf,
    /// Leave the data directory behind on drop (a crash test restarts on it).
    keep_data: bool,
    /// The pgwire address from the ready line.
    pub pg_addr: SocketAddr,
    /// The REST address from the ready line.
    pub rest_addr: SocketAddr,
}

impl TestServer {
    /// Starts a server and waits (up to a deadline) for its ready line.
    pub fn start() -> TestServer {
        TestServer::start_with(fresh_data_dir(), &[])
    }

    /// Starts a server on `data_dir` (which may hold an earlier server's data) with
    /// extra flags.
    pub fn start_with(data_dir: PathBuf, flags: &[&str]) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "serve",
                "--pg-listen",
                "127.0.0.1:0",
                "--rest-listen",
                "127.0.0.1:0",
            ])
            .args(["--flight-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stdout after the ready line so the server never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // The test no longer listens; keep draining.
                }
            }
        });
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let mut server = TestServer {
            child,
            data_dir,
            keep_data: false,
            pg_addr: "0.0.0.0:0".parse().expect("addr"),
            rest_addr: "0.0.0.0:0".parse().expect("addr"),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!("sluice serve printed no ready line: {e}"),
            };
            if let Some(rest) = line.strip_prefix("sluice ready ") {
                for part in rest.split_whitespace() {
                    let (key, addr) = part.split_once('=').expect("key=addr");
                    let addr: SocketAddr = addr.parse().expect("socket address");
                    match key {
                        "pg" => server.pg_addr = addr,
                        "rest" => server.rest_addr = addr,
                        _ => {}
                    }
                }
                return server;
            }
        }
    }

    /// A tokio-postgres connection string for this server.
    pub fn conn_str(&self) -> String {
        format!(
            "host={} port={} user=sluice dbname=sluice",
            self.pg_addr.ip(),
            self.pg_addr.port()
        )
    }

    /// A connected tokio-postgres client; the connection task runs in the background.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect to sluice");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl TestServer {
    /// Kills the server with SIGKILL (no shutdown of any kind) and returns its data
    /// directory, left as the crash left it.
    pub fn kill(mut self) -> PathBuf {
        self.keep_data = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }
}

/// A data directory no server has used.
pub fn fresh_data_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "sluice-it-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::SeqCst)
    ))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
