//! Arrow Flight SQL on `--flight-listen`, driven by arrow-flight's Flight SQL client as
//! an Arrow consumer would: DDL and DML, a view read after FLUSH, a prepared statement,
//! the catalog's metadata, and errors that carry their SQLSTATE and leave the server
//! serving.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch};
use arrow::util::display::array_value_to_string;
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::durability::rows;
use crate::server::TestServer;

async fn client(server: &TestServer) -> FlightSqlServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", server.flight_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to Flight SQL");
    FlightSqlServiceClient::new(channel)
}

/// Every batch of every endpoint of `info`.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("a ticket");
        let stream = client.do_get(ticket).await.expect("DoGet");
        batches.extend(stream.try_collect::<Vec<_>>().await.expect("batches"));
    }
    batches
}

/// `sql`'s rows over Flight SQL, as text (NULL as `None`), like [`rows`] over pgwire.
async fn flight_rows(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Vec<Vec<Option<String>>> {
    let info = client.execute(sql.into(), None).await.expect(sql);
    text(&fetch(client, info).await)
}

fn text(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        (!c.is_null(row)).then(|| array_value_to_string(c, row).expect("display"))
                    })
                    .collect(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_runs_statements_reads_views_and_lists_the_catalog() {
    let server = TestServer::start();
    let mut flight = client(&server).await;
    let pg = server.connect().await;

    // DDL and DML through DoPut (CommandStatementUpdate).
    flight
        .execute_update("CREATE TABLE t (k INT, v BIGINT)".into(), None)
        .await
        .expect("CREATE TABLE");
    let inserted = flight
        .execute_update(
            "INSERT INTO t SELECT x % 3, x FROM generate_series(1, 100) AS s(x)".into(),
            None,
        )
        .await
        .expect("INSERT");
    assert_eq!(inserted, 100);
    // DDL through a query command, as ADBC's execute sends it: it runs at GetFlightInfo,
    // whose answer has nothing to fetch.
    let created = flight
        .execute(
            "CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n, sum(v) AS total FROM t GROUP BY k"
                .into(),
            None,
        )
        .await
        .expect("CREATE MATERIALIZED VIEW");
    assert!(created.endpoint.is_empty(), "{created:?}");
    flight
        .execute_update("FLUSH".into(), None)
        .await
        .expect("FLUSH");

    // The view over Flight equals the batch query over pgwire; the schema announced by
    // GetFlightInfo is the batches'.
    let query = "SELECT k, n, total FROM totals ORDER BY k";
    let info = flight.execute(query.into(), None).await.expect("query");
    let announced = info.clone().try_decode_schema().expect("schema");
    let batches = fetch(&mut flight, info).await;
    assert!(batches.iter().all(|b| *b.schema() == announced));
    let names: Vec<&str> = announced
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["k", "n", "total"]);
    let expected = rows(
        &pg,
        "SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY k",
    )
    .await;
    assert_eq!(expected.len(), 3);
    assert_eq!(text(&batches), expected);

    // A prepared statement: its dataset schema, then its rows; changes between two
    // executions are seen.
    let mut prepared = flight
        .prepare("SELECT count(*) AS n FROM t".into(), None)
        .await
        .expect("prepare");
    assert_eq!(
        prepared.dataset_schema().expect("schema").field(0).name(),
        "n"
    );
    let info = prepared.execute().await.expect("execute");
    assert_eq!(
        text(&fetch(&mut flight, info).await),
        [[Some("100".to_string())]]
    );
    flight
        .execute_update("DELETE FROM t WHERE k = 0".into(), None)
        .await
        .expect("DELETE");
    let info = prepared.execute().await.expect("execute again");
    let left = rows(&pg, "SELECT count(*) FROM t").await;
    assert_eq!(text(&fetch(&mut flight, info).await), left);
    prepared.close().await.expect("close");

    // Parameters: an update runs once per row bound to it; a query takes one row, its
    // values cast to the types the statement gives its parameters.
    let mut insert = flight
        .prepare("INSERT INTO t VALUES ($1, $2)".into(), None)
        .await
        .expect("prepare INSERT");
    let params = RecordBatch::try_from_iter([
        ("$1", Arc::new(Int32Array::from(vec![7, 7, 8])) as ArrayRef),
        (
            "$2",
            Arc::new(Int64Array::from(vec![1000, 2000, 3000])) as ArrayRef,
        ),
    ])
    .expect("parameters");
    insert.set_parameters(params).expect("bind");
    assert_eq!(insert.execute_update().await.expect("INSERT"), 3);
    let mut sum = flight
        .prepare("SELECT sum(v) AS s FROM t WHERE k = $1".into(), None)
        .await
        .expect("prepare SELECT");
    assert_eq!(sum.parameter_schema().expect("schema").fields().len(), 1);
    let key = RecordBatch::try_from_iter([("$1", Arc::new(Int64Array::from(vec![7])) as ArrayRef)])
        .expect("parameter");
    sum.set_parameters(key).expect("bind");
    let info = sum.execute().await.expect("execute");
    assert_eq!(
        text(&fetch(&mut flight, info).await),
        rows(&pg, "SELECT sum(v) FROM t WHERE k = 7").await
    );

    // The catalog: tables and views with their kinds, and the server's name.
    let info = flight
        .get_tables(CommandGetTables {
            include_schema: false,
            ..CommandGetTables::default()
        })
        .await
        .expect("GetTables");
    let tables: Vec<(String, String)> = text(&fetch(&mut flight, info).await)
        .into_iter()
        .map(|row| (row[2].clone().expect("name"), row[3].clone().expect("type")))
        .collect();
    assert!(tables.contains(&("t".into(), "TABLE".into())), "{tables:?}");
    assert!(
        tables.contains(&("totals".into(), "MATERIALIZED VIEW".into())),
        "{tables:?}"
    );
    let info = flight
        .get_sql_info(vec![SqlInfo::FlightSqlServerName])
        .await
        .expect("GetSqlInfo");
    assert!(!fetch(&mut flight, info).await.is_empty());

    // Errors name what is wrong, with the SQLSTATE, and the server keeps serving.
    let missing = flight
        .execute("SELECT * FROM missing".into(), None)
        .await
        .expect_err("an unknown table");
    assert!(missing.to_string().contains("42P01"), "{missing}");
    let syntax = flight
        .execute_update("CREATE TABEL x (a INT)".into(), None)
        .await
        .expect_err("a syntax error");
    assert!(syntax.to_string().contains("42601"), "{syntax}");
    let two = flight
        .execute("SELECT 1; SELECT 2".into(), None)
        .await
        .expect_err("two statements");
    assert!(two.to_string().contains("exactly one statement"), "{two}");
    assert_eq!(
        flight_rows(&mut flight, "SELECT count(*) FROM totals")
            .await
            .len(),
        1
    );
}

/// ADBC's Flight SQL driver from Python, as a data scientist would use it. Needs
/// `python3` with `adbc-driver-flightsql` and `pyarrow` (`.ci/run` installs them).
#[test]
fn an_adbc_session_runs_statements_and_reads_a_view_as_arrow() {
    let server = TestServer::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/adbc_flightsql_session.py"
    );
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("grpc://{}", server.flight_addr))
        .output()
        .expect("python3 is installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the ADBC session failed (pip install adbc-driver-flightsql pyarrow):\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "view equal",
            "columns sensor,n,total",
            "tables per_sensor,readings",
            "error 42P01",
            "after 42",
            "parameters equal",
        ]
    );
}
