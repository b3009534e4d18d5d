//! UNNEST: one output row per element of a list column, the other columns repeated.
//!
//! This is what HOP and CUMULATE windows lower to (`unnest(hop_window_starts(...))`), and
//! what `SELECT unnest(list)` lowers to in a view. Several lists in one UNNEST are zipped:
//! a row yields as many rows as its longest list, shorter ones padded with NULL, as in
//! DataFusion and PostgreSQL. On a changelog stream every output row keeps its input
//! row's kind, so retracting a row retracts each of its elements.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use datafusion::common::NullHandling;
use sluice_common::error::{Result, SluiceError};

use super::Operator;
use crate::message::{Message, op_column};

pub struct UnnestOperator {
    /// Input indices of the list columns to unnest.
    lists: Vec<usize>,
    /// For each output column (without the op column), the input column it comes from.
    sources: Vec<usize>,
    null_handling: NullHandling,
    /// The output schema (with the op column last on changelog streams).
    schema: SchemaRef,
}

impl UnnestOperator {
    pub fn new(
        lists: Vec<usize>,
        sources: Vec<usize>,
        null_handling: NullHandling,
        schema: SchemaRef,
    ) -> Self {
        UnnestOperator {
            lists,
            sources,
            null_handling,
            schema,
        }
    }
}

impl Operator for UnnestOperator {
    fn name(&self) -> &'static str {
        "Unnest"
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let lists = self
            .lists
            .iter()
            .map(|&i| {
                batch.column(i).as_list_opt::<i32>().ok_or_else(|| {
                    SluiceError::internal(format!(
                        "UNNEST expects a list, got {}",
                        batch.column(i).data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // How many rows each input row becomes.
        let counts: Vec<usize> = (0..batch.num_rows())
            .map(|row| {
                let longest = lists
                    .iter()
                    .map(|l| {
                        if l.is_null(row) {
                            0
                        } else {
                            l.value_length(row) as usize
                        }
                    })
                    .max()
                    .unwrap_or(0);
                let all_null = lists.iter().all(|l| l.is_null(row));
                match self.null_handling {
                    NullHandling::Drop => longest,
                    NullHandling::Preserve if all_null => 1,
                    NullHandling::Preserve => longest,
                    NullHandling::PreserveAndExpandEmpty => longest.max(1),
                }
            })
            .collect();
        let repeat: UInt32Array = counts
            .iter()
            .enumerate()
            .flat_map(|(row, &n)| std::iter::repeat_n(row as u32, n))
            .collect();
        if repeat.is_empty() {
            return Ok(());
        }
        let mut flattened: Vec<Option<ArrayRef>> = vec![None; batch.num_columns()];
        for (&input, list) in self.lists.iter().zip(&lists) {
            let offsets = list.value_offsets();
            let element: UInt32Array = counts
                .iter()
                .enumerate()
                .flat_map(|(row, &n)| {
                    let len = if list.is_null(row) {
                        0
                    } else {
                        list.value_length(row) as usize
                    };
                    let first = offsets[row] as u32;
                    (0..n).map(move |k| (k < len).then(|| first + k as u32))
                })
                .collect();
            flattened[input] = Some(take(list.values().as_ref(), &element, None)?);
        }
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for &input in &self.sources {
            columns.push(match &flattened[input] {
                Some(values) => values.clone(),
                None => take(batch.column(input).as_ref(), &repeat, None)?,
            });
        }
        if let Some(ops) = op_column(&batch) {
            columns.push(take(ops, &repeat, None)?);
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
    use std::sync::Arc;

    use arrow::array::{Int64Array, ListArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn input() -> RecordBatch {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
            Some(vec![Some(3)]),
        ]);
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("l", list.data_type().clone(), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![10, 20, 30, 40])),
                Arc::new(list),
            ],
        )
        .unwrap()
    }

    fn unnest(null_handling: NullHandling) -> Vec<(i64, Option<i64>)> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("e", DataType::Int64, true),
        ]));
        let mut op = UnnestOperator::new(vec![1], vec![0, 1], null_handling, schema);
        let mut out = vec![];
        op.process_batch(input(), &mut out).unwrap();
        let Message::Batch(b) = &out[0] else { panic!() };
        let k = b.column(0).as_primitive::<Int64Type>();
        let e = b.column(1).as_primitive::<Int64Type>();
        (0..b.num_rows())
            .map(|i| (k.value(i), e.is_valid(i).then(|| e.value(i))))
            .collect()
    }

    #[test]
    fn each_element_becomes_a_row_with_the_other_columns_repeated() {
        assert_eq!(
            unnest(NullHandling::Drop),
            vec![(10, Some(1)), (10, Some(2)), (40, Some(3))]
        );
        assert_eq!(
            unnest(NullHandling::Preserve),
            vec![(10, Some(1)), (10, Some(2)), (20, None), (40, Some(3))]
        );
        assert_eq!(
            unnest(NullHandling::PreserveAndExpandEmpty),
            vec![
                (10, Some(1)),
                (10, Some(2)),
                (20, None),
                (30, None),
                (40, Some(3))
            ]
        );
    }
}
