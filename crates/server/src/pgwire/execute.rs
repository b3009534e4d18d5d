//! Running one parsed statement for a connection, shared by the simple and extended
//! query protocols.
//!
//! Most statements go straight to [`Coordinator::execute`]. The protocol layer itself
//! answers what only exists for the sake of PostgreSQL clients: transaction control
//! (`BEGIN`/`COMMIT`/`ROLLBACK` change the status byte of `ReadyForQuery`, which drivers
//! track) and, when the engine does not know them, the `SET`/`SHOW` of the session
//! variables drivers and psql read (`search_path`, `client_encoding`, `DateStyle`, ...).

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use pgwire::api::results::Tag;
use sluice_cluster::{Coordinator, Session, StatementResult};
use sluice_common::error::{Result, SluiceError, SqlState};
use sluice_sql::{ParsedStatement, ShowTarget, Statement};

/// What a statement produced, in protocol terms.
pub enum Outcome {
    /// Rows to send with a `RowDescription` (simple protocol) and `DataRow`s.
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command tag (`CREATE TABLE`, `INSERT 0 3`).
    Command(Tag),
    /// `BEGIN`: the connection is now in a transaction block.
    TransactionStart(Tag),
    /// `COMMIT` / `ROLLBACK`: the transaction block ended.
    TransactionEnd(Tag),
}

/// Server variables PostgreSQL clients read, with the values Sluice reports when a
/// session has not set them.
pub const DEFAULT_VARIABLES: &[(&str, &str)] = &[
    ("server_version", "16.6"),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("search_path", "public"),
    ("datestyle", "ISO, MDY"),
    ("timezone", "UTC"),
    ("intervalstyle", "postgres"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("default_transaction_read_only", "off"),
    ("application_name", ""),
    ("extra_float_digits", "1"),
    ("max_identifier_length", "63"),
    ("lc_collate", "C.UTF-8"),
    ("lc_ctype", "C.UTF-8"),
    ("is_superuser", "on"),
    ("statement_timeout", "0"),
];

/// Runs one statement with its bound parameters.
pub async fn run_statement(
    coordinator: &Coordinator,
    session: &mut Session,
    stmt: &ParsedStatement,
    params: &[ScalarValue],
) -> Result<Outcome> {
    if let Statement::Transaction(word) = &stmt.statement {
        let tag = Tag::new(word);
        return Ok(if *word == "BEGIN" {
            Outcome::TransactionStart(tag)
        } else {
            Outcome::TransactionEnd(tag)
        });
    }
    match coordinator.execute(session, stmt, params).await {
        Ok(StatementResult::Rows { schema, batches }) => Ok(Outcome::Rows { schema, batches }),
        Ok(StatementResult::Command(c)) => {
            let mut tag = Tag::new(&c.tag);
            if c.tag == "INSERT" {
                tag = tag.with_oid(0);
            }
            if let Some(rows) = c.rows {
                tag = tag.with_rows(rows);
            }
            Ok(Outcome::Command(tag))
        }
        Err(e) => fallback(session, stmt, e),
    }
}

/// Answers `SET`/`SHOW` of client-facing variables the engine refused; any other
/// statement keeps the engine's error.
fn fallback(session: &mut Session, stmt: &ParsedStatement, err: SluiceError) -> Result<Outcome> {
    match &stmt.statement {
        Statement::Set { name, value } if err.state == SqlState::FEATURE_NOT_SUPPORTED => {
            session
                .settings
                .insert(name.to_ascii_lowercase(), value.clone());
            Ok(Outcome::Command(Tag::new("SET")))
        }
        Statement::Show(ShowTarget::Variable(name)) => {
            let key = name.to_ascii_lowercase();
            let value = session.settings.get(&key).cloned().or_else(|| {
                DEFAULT_VARIABLES
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            });
            match value {
                Some(v) => show_result(&key, &v),
                None => Err(err),
            }
        }
        _ => Err(err),
    }
}

fn show_result(name: &str, value: &str) -> Result<Outcome> {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(StringArray::from(vec![value.to_string()]))],
    )?;
    Ok(Outcome::Rows {
        schema,
        batches: vec![batch],
    })
}
