//! Projection and filter: DataFusion physical expressions evaluated on whole batches.
//!
//! On a changelog stream the op column rides along untouched: a projection or filter
//! applies to each change independently (a retraction of a row that a filter drops is
//! dropped too, consistently with its insertion).

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};

use super::Operator;
use crate::message::{Message, op_column};

/// Computes new columns from expressions over the input columns.
pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The output schema (with the op column last on changelog streams).
    schema: SchemaRef,
}

impl ProjectOperator {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectOperator { exprs, schema }
    }
}

impl Operator for ProjectOperator {
    fn name(&self) -> &'static str {
        "Project"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let mut columns: Vec<ArrayRef> = self
            .exprs
            .iter()
            .map(|e| {
                e.evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
            })
            .collect::<datafusion::error::Result<_>>()?;
        if let Some(ops) = op_column(&batch) {
            columns.push(Arc::new(ops.clone()));
        }
        // A projection may keep no column (`count(*)` reads none): the row count stays.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.push(Message::Batch(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?));
        Ok(())
    }
}

/// Keeps the rows for which a predicate is true.
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        FilterOperator { predicate }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &'static str {
        "Filter"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SluiceError::internal("filter predicate did not return booleans"))?;
        let kept = filter_record_batch(&batch, mask)?;
        if kept.num_rows() > 0 {
            out.push(Message::Batch(kept));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int8Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion::scalar::ScalarValue;

    use crate::message::{RowKind, changelog_schema};

    fn changelog_batch() -> RecordBatch {
        let schema = changelog_schema(&Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 5, 10])),
                Arc::new(Int8Array::from(vec![
                    RowKind::Insert as i8,
                    RowKind::Delete as i8,
                    RowKind::Insert as i8,
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn projecting_no_column_keeps_the_row_count() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1, 5, 10]))],
        )
        .unwrap();
        let mut project = ProjectOperator::new(vec![], Arc::new(Schema::empty()));
        let mut out = Vec::new();
        project.process_batch(batch, &mut out).unwrap();
        let [Message::Batch(projected)] = &out[..] else {
            panic!("one batch: {out:?}")
        };
        assert_eq!((projected.num_columns(), projected.num_rows()), (0, 3));
    }

    #[test]
    fn filter_keeps_matching_changes_with_their_kinds() {
        let pred = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Gt,
            Arc::new(Literal::new(ScalarValue::Int64(Some(2)))),
        ));
        let mut out = vec![];
        FilterOperator::new(pred)
            .process_batch(changelog_batch(), &mut out)
            .unwrap();
        let Message::Batch(b) = &out[0] else { panic!() };
        let ops = op_column(b).unwrap();
        assert_eq!(
            ops.values().to_vec(),
            vec![RowKind::Delete as i8, RowKind::Insert as i8]
        );
        assert_eq!(
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec(),
            vec![5, 10]
        );
    }

    #[test]
    fn projection_evaluates_expressions_and_keeps_the_op_column() {
        let expr = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("a", 0)),
            BinOp::Multiply,
            Arc::new(Literal::new(ScalarValue::Int64(Some(2)))),
        ));
        let schema = changelog_schema(&Schema::new(vec![Field::new("a2", DataType::Int64, false)]));
        let mut out = vec![];
        ProjectOperator::new(vec![expr], schema)
            .process_batch(changelog_batch(), &mut out)
            .unwrap();
        let Message::Batch(b) = &out[0] else { panic!() };
        assert_eq!(
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec(),
            vec![2, 10, 20]
        );
        assert_eq!(op_column(b).unwrap().len(), 3);
    }
}
