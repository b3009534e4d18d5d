//! Metadata in PostgreSQL, and the election of the active coordinator of a pair
//! (`sluice coordinator --metadata postgres://...`).
//!
//! Every coordinator given the same database competes for one session-level advisory
//! lock. The one holding it is the active coordinator (Flink's leader JobManager); the
//! others are standbys, blocked in `pg_advisory_lock` until the lock is free. PostgreSQL
//! releases the lock when the holder's session ends, which it does as soon as the holder's
//! process dies (the kernel closes its socket) or, when the holder's machine or network
//! is gone, once the session's TCP keepalives fail (set to about 20 seconds here, on
//! both ends of the connection, with a TCP user timeout as long).
//!
//! **Fencing.** Every write of the active coordinator (catalog, table log) goes through
//! the very session that holds the lock. A coordinator that lost its session therefore
//! cannot write anything after a standby took over: its writes fail, and nothing it could
//! not write is acknowledged. It also checks its session every few seconds, and gives
//! every write and check the same time limit; when the session is gone or does not
//! answer in time, it reports leadership lost ([`PostgresMetadata::lost`]) and fails
//! every later write; the server then stops, to be restarted as a standby.
//!
//! The session lives on a thread of its own (with its own Tokio runtime), so that the
//! coordinator's synchronous callers ([`MetadataStore`]) wait for PostgreSQL without
//! blocking that runtime's progress on anything but themselves.
//!
//! Tables (created by the first active coordinator): `sluice_catalog` (one row: the
//! catalog as JSON) and `sluice_table_log` (one row per table change, keyed by table and
//! sequence number, the change in the table log's record format). One database holds one
//! cluster: the lock is per database.

use std::sync::mpsc as sync_mpsc;
use std::time::Duration;

use arrow::array::RecordBatch;
use sluice_common::SqlState;
use sluice_common::error::{Result, SluiceError};
use sluice_state::wal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{Client, NoTls};

use super::{CatalogState, MetadataStore, Restored};

/// The advisory lock the coordinators of one database compete for ("sluice" in ASCII).
const LEADER_LOCK: i64 = 0x736c_7569_6365;

/// How long to wait before connecting again to an unreachable database.
const RECONNECT: Duration = Duration::from_secs(1);

/// The schema, created if missing by the coordinator that takes the lock.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS sluice_catalog (
        id INT PRIMARY KEY CHECK (id = 1),
        catalog TEXT NOT NULL,
        saved_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS sluice_table_log (
        table_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        record BYTEA NOT NULL,
        PRIMARY KEY (table_id, seq)
    );";

/// Server-side keepalives of the lock's session: PostgreSQL ends the session of a
/// coordinator it cannot reach after about 5 + 5 × 3 seconds, which frees the lock.
const KEEPALIVES: &str = "
    SET tcp_keepalives_idle = 5;
    SET tcp_keepalives_interval = 5;
    SET tcp_keepalives_count = 3;";

/// How the active coordinator checks its session.
#[derive(Debug, Clone, Copy)]
pub struct SessionCheck {
    /// Time between checks.
    pub every: Duration,
    /// A check not answered within this time counts as a lost session.
    pub timeout: Duration,
}

/// The active coordinator's metadata store: a handle on the session that holds the lock.
pub struct PostgresMetadata {
    requests: mpsc::UnboundedSender<Request>,
    lost: watch::Receiver<Option<String>>,
}

/// A write for the session's thread, with where to send its outcome.
enum Request {
    ConfirmActive {
        reply: sync_mpsc::SyncSender<Result<()>>,
    },
    SaveCatalog {
        json: String,
        reply: sync_mpsc::SyncSender<Result<()>>,
    },
    Append {
        table_id: u64,
        seq: u64,
        payload: Vec<u8>,
        reply: sync_mpsc::SyncSender<Result<()>>,
    },
}

impl Request {
    fn reply(&self) -> &sync_mpsc::SyncSender<Result<()>> {
        match self {
            Request::ConfirmActive { reply }
            | Request::SaveCatalog { reply, .. }
            | Request::Append { reply, .. } => reply,
        }
    }
}

impl PostgresMetadata {
    /// Connects to the database at `url` and waits until this process holds the lock,
    /// calling `on_standby` once if another coordinator holds it; then reads the
    /// metadata. Fails at once on a malformed URL or an error the server reports (a
    /// refused login, a missing database); retries while the server is unreachable.
    pub async fn lead(
        url: &str,
        check: SessionCheck,
        on_standby: impl FnOnce() + Send + 'static,
    ) -> Result<(PostgresMetadata, Restored)> {
        let mut config = parse_url(url)?;
        config
            .connect_timeout(check.timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(20));
        let (requests, receiver) = mpsc::unbounded_channel();
        let (lost_tx, lost) = watch::channel(None);
        let (elected_tx, elected) = oneshot::channel();
        std::thread::Builder::new()
            .name("sluice-metadata".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = elected_tx.send(Err(SluiceError::internal(format!(
                            "cannot start the metadata session's runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(session(
                    config, check, on_standby, elected_tx, receiver, lost_tx,
                ));
            })
            .map_err(|e| SluiceError::io("cannot start the metadata session's thread", e))?;
        let restored = elected.await.map_err(|_| {
            SluiceError::internal("the metadata session stopped before it took the lock")
        })??;
        Ok((PostgresMetadata { requests, lost }, restored))
    }

    /// Resolves when this coordinator has lost its session, and with it the lock: another
    /// coordinator may be active now. Says why.
    pub async fn lost(&self) -> String {
        let mut lost = self.lost.clone();
        match lost.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the metadata session stopped".to_string(),
        }
    }

