//! Starting and stopping `sluice serve`, `sluice coordinator` and `sluice worker`
//! processes for one test.

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
    /// The Arrow Flight SQL address from the ready line.
    pub flight_addr: SocketAddr,
    /// The control plane's address (`sluice coordinator` only).
    pub rpc_addr: Option<SocketAddr>,
}

impl TestServer {
    /// Starts a server and waits (up to a deadline) for its ready line.
    pub fn start() -> TestServer {
        TestServer::start_with(fresh_data_dir(), &[])
    }

    /// Starts a server on `data_dir` (which may hold an earlier server's data) with
    /// extra flags.
    pub fn start_with(data_dir: PathBuf, flags: &[&str]) -> TestServer {
        TestServer::start_command("serve", data_dir, flags)
    }

    /// Starts `sluice coordinator` on `data_dir` with extra flags (its control plane on
    /// a free port unless they give `--rpc-listen`).
    pub fn start_coordinator(data_dir: PathBuf, flags: &[&str]) -> TestServer {
        let mut all = vec!["--rpc-listen", "127.0.0.1:0"];
        if flags.contains(&"--rpc-listen") {
            all.clear();
        }
        all.extend_from_slice(flags);
        TestServer::start_command("coordinator", data_dir, &all)
    }

    fn start_command(subcommand: &str, data_dir: PathBuf, flags: &[&str]) -> TestServer {
        let mut starting = Starting::spawn(subcommand, data_dir, flags);
        let fields = starting.wait_for("sluice ready ");
        starting.into_server(fields)
    }

    /// Starts `sluice coordinator` as the standby of a highly available group (its
    /// flags give `--metadata`): waits until it says it stands by.
    pub fn start_standby(data_dir: PathBuf, flags: &[&str]) -> Standby {
        let mut starting = Starting::spawn("coordinator", data_dir, flags);
        starting.wait_for("sluice standby:");
        Standby(starting)
    }

    /// Waits (up to a deadline) for the server to exit on its own, and returns whether it
    /// exited successfully.
    pub fn wait_for_exit(mut self) -> bool {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for sluice") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "sluice did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A coordinator standing by; see [`TestServer::start_standby`].
pub struct Standby(Starting);

impl Standby {
    /// Waits (up to a deadline) until it is the active coordinator and ready.
    pub fn wait_until_active(mut self) -> TestServer {
        let fields = self.0.wait_for("sluice ready ");
        self.0.into_server(fields)
    }
}

/// A server process whose output lines are read as they come.
struct Starting {
    child: Option<Child>,
    data_dir: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Starting {
    fn spawn(subcommand: &str, data_dir: PathBuf, flags: &[&str]) -> Starting {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args([
                subcommand,
                "--pg-listen",
                "127.0.0.1:0",
                "--rest-listen",
                "127.0.0.1:0",
            ])
            .args(["--flight-listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(flags);
        let (child, lines) = spawn_reading(command);
        Starting {
            child: Some(child),
            data_dir,
            lines,
        }
    }

    /// Waits for the line starting with `prefix`; returns its `key=value` fields.
    fn wait_for(&mut self, prefix: &str) -> Vec<(String, String)> {
        let child = self.child.as_mut().expect("the process");
        wait_for_line(child, &self.lines, prefix)
    }

    fn into_server(mut self, fields: Vec<(String, String)>) -> TestServer {
        let mut server = TestServer {
            child: self.child.take().expect("the process"),
            data_dir: self.data_dir.clone(),
            keep_data: false,
            pg_addr: "0.0.0.0:0".parse().expect("addr"),
            rest_addr: "0.0.0.0:0".parse().expect("addr"),
            flight_addr: "0.0.0.0:0".parse().expect("addr"),
            rpc_addr: None,
        };
        for (key, addr) in fields {
            let addr: SocketAddr = addr.parse().expect("socket address");
            match key.as_str() {
                "pg" => server.pg_addr = addr,
                "rest" => server.rest_addr = addr,
                "flight" => server.flight_addr = addr,
                "rpc" => server.rpc_addr = Some(addr),
                _ => {}
            }
        }
        server
    }
}

impl TestServer {
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

    /// Kills the server with SIGKILL (no shutdown of any kind) and returns its data
    /// directory, left as the crash left it.
    /// Its data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn kill(mut self) -> PathBuf {
        self.keep_data = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Spawns `command` with stdout piped and waits (up to a deadline) for the line
/// starting with `ready`; returns the process and that line's `key=value` fields.
fn spawn_until_ready(command: Command, ready: &str) -> (Child, Vec<(String, String)>) {
    let (mut child, lines) = spawn_reading(command);
    let fields = wait_for_line(&mut child, &lines, ready);
    (child, fields)
}

/// Spawns `command` with stdout piped into the returned channel, a line at a time.
fn spawn_reading(mut command: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = command
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the ready line so the process never blocks on it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // The test no longer listens; keep draining.
            }
        }
    });
    (child, rx)
}

/// Waits (up to a deadline) for the line starting with `prefix` among `lines`; returns
/// its `key=value` fields. Kills `child` and fails when none comes.
fn wait_for_line(
    child: &mut Child,
    lines: &mpsc::Receiver<String>,
    prefix: &str,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + STARTUP_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluice printed no \"{prefix}\" line: {e}");
            }
        };
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest
                .split_whitespace()
                .filter_map(|part| part.split_once('='))
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect();
        }
    }
}

/// A running `sluice worker` registered with a coordinator; killed on drop (and its data
/// directory, if it has one, removed).
pub struct TestWorker {
    child: Child,
    /// The id the coordinator registered it under.
    pub id: u64,
    /// The address it registered.
    pub address: String,
    data_dir: Option<PathBuf>,
}

impl TestWorker {
    /// Starts a worker with `slots` slots and waits until `coordinator` registered it.
    pub fn start(coordinator: SocketAddr, slots: u32) -> TestWorker {
        TestWorker::start_with(&[coordinator], slots)
    }

    /// Starts a worker given the control planes of a group of `coordinators`, and waits
    /// until one registered it.
    pub fn start_with(coordinators: &[SocketAddr], slots: u32) -> TestWorker {
        TestWorker::launch(coordinators, slots, None)
    }

    /// Starts a worker whose operators keep no keyed state in memory: every group, join
    /// bucket, partition and session goes to RocksDB under a data directory of its own
    /// after each batch (`--operator-cache-mb 0`).
    pub fn start_spilling(coordinator: SocketAddr, slots: u32) -> TestWorker {
        TestWorker::launch(&[coordinator], slots, Some(fresh_data_dir()))
    }

    fn launch(coordinators: &[SocketAddr], slots: u32, data_dir: Option<PathBuf>) -> TestWorker {
        let urls: Vec<String> = coordinators.iter().map(|c| format!("http://{c}")).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg("worker")
            .args(["--coordinator", &urls.join(",")])
            .args(["--slots", &slots.to_string(), "--rpc-listen", "127.0.0.1:0"]);
        if let Some(dir) = &data_dir {
            command
                .arg("--data-dir")
                .arg(dir)
                .args(["--operator-cache-mb", "0"]);
        }
        let (child, fields) = spawn_until_ready(command, "sluice worker ready ");
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .expect("ready line field")
        };
        TestWorker {
            child,
            id: field("id").parse().expect("worker id"),
            address: field("rpc"),
            data_dir,
        }
    }

    /// Kills the worker with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
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
