//! Building the row results of Sluice's own statements (SHOW, DESCRIBE, EXPLAIN).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sluice_common::error::Result;

use sluice_state::checkpoint::{CheckpointKind, CheckpointMetadata};

use crate::coordinator::{JobInfo, SinkInfo, StatementResult};

/// A result of text columns.
pub fn text_result(columns: &[&str], rows: Vec<Vec<Option<String>>>) -> Result<StatementResult> {
    let schema = text_schema(columns);
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|c| Arc::new(rows.iter().map(|r| r[c].clone()).collect::<StringArray>()) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    Ok(StatementResult::Rows {
        schema,
        batches: vec![batch],
    })
}

/// The schema of a result of text columns.
pub fn text_schema(columns: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// The schema of `SHOW JOBS`.
pub fn jobs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("parallelism", DataType::Int64, false),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("restarts", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// The rows of `SHOW JOBS`.
pub fn jobs_result(jobs: &[JobInfo]) -> Result<StatementResult> {
    let schema = jobs_schema();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(jobs.iter().map(|j| j.id as i64).collect::<Int64Array>()),
            Arc::new(
                jobs.iter()
                    .map(|j| Some(j.name.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                jobs.iter()
                    .map(|j| Some(j.status.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(
                jobs.iter()
                    .map(|j| j.parallelism as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                jobs.iter()
                    .map(|j| j.late_rows as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                jobs.iter()
                    .map(|j| j.restarts as i64)
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                jobs.iter()
                    .map(|j| j.error.as_deref())
                    .collect::<StringArray>(),
            ),
        ],
    )?;
    Ok(StatementResult::Rows {
        schema,
        batches: vec![batch],
    })
}

/// The schema of `SHOW SINKS`.
pub fn sinks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("connector", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("inserts", DataType::Int64, false),
        Field::new("deletes", DataType::Int64, false),
    ]))
}

/// The rows of `SHOW SINKS`: `rows` is what the changelog leaves (inserts minus
/// deletes). The checksum and the committed checkpoint are left to `GET /sinks`: they are for
/// programs, and the latter changes with every checkpoint.
pub fn sinks_result(sinks: &[SinkInfo]) -> Result<StatementResult> {
    let schema = sinks_schema();
    let text = |f: &dyn Fn(&SinkInfo) -> String| -> ArrayRef {
        Arc::new(sinks.iter().map(|s| Some(f(s))).collect::<StringArray>())
    };
    let int = |f: &dyn Fn(&SinkInfo) -> i64| -> ArrayRef {
        Arc::new(sinks.iter().map(f).collect::<Int64Array>())
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            text(&|s| s.name.clone()),
            text(&|s| s.connector.clone()),
            text(&|s| s.query.clone()),
            int(&|s| s.rows()),
            int(&|s| s.inserts as i64),
            int(&|s| s.deletes as i64),
        ],
    )?;
    Ok(StatementResult::Rows {
        schema,
        batches: vec![batch],
    })
}

/// PostgreSQL's name for an Arrow type, as `DESCRIBE` and psql show it.
pub fn pg_type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "character varying".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(
            TimeUnit::Second | TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
            Some(_),
        ) => "timestamp with time zone".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("{}[]", pg_type_name(f.data_type())),
        DataType::Struct(_) => "struct".into(),
        DataType::Null => "unknown".into(),
        other => other.to_string().to_lowercase(),
    }
}

/// The schema of `SHOW CHECKPOINTS`.
pub fn checkpoints_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new(
            "completed_at",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("files", DataType::Int64, false),
    ]))
}

/// The rows of `SHOW CHECKPOINTS`, oldest first.
pub fn checkpoints_result(checkpoints: &[CheckpointMetadata]) -> Result<StatementResult> {
    let schema = checkpoints_schema();
    let int = |f: &dyn Fn(&CheckpointMetadata) -> u64| -> ArrayRef {
        Arc::new(
            checkpoints
                .iter()
                .map(|c| f(c) as i64)
                .collect::<Int64Array>(),
        )
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            int(&|c| c.epoch),
            Arc::new(
                checkpoints
                    .iter()
                    .map(|c| {
                        Some(match c.kind {
                            CheckpointKind::Checkpoint => "checkpoint",
                            CheckpointKind::Savepoint => "savepoint",
                        })
                    })
                    .collect::<StringArray>(),
            ),
            Arc::new(arrow::array::TimestampMillisecondArray::from(
                checkpoints
                    .iter()
                    .map(|c| c.completed_at_ms as i64)
                    .collect::<Vec<_>>(),
            )),
            int(&|c| c.duration_ms()),
            int(&|c| c.size_bytes()),
            int(&|c| c.files.len() as u64),
        ],
    )?;
    Ok(StatementResult::Rows {
        schema,
        batches: vec![batch],
    })
}