    /// Sends `request` to the session and waits for its outcome.
    fn call(
        &self,
        request: impl FnOnce(sync_mpsc::SyncSender<Result<()>>) -> Request,
    ) -> Result<()> {
        let (reply, outcome) = sync_mpsc::sync_channel(1);
        if self.requests.send(request(reply)).is_err() {
            return Err(lost_leadership("the metadata session stopped"));
        }
        outcome
            .recv()
            .unwrap_or_else(|_| Err(lost_leadership("the metadata session stopped")))
    }
}

impl MetadataStore for PostgresMetadata {
    fn save_catalog(&self, state: &CatalogState) -> Result<()> {
        let json = String::from_utf8(state.encode()?)
            .map_err(|e| SluiceError::internal(format!("the catalog is not UTF-8: {e}")))?;
        self.call(|reply| Request::SaveCatalog { json, reply })
    }

    fn append(&self, table_id: u64, seq: u64, batch: &RecordBatch) -> Result<()> {
        let payload = wal::encode_payload(table_id, seq, batch)?;
        self.call(|reply| Request::Append {
            table_id,
            seq,
            payload,
            reply,
        })
    }

    fn confirm_active(&self) -> Result<()> {
        self.call(|reply| Request::ConfirmActive { reply })
    }
}

/// Checks that `url` is a PostgreSQL URL and reads it.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    let wrong = |why: &dyn std::fmt::Display| {
        SluiceError::invalid_parameter(format!(
            "--metadata must be a PostgreSQL URL (postgres://user@host:port/database): {why}"
        ))
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(wrong(&format!("got {url:?}")));
    }
    let config: tokio_postgres::Config = url.parse().map_err(|e| wrong(&e))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(SluiceError::invalid_parameter(
            "--metadata with sslmode=require: TLS to the metadata database is not supported yet",
        ));
    }
    Ok(config)
}

/// The error of a write this coordinator can no longer make, and of the coordinator
/// itself once it noticed.
pub fn lost_leadership(why: &str) -> SluiceError {
    SluiceError::new(
        SqlState::ADMIN_SHUTDOWN,
        format!(
            "this coordinator is no longer the active one ({why}); another of its group may have taken over"
        ),
    )
}

/// The session's thread: takes the lock, reads the metadata, then serves writes and
/// checks the session until it ends.
async fn session(
    config: tokio_postgres::Config,
    check: SessionCheck,
    on_standby: impl FnOnce(),
    elected: oneshot::Sender<Result<Restored>>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    lost: watch::Sender<Option<String>>,
) {
    let (client, mut connection) = match take_lock(&config, on_standby).await {
        Ok(taken) => taken,
        Err(e) => {
            let _ = elected.send(Err(e));
            return;
        }
    };
    match read_metadata(&client).await {
        Ok(restored) => {
            if elected.send(Ok(restored)).is_err() {
                return;
            }
        }
        Err(e) => {
            let _ = elected.send(Err(e));
            return;
        }
    }
    tracing::info!("this coordinator holds the metadata lock: it is the active one");
    let mut ticks = tokio::time::interval(check.every);
    let too_slow = || {
        format!(
            "the metadata database did not answer within {:?}",
            check.timeout
        )
    };
    let why = loop {
        tokio::select! {
            // A broken connection is noticed before anything else is tried on it.
            biased;
            ended = &mut connection => {
                break match ended {
                    Ok(Err(e)) => format!("the connection to the metadata database broke: {e}"),
                    _ => "the connection to the metadata database ended".to_string(),
                };
            }
            request = requests.recv() => match request {
                // A write that cannot finish in time may have lost the session: it and
                // every later one fail (it may still have committed, as any database
                // write whose answer is lost).
                Some(request) => {
                    let reply = request.reply().clone();
                    if tokio::time::timeout(check.timeout, serve(&client, request)).await.is_err() {
                        let why = too_slow();
                        let _ = reply.send(Err(lost_leadership(&why)));
                        break why;
                    }
                }
                // Every handle is gone: the coordinator stopped; ending the session
                // frees the lock for a standby.
                None => return,
            },
            _ = ticks.tick() => {
                match tokio::time::timeout(check.timeout, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break format!("the metadata session failed: {e}"),
                    Err(_) => break too_slow(),
                }
            }
        }
    };
    tracing::error!(reason = %why, "this coordinator lost the metadata lock");
    let _ = lost.send(Some(why.clone()));
    drop(client);
    while let Some(request) = requests.recv().await {
        let _ = request.reply().send(Err(lost_leadership(&why)));
    }
}

type Connection = tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>;

