//! Errors reach clients with their SQLSTATE, and connections survive them.

use tokio_postgres::error::SqlState;

use crate::server::TestServer;

async fn expect_code(client: &tokio_postgres::Client, sql: &str, code: &SqlState) {
    let err = client
        .simple_query(sql)
        .await
        .expect_err("statement must fail");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: not a server error: {err}"));
    assert_eq!(db.code(), code, "{sql}: {}", db.message());
    assert_eq!(db.severity(), "ERROR");
}

#[tokio::test]
async fn syntax_and_missing_table_errors_carry_sqlstate_and_connection_survives() {
    let server = TestServer::start();
    let client = server.connect().await;
    expect_code(&client, "SELEC 1", &SqlState::SYNTAX_ERROR).await;
    expect_code(
        &client,
        "SELECT * FROM no_such_table",
        &SqlState::UNDEFINED_TABLE,
    )
    .await;
    // Extended protocol errors too.
    let err = client
        .query("SELECT * FROM no_such_table WHERE x = $1", &[&1i32])
        .await
        .expect_err("must fail");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    // The same connection still works, in both protocols.
    let row = client
        .query_one("SELECT 1::INT AS one", &[])
        .await
        .expect("after errors");
    assert_eq!(row.get::<_, i32>(0), 1);
    let msgs = client
        .simple_query("SELECT 2")
        .await
        .expect("simple after errors");
    assert!(
        msgs.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );
}

#[tokio::test]
async fn a_failing_statement_stops_the_rest_of_a_simple_query() {
    let server = TestServer::start();
    let client = server.connect().await;
    let err = client
        .simple_query("SELECT 1; SELECT * FROM nope; SELECT 3")
        .await
        .expect_err("second statement fails");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let msgs = client
        .simple_query("SELECT 1; SELECT 2")
        .await
        .expect("two statements");
    let rows = msgs
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 2);
}
