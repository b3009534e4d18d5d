//! The extended query protocol through tokio-postgres: parameters, types, formats.

use crate::server::TestServer;

#[tokio::test]
async fn bound_parameters_are_typed_and_results_decode_in_binary() {
    let server = TestServer::start();
    let client = server.connect().await;

    let row = client
        .query_one("SELECT $1::INT + 1 AS n", &[&41i32])
        .await
        .expect("query with an int parameter");
    // DataFusion types `int + bigint literal` as bigint (PostgreSQL would say int).
    assert_eq!(row.get::<_, i64>("n"), 42);

    let row = client
        .query_one(
            "SELECT $1::BIGINT * 2 AS big, $2::TEXT || '!' AS s, $3::DOUBLE PRECISION / 2 AS f, NOT $4::BOOLEAN AS b",
            &[&21i64, &"hi", &3.0f64, &false],
        )
        .await
        .expect("query with mixed parameters");
    assert_eq!(row.get::<_, i64>("big"), 42);
    assert_eq!(row.get::<_, String>("s"), "hi!");
    assert_eq!(row.get::<_, f64>("f"), 1.5);
    assert!(row.get::<_, bool>("b"));

    let rows = client
        .query(
            "SELECT column1 AS x FROM (VALUES (1), (2), (3)) AS t WHERE column1 > $1 ORDER BY column1",
            &[&1i64],
        )
        .await
        .expect("parameter in a filter");
    let xs: Vec<i64> = rows.iter().map(|r| r.get("x")).collect();
    assert_eq!(xs, vec![2, 3]);

    let row = client
        .query_one("SELECT NULL::INT AS n, 'x' AS s", &[])
        .await
        .expect("null result");
    assert_eq!(row.get::<_, Option<i32>>("n"), None);
}

#[tokio::test]
async fn prepared_statements_run_many_times_on_one_connection() {
    let server = TestServer::start();
    let client = server.connect().await;
    let stmt = client
        .prepare("SELECT $1::INT * 10 AS v")
        .await
        .expect("prepare");
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::INT4]);
    for i in 0..5i32 {
        let row = client.query_one(&stmt, &[&i]).await.expect("execute");
        assert_eq!(row.get::<_, i64>(0), i64::from(i) * 10);
    }
}

#[tokio::test]
async fn dates_timestamps_and_numerics_decode_in_binary() {
    let server = TestServer::start();
    let client = server.connect().await;
    let row = client
        .query_one(
            "SELECT CAST('2024-02-03' AS DATE) AS d, CAST('2024-02-03 04:05:06.5' AS TIMESTAMP) AS ts",
            &[],
        )
        .await
        .expect("temporal query");
    // tokio-postgres without chrono features decodes dates/timestamps only as raw
    // types; compare through their text form instead.
    let text = client
        .simple_query("SELECT CAST('2024-02-03' AS DATE) AS d, CAST('2024-02-03 04:05:06.5' AS TIMESTAMP) AS ts, CAST(12.5 AS DECIMAL(10,2)) AS n")
        .await
        .expect("simple temporal query");
    let tokio_postgres::SimpleQueryMessage::Row(r) = &text[1] else {
        panic!("expected a row, got {:?}", text.len())
    };
    assert_eq!(r.get("d"), Some("2024-02-03"));
    assert_eq!(r.get("ts"), Some("2024-02-03 04:05:06.5"));
    assert_eq!(r.get("n"), Some("12.50"));
    assert_eq!(row.columns()[0].type_(), &tokio_postgres::types::Type::DATE);
    assert_eq!(
        row.columns()[1].type_(),
        &tokio_postgres::types::Type::TIMESTAMP
    );
}

#[tokio::test]
async fn set_persists_within_a_connection() {
    let server = TestServer::start();
    let client = server.connect().await;
    client
        .batch_execute("SET application_name = 'it_test'")
        .await
        .expect("SET");
    let rows = client
        .simple_query("SHOW application_name")
        .await
        .expect("SHOW");
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("it_test"));
    let other = server.connect().await;
    let rows = other
        .simple_query("SHOW application_name")
        .await
        .expect("SHOW");
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        value.as_deref(),
        Some(""),
        "another connection has its own session"
    );
}