/// Connects and blocks until the lock is this session's. Connection failures are
/// retried; errors the server reports are not (they need the user).
async fn take_lock(
    config: &tokio_postgres::Config,
    on_standby: impl FnOnce(),
) -> Result<(Client, Connection)> {
    let mut on_standby = Some(on_standby);
    loop {
        match try_take_lock(config, &mut on_standby).await {
            Ok(taken) => return Ok(taken),
            Err(e) if needs_the_user(&e) => {
                return Err(SluiceError::invalid_parameter(format!(
                    "the --metadata database refused this coordinator: {}",
                    explain(&e)
                )));
            }
            Err(e) => {
                tracing::warn!(error = %explain(&e), "cannot reach the --metadata database; retrying");
                tokio::time::sleep(RECONNECT).await;
            }
        }
    }
}

/// Whether connecting failed for a reason retrying cannot mend: a refused login or a
/// missing database. A database restarting, shutting down sessions or out of
/// connections is waited for, like one that cannot be reached.
fn needs_the_user(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("28") || code == "3D000" || code == "42501"
    })
}

async fn try_take_lock(
    config: &tokio_postgres::Config,
    on_standby: &mut Option<impl FnOnce()>,
) -> std::result::Result<(Client, Connection), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let connection = tokio::spawn(connection);
    client.batch_execute(KEEPALIVES).await?;
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .await?
        .get(0);
    if !free {
        if let Some(announce) = on_standby.take() {
            tracing::info!("another coordinator holds the metadata lock: standing by");
            announce();
        }
        client
            .execute("SELECT pg_advisory_lock($1)", &[&LEADER_LOCK])
            .await?;
    }
    Ok((client, connection))
}

/// Creates the tables if missing and reads the catalog and the table log.
async fn read_metadata(client: &Client) -> Result<Restored> {
    let failed = |what: &str, e: tokio_postgres::Error| {
        SluiceError::internal(format!(
            "cannot {what} in the --metadata database: {}",
            explain(&e)
        ))
    };
    client
        .batch_execute(SCHEMA)
        .await
        .map_err(|e| failed("create the metadata tables", e))?;
    let catalog = match client
        .query_opt("SELECT catalog FROM sluice_catalog WHERE id = 1", &[])
        .await
        .map_err(|e| failed("read the catalog", e))?
    {
        Some(row) => CatalogState::decode(
            row.get::<_, &str>(0).as_bytes(),
            "the catalog in the --metadata database (table sluice_catalog)",
            "restore the database from a backup",
        )?,
        None => CatalogState::default(),
    };
    let rows = client
        .query(
            "SELECT table_id, seq, record FROM sluice_table_log ORDER BY table_id, seq",
            &[],
        )
        .await
        .map_err(|e| failed("read the table log", e))?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let (table_id, seq): (i64, i64) = (row.get(0), row.get(1));
        let record = wal::decode_payload(row.get::<_, &[u8]>(2)).map_err(|e| {
            SluiceError::corrupted(format!(
                "change {seq} of table {table_id} in the --metadata database (table sluice_table_log) does not decode: {}",
                e.message
            ))
        })?;
        records.push(record);
    }
    Ok(Restored { catalog, records })
}

/// Makes one write through the lock's session.
async fn serve(client: &Client, request: Request) {
    match request {
        // The session is alive, so it still holds the lock (it never unlocks).
        Request::ConfirmActive { reply } => {
            let outcome = client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| lost_leadership(&format!("the metadata session failed: {e}")));
            let _ = reply.send(outcome);
        }
        Request::SaveCatalog { json, reply } => {
            let outcome = client
                .execute(
                    "INSERT INTO sluice_catalog (id, catalog) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET catalog = EXCLUDED.catalog, saved_at = now()",
                    &[&json],
                )
                .await
                .map(drop)
                .map_err(|e| write_failed("save the catalog", e));
            let _ = reply.send(outcome);
        }
        Request::Append {
            table_id,
            seq,
            payload,
            reply,
        } => {
            let outcome = match (i64::try_from(table_id), i64::try_from(seq)) {
                (Ok(table_id), Ok(seq)) => client
                    .execute(
                        "INSERT INTO sluice_table_log (table_id, seq, record) VALUES ($1, $2, $3)",
                        &[&table_id, &seq, &payload],
                    )
                    .await
                    .map(drop)
                    .map_err(|e| write_failed("append to the table log", e)),
                _ => Err(SluiceError::internal(format!(
                    "table {table_id} change {seq} is out of PostgreSQL's BIGINT range"
                ))),
            };
            let _ = reply.send(outcome);
        }
    }
}

fn write_failed(what: &str, e: tokio_postgres::Error) -> SluiceError {
    if e.is_closed() {
        return lost_leadership(&format!("the metadata session ended: {e}"));
    }
    SluiceError::new(
        SqlState::IO_ERROR,
        format!("cannot {what} in the --metadata database: {}", explain(&e)),
    )
}

/// What PostgreSQL said (its message and SQLSTATE), or the client's error.
fn explain(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} (PostgreSQL SQLSTATE {})",
            db.message(),
            db.code().code()
        ),
        None => e.to_string(),
    }
}
