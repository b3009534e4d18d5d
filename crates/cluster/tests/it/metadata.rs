//! Metadata in PostgreSQL (`--metadata postgres://`): the election of one active
//! coordinator through the advisory lock, what a successor reads back, and fencing of a
//! coordinator whose session ended. Needs the machine's PostgreSQL
//! (`SLUICE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use sluice_cluster::metadata::postgres::{PostgresMetadata, SessionCheck};
use sluice_cluster::metadata::{CatalogState, Definition, MetadataStore, Restored};
use sluice_common::SqlState;
use tokio_postgres::{Client, NoTls};

fn server_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to PostgreSQL (SLUICE_TEST_POSTGRES)");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A fresh database named `name`; returns its URL.
async fn fresh_database(name: &str) -> String {
    let admin = connect(&server_url()).await;
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&statement)
            .await
            .expect("create a database");
    }
    let server = server_url();
    format!("{}/{name}", server.rsplit_once('/').expect("a database").0)
}

const CHECK: SessionCheck = SessionCheck {
    every: Duration::from_millis(100),
    timeout: Duration::from_secs(5),
};

fn batch(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).expect("batch")
}

fn catalog(next_id: u64) -> CatalogState {
    CatalogState {
        next_id,
        definitions: vec![Definition::without_job(
            1,
            "t".into(),
            "CREATE TABLE t (v BIGINT)",
        )],
        ..CatalogState::default()
    }
}

fn values(restored: &Restored) -> Vec<(u64, u64, Vec<i64>)> {
    restored
        .records
        .iter()
        .map(|r| {
            let column = r.batch.column(0).as_any().downcast_ref::<Int64Array>();
            (r.table_id, r.seq, column.expect("int64").values().to_vec())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_coordinator_leads_its_successor_reads_everything_and_a_lost_session_writes_nothing() {
    let name = format!("sluice_metadata_{}", std::process::id());
    let url = fresh_database(&name).await;

    // An empty database: the first coordinator leads at once, with nothing to restore.
    let first_stood_by = Arc::new(AtomicBool::new(false));
    let flag = first_stood_by.clone();
    let (first, restored) =
        PostgresMetadata::lead(&url, CHECK, move || flag.store(true, Ordering::SeqCst))
            .await
            .expect("lead");
    assert!(!first_stood_by.load(Ordering::SeqCst));
    assert_eq!(restored.catalog, CatalogState::default());
    assert!(restored.records.is_empty());
    first.save_catalog(&catalog(2)).expect("save");
    first.save_catalog(&catalog(3)).expect("save again");
    first.append(1, 1, &batch(&[1, 2])).expect("append");
    first.append(1, 2, &batch(&[3])).expect("append");
    first.append(7, 1, &batch(&[9])).expect("append");
    // A sequence number written twice is refused, not duplicated.
    assert!(first.append(1, 2, &batch(&[3])).is_err());

    // A second one stands by while the first holds the lock.
    let (stood_by_tx, stood_by) = tokio::sync::oneshot::channel();
    let second = tokio::spawn({
        let url = url.clone();
        async move {
            PostgresMetadata::lead(&url, CHECK, move || {
                let _ = stood_by_tx.send(());
            })
            .await
        }
    });
    stood_by.await.expect("the second stands by");
    assert!(!second.is_finished());

    // The first stops: the second leads, with everything the first acknowledged.
    drop(first);
    let (second, restored) = second.await.expect("task").expect("lead");
    assert_eq!(restored.catalog, catalog(3));
    assert_eq!(
        values(&restored),
        [(1, 1, vec![1, 2]), (1, 2, vec![3]), (7, 1, vec![9])]
    );

    second
        .confirm_active()
        .expect("the active one may commit checkpoints");

    // Its session is ended behind its back: it learns it lost the lock, and writes fail
    // (and so does the check before committing a checkpoint).
    let admin = connect(&server_url()).await;
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
             JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
            &[&name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(ended, 1);
    let why = tokio::time::timeout(Duration::from_secs(30), second.lost())
        .await
        .expect("the loss is noticed");
    assert!(why.contains("metadata"), "{why}");
    let error = second
        .append(1, 3, &batch(&[4]))
        .expect_err("no write after the loss");
    assert_eq!(error.state, SqlState::ADMIN_SHUTDOWN, "{}", error.message);
    let error = second
        .save_catalog(&catalog(4))
        .expect_err("no catalog either");
    assert_eq!(error.state, SqlState::ADMIN_SHUTDOWN, "{}", error.message);
    let error = second.confirm_active().expect_err("no checkpoint either");
    assert_eq!(error.state, SqlState::ADMIN_SHUTDOWN, "{}", error.message);

    // A third reads what was acknowledged, nothing more.
    let (_third, restored) = PostgresMetadata::lead(&url, CHECK, || {})
        .await
        .expect("lead");
    assert_eq!(restored.catalog, catalog(3));
    assert_eq!(restored.records.len(), 3);
    drop(_third);
    drop(second);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop the database");
}

#[tokio::test]
async fn a_database_that_refuses_the_login_is_an_error_not_a_wait() {
    let server = server_url();
    let url = format!(
        "{}/sluice_no_such_database_{}",
        server.rsplit_once('/').expect("a database").0,
        std::process::id()
    );
    let error = match PostgresMetadata::lead(&url, CHECK, || {}).await {
        Ok(_) => panic!("a missing database was accepted"),
        Err(e) => e,
    };
    assert_eq!(error.state, SqlState::INVALID_PARAMETER_VALUE);
    assert!(error.message.contains("--metadata"), "{}", error.message);
    let error = match PostgresMetadata::lead("mysql://x", CHECK, || {}).await {
        Ok(_) => panic!("a malformed URL was accepted"),
        Err(e) => e,
    };
    assert!(
        error.message.contains("PostgreSQL URL"),
        "{}",
        error.message
    );
}
