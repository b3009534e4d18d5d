//! UNION ALL: the rows of every input, relabelled to the union's schema.
//!
//! DataFusion has already cast every input to the union's column types; this operator
//! only renames the columns and, when some input retracts, gives append-only inputs'
//! rows the `+I` kind so that every output batch has the same shape.

use std::sync::Arc;

use arrow::array::{Int8Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use sluice_common::error::Result;

use super::Operator;
use crate::message::{Message, OP_COLUMN, RowKind, split_changelog};

/// Concatenates its inputs' streams.
pub struct UnionOperator {
    /// The union's columns, plus the op column when any input retracts.
    schema: SchemaRef,
    changelog_output: bool,
}

impl UnionOperator {
    pub fn new(schema: SchemaRef) -> Self {
        let changelog_output = schema
            .fields()
            .last()
            .is_some_and(|f| f.name() == OP_COLUMN);
        UnionOperator {
            schema,
            changelog_output,
        }
    }
}

impl Operator for UnionOperator {
    fn name(&self) -> &'static str {
        "Union"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        self.process_batch_from(0, batch, out)
    }

    fn process_batch_from(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        let mut columns = if self.changelog_output {
            let (data, ops) = split_changelog(&batch);
            let mut columns = data.columns().to_vec();
            columns.push(Arc::new(ops) as _);
            columns
        } else {
            batch.columns().to_vec()
        };
        if columns.len() < self.schema.fields().len() {
            // An append-only input feeding a retracting union: every row is an insert.
            columns.push(Arc::new(Int8Array::from(vec![
                RowKind::Insert as i8;
                batch.num_rows()
            ])));
        }
        out.push(Message::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use crate::message::{changelog_schema, op_column};

    #[test]
    fn inputs_are_relabelled_and_append_only_rows_become_inserts() {
        let union = changelog_schema(&Schema::new(vec![Field::new("u", DataType::Int64, true)]));
        let mut op = UnionOperator::new(union.clone());
        let plain = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let retracting = RecordBatch::try_new(
            changelog_schema(&Schema::new(vec![Field::new("b", DataType::Int64, true)])),
            vec![
                Arc::new(Int64Array::from(vec![3])),
                Arc::new(Int8Array::from(vec![RowKind::Delete as i8])),
            ],
        )
        .unwrap();
        let mut out = vec![];
        op.process_batch_from(0, plain, &mut out).unwrap();
        op.process_batch_from(1, retracting, &mut out).unwrap();
        let ops: Vec<i8> = out
            .iter()
            .flat_map(|m| match m {
                Message::Batch(b) => {
                    assert_eq!(b.schema(), union);
                    op_column(b).unwrap().values().to_vec()
                }
                _ => vec![],
            })
            .collect();
        assert_eq!(
            ops,
            vec![
                RowKind::Insert as i8,
                RowKind::Insert as i8,
                RowKind::Delete as i8
            ]
        );
    }
}
