//! Watermark generation: after each batch, the maximum of the watermark expression over
//! every row seen so far (per source split), emitted when it advances. Downstream input
//! gates take the minimum over their inputs, so an operator's watermark is the slowest
//! split's.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;
use sluice_common::error::{Result, SluiceError};

use super::Operator;
use crate::message::{Message, Watermark};

/// The largest value of a timestamp array, in milliseconds since the epoch.
pub fn max_timestamp_millis(values: &dyn Array) -> Result<Option<i64>> {
    let millis = cast(values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let millis = millis
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| SluiceError::internal("watermark expression is not a timestamp"))?;
    Ok(arrow::compute::max(millis))
}

/// Assigns watermarks from a timestamp expression (`WATERMARK FOR ts AS ts - INTERVAL ...`).
pub struct WatermarkOperator {
    expr: Arc<dyn PhysicalExpr>,
    current: Option<i64>,
}

impl WatermarkOperator {
    pub fn new(expr: Arc<dyn PhysicalExpr>) -> Self {
        WatermarkOperator {
            expr,
            current: None,
        }
    }
}

impl Operator for WatermarkOperator {
    fn name(&self) -> &'static str {
        "WatermarkAssign"
    }

    fn snapshot_state(&mut self) -> Result<Vec<super::StateEntry>> {
        Ok(self
            .current
            .map(|w| {
                vec![(
                    super::OPERATOR_WIDE,
                    b"watermark".to_vec(),
                    w.to_le_bytes().to_vec(),
                )]
            })
            .unwrap_or_default())
    }

    fn restore_state(&mut self, entries: Vec<super::StateEntry>) -> Result<()> {
        for (_, _, value) in entries {
            let bytes: [u8; 8] = value
                .as_slice()
                .try_into()
                .map_err(|_| SluiceError::corrupted("a checkpointed watermark is not 8 bytes"))?;
            self.current = Some(i64::from_le_bytes(bytes));
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<Message>) -> Result<()> {
        let values = self.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let max = max_timestamp_millis(values.as_ref())?;
        out.push(Message::Batch(batch));
        if let Some(max) = max
            && self.current.is_none_or(|c| max > c)
        {
            self.current = Some(max);
            out.push(Message::Watermark(Watermark(max)));
        }
        Ok(())
    }

    /// Watermarks are generated here, not taken from upstream.
    fn process_watermark(&mut self, _watermark: Watermark, _out: &mut Vec<Message>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn batch(micros: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMicrosecondArray::from(micros))],
        )
        .unwrap()
    }

    #[test]
    fn watermark_is_the_running_maximum_and_only_advances() {
        let mut op = WatermarkOperator::new(Arc::new(Column::new("ts", 0)));
        let mut out = vec![];
        op.process_batch(batch(vec![5_000, 9_000, 1_000]), &mut out)
            .unwrap();
        assert!(matches!(out[1], Message::Watermark(Watermark(9))));
        out.clear();
        op.process_batch(batch(vec![2_000]), &mut out).unwrap();
        assert_eq!(
            out.len(),
            1,
            "an older batch does not move the watermark back"
        );
        out.clear();
        op.process_batch(batch(vec![12_500]), &mut out).unwrap();
        assert!(matches!(out[1], Message::Watermark(Watermark(12))));
    }
}
