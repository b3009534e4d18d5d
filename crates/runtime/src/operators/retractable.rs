//! Accumulators that can take back any earlier row, in any order.
//!
//! DataFusion's sliding accumulators retract oldest-first (window frames). A changelog
//! retracts whatever row an update or delete names, so aggregates whose result depends
//! on which values remain (min, max, count of distinct values) keep the multiset of
//! values of their group: value → how many rows hold it. Values are ordered by their
//! Arrow row encoding, which orders like SQL.

use std::collections::BTreeMap;
use std::fmt;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

/// What a [`MultisetAccumulator`] computes from its multiset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultisetAggregate {
    Min,
    Max,
    CountDistinct,
}

impl MultisetAggregate {
    /// The multiset aggregate computing DataFusion's aggregate `name` (`distinct` for
    /// `count(DISTINCT ...)`), if there is one.
    pub fn for_function(name: &str, distinct: bool) -> Option<Self> {
        match (name, distinct) {
            ("min", _) => Some(MultisetAggregate::Min),
            ("max", _) => Some(MultisetAggregate::Max),
            ("count", true) => Some(MultisetAggregate::CountDistinct),
            _ => None,
        }
    }
}

/// Keeps the non-null values of one group with their multiplicities.
pub struct MultisetAccumulator {
    aggregate: MultisetAggregate,
    data_type: DataType,
    converter: RowConverter,
    values: BTreeMap<Vec<u8>, (ScalarValue, u64)>,
    /// Retracting a value it does not hold is ignored instead of refused: under a state
    /// TTL a group can be forgotten, or start over, before its rows are retracted.
    forgetful: bool,
}

impl fmt::Debug for MultisetAccumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MultisetAccumulator({:?}, {} values)",
            self.aggregate,
            self.values.len()
        )
    }
}

impl MultisetAccumulator {
    pub fn try_new(aggregate: MultisetAggregate, data_type: &DataType) -> Result<Self> {
        Ok(MultisetAccumulator {
            aggregate,
            data_type: data_type.clone(),
            converter: RowConverter::new(vec![SortField::new(data_type.clone())])?,
            values: BTreeMap::new(),
            forgetful: false,
        })
    }

    /// Ignores retractions of values it does not hold (see the field).
    pub fn forgetful(mut self) -> Self {
        self.forgetful = true;
        self
    }

    fn apply(&mut self, values: &[ArrayRef], retract: bool) -> Result<()> {
        let column = &values[0];
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(column))?;
        // Per-row loop: each value's multiplicity is looked up in an ordered map.
        for (i, row) in rows.iter().enumerate() {
            if column.is_null(i) {
                continue;
            }
            let key = row.as_ref().to_vec();
            if retract {
                let Some(entry) = self.values.get_mut(&key) else {
                    if self.forgetful {
                        continue;
                    }
                    return Err(DataFusionError::Internal(
                        "retraction of a value the aggregate does not hold".into(),
                    ));
                };
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.values.remove(&key);
                }
            } else {
                match self.values.get_mut(&key) {
                    Some(entry) => entry.1 += 1,
                    None => {
                        let value = ScalarValue::try_from_array(column, i)?;
                        self.values.insert(key, (value, 1));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Accumulator for MultisetAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.apply(values, false)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.apply(values, true)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        match self.aggregate {
            MultisetAggregate::Min => match self.values.values().next() {
                Some((v, _)) => Ok(v.clone()),
                None => ScalarValue::try_from(&self.data_type),
            },
            MultisetAggregate::Max => match self.values.values().next_back() {
                Some((v, _)) => Ok(v.clone()),
                None => ScalarValue::try_from(&self.data_type),
            },
            MultisetAggregate::CountDistinct => {
                Ok(ScalarValue::Int64(Some(self.values.len() as i64)))
            }
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .values
                .iter()
                .map(|(k, (v, _))| k.len() + v.size() + 8)
                .sum::<usize>()
    }

    /// The multiset as two lists: the distinct values and how many rows hold each. Used
    /// by checkpoints (Sluice aggregates each group in one subtask, so DataFusion's
    /// partial aggregation never asks for it).
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self.values.values().map(|(v, _)| v.clone()).collect();
        let counts: Vec<ScalarValue> = self
            .values
            .values()
            .map(|(_, c)| ScalarValue::UInt64(Some(*c)))
            .collect();
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &self.data_type)),
            ScalarValue::List(ScalarValue::new_list_nullable(&counts, &DataType::UInt64)),
        ])
    }

    /// Adds multisets taken by [`Self::state`].
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [values, counts] = states else {
            return Err(DataFusionError::Internal(
                "a multiset aggregate's state has two columns".into(),
            ));
        };
        let values = values.as_list::<i32>();
        let counts = counts.as_list::<i32>();
        for i in 0..values.len() {
            let group_values = values.value(i);
            let group_counts = counts.value(i);
            let group_counts = group_counts.as_primitive::<arrow::datatypes::UInt64Type>();
            let rows = self
                .converter
                .convert_columns(std::slice::from_ref(&group_values))?;
            for (j, row) in rows.iter().enumerate() {
                let count = group_counts.value(j);
                let entry = self
                    .values
                    .entry(row.as_ref().to_vec())
                    .or_insert_with(|| (ScalarValue::Null, 0));
                if entry.1 == 0 {
                    entry.0 = ScalarValue::try_from_array(&group_values, j)?;
                }
                entry.1 += count;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn col(v: Vec<Option<i64>>) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(v))]
    }

    #[test]
    fn min_and_max_follow_retractions_in_any_order() {
        let mut min =
            MultisetAccumulator::try_new(MultisetAggregate::Min, &DataType::Int64).unwrap();
        let mut max =
            MultisetAccumulator::try_new(MultisetAggregate::Max, &DataType::Int64).unwrap();
        for acc in [&mut min, &mut max] {
            acc.update_batch(&col(vec![Some(5), Some(-3), Some(9), None, Some(-3)]))
                .unwrap();
        }
        assert_eq!(min.evaluate().unwrap(), ScalarValue::Int64(Some(-3)));
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int64(Some(9)));
        min.retract_batch(&col(vec![Some(-3)])).unwrap();
        assert_eq!(
            min.evaluate().unwrap(),
            ScalarValue::Int64(Some(-3)),
            "one -3 is left"
        );
        min.retract_batch(&col(vec![Some(-3)])).unwrap();
        assert_eq!(min.evaluate().unwrap(), ScalarValue::Int64(Some(5)));
        max.retract_batch(&col(vec![Some(9), Some(5), Some(-3), Some(-3)]))
            .unwrap();
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int64(None));
    }

    #[test]
    fn count_distinct_counts_values_still_present() {
        let mut acc =
            MultisetAccumulator::try_new(MultisetAggregate::CountDistinct, &DataType::Int64)
                .unwrap();
        acc.update_batch(&col(vec![Some(1), Some(1), Some(2), None]))
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        acc.retract_batch(&col(vec![Some(1)])).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
        acc.retract_batch(&col(vec![Some(1)])).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(1)));
        assert!(acc.retract_batch(&col(vec![Some(7)])).is_err());
    }
}
