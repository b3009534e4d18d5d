//! What flows on an edge of the dataflow: the operator contract.
//!
//! Every edge carries [`Message`]s in order. Batches hold rows; a changelog stream adds an
//! `__op` column ([`OP_COLUMN`]) whose values are [`RowKind`]s, while append-only streams
//! omit it and every row is an insert. Watermarks and barriers are in-band, so their
//! position relative to rows is exact.

use arrow::array::{Array, Int8Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// One element of a stream.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows. On changelog streams the last column is [`OP_COLUMN`].
    Batch(RecordBatch),
    /// Event-time progress: no later row has a smaller event time.
    Watermark(Watermark),
    /// Epoch `n`: every effect of input before it belongs to epoch `n` (Chandy–Lamport).
    Barrier(CheckpointBarrier),
    /// The input is finished; nothing follows.
    EndOfStream,
}

/// Event time in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub i64);

/// Why a barrier was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarrierKind {
    /// A periodic checkpoint.
    Checkpoint,
    /// A checkpoint the user asked for and that is kept until deleted.
    Savepoint,
    /// `FLUSH`: sources emit it only after everything acknowledged before the FLUSH
    /// (table writes, the rest of a bounded source) has been read.
    Flush,
}

/// Barrier of epoch `epoch`. Epochs increase strictly, across kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckpointBarrier {
    pub epoch: u64,
    pub kind: BarrierKind,
}

/// The name of the changelog column.
pub const OP_COLUMN: &str = "__op";

/// The kind of change a changelog row is (Flink's `RowKind`), stored as `Int8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    /// True for the kinds that add a row (+I, +U), false for the ones that retract (-U, -D).
    pub fn is_addition(code: i8) -> bool {
        code == RowKind::Insert as i8 || code == RowKind::UpdateAfter as i8
    }

    /// The name RisingWave gives the kind in a subscription's rows.
    pub fn name(code: i8) -> &'static str {
        match code {
            0 => "Insert",
            1 => "UpdateDelete",
            2 => "UpdateInsert",
            3 => "Delete",
            _ => "?",
        }
    }

    pub fn symbol(code: i8) -> &'static str {
        match code {
            0 => "+I",
            1 => "-U",
            2 => "+U",
            3 => "-D",
            _ => "?",
        }
    }
}

/// The field of the changelog column.
pub fn op_field() -> Field {
    Field::new(OP_COLUMN, DataType::Int8, false)
}

/// `schema` with the changelog column appended.
pub fn changelog_schema(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(op_field()));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The changelog column of a batch, if it has one.
pub fn op_column(batch: &RecordBatch) -> Option<&Int8Array> {
    let last = batch.schema().fields().len().checked_sub(1)?;
    if batch.schema().field(last).name() != OP_COLUMN {
        return None;
    }
    batch.column(last).as_any().downcast_ref::<Int8Array>()
}

/// Splits a changelog batch into its data columns and its ops. An append-only batch
/// returns all inserts.
pub fn split_changelog(batch: &RecordBatch) -> (RecordBatch, Int8Array) {
    match op_column(batch) {
        Some(ops) => {
            let ops = ops.clone();
            let last = batch.num_columns() - 1;
            let data = batch
                .project(&(0..last).collect::<Vec<_>>())
                .expect("projection of own columns");
            (data, ops)
        }
        None => (
            batch.clone(),
            Int8Array::from(vec![RowKind::Insert as i8; batch.num_rows()]),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn changelog_batches_split_into_data_and_ops() {
        let schema = changelog_schema(&Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Int8Array::from(vec![
                    RowKind::Insert as i8,
                    RowKind::Delete as i8,
                ])),
            ],
        )
        .unwrap();
        let (data, ops) = split_changelog(&batch);
        assert_eq!(data.num_columns(), 1);
        assert_eq!(ops.values().to_vec(), vec![0, 3]);
        assert!(RowKind::is_addition(ops.value(0)));
        assert!(!RowKind::is_addition(ops.value(1)));
        let (_, all_inserts) = split_changelog(&data);
        assert_eq!(all_inserts.values().to_vec(), vec![0, 0]);
    }
}
