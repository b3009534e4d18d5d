//! Accumulators that can take back any earlier row, in any order.
//!
//! DataFusion's sliding accumulators retract oldest-first (window frames). A changelog
//! retracts whatever row an update or delete names, so aggregates whose result depends
//! on which values remain (min, max, count of distinct values) keep the multiset of
//! values of their group: value → how many rows hold it. Values are ordered by their
//! Arrow row encoding, which orders like SQL.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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

/// Distinct values keyed by their row encoding, in key order, with how many rows hold
/// each. Most groups hold a few values (a min or max over a handful of rows), so small
/// multisets live in a sorted vector, one allocation of their own size; a B-tree, whose
/// every node reserves room for eleven entries, takes over from [`LARGE`] values on.
enum ValueCounts {
    Small(Vec<(Box<[u8]>, ScalarValue, u64)>),
    Large(BTreeMap<Box<[u8]>, (ScalarValue, u64)>),
}

/// Distinct values from which a multiset is a B-tree.
const LARGE: usize = 32;

impl ValueCounts {
    fn len(&self) -> usize {
        match self {
            ValueCounts::Small(v) => v.len(),
            ValueCounts::Large(m) => m.len(),
        }
    }

    /// Every value with its count, in key order.
    fn iter(&self) -> Box<dyn DoubleEndedIterator<Item = (&ScalarValue, u64)> + '_> {
        match self {
            ValueCounts::Small(v) => Box::new(v.iter().map(|(_, value, c)| (value, *c))),
            ValueCounts::Large(m) => Box::new(m.values().map(|(value, c)| (value, *c))),
        }
    }

    /// Adds `count` rows holding the value encoded as `key`; `value` makes the value when
    /// it is new.
    fn add(
        &mut self,
        key: &[u8],
        count: u64,
        value: impl FnOnce() -> Result<ScalarValue>,
    ) -> Result<()> {
        match self {
            ValueCounts::Small(v) => match v.binary_search_by(|e| e.0.as_ref().cmp(key)) {
                Ok(i) => v[i].2 += count,
                Err(i) => {
                    v.insert(i, (key.into(), value()?, count));
                    if v.len() > LARGE {
                        let entries = std::mem::take(v);
                        *self = ValueCounts::Large(
                            entries.into_iter().map(|(k, v, c)| (k, (v, c))).collect(),
                        );
                    }
                }
            },
            ValueCounts::Large(m) => match m.get_mut(key) {
                Some(entry) => entry.1 += count,
                None => {
                    m.insert(key.into(), (value()?, count));
                }
            },
        }
        Ok(())
    }

    /// Takes one row holding the value encoded as `key` away; false when none holds it.
    fn remove_one(&mut self, key: &[u8]) -> bool {
        match self {
            ValueCounts::Small(v) => match v.binary_search_by(|e| e.0.as_ref().cmp(key)) {
                Ok(i) => {
                    v[i].2 -= 1;
                    if v[i].2 == 0 {
                        v.remove(i);
                    }
                    true
                }
                Err(_) => false,
            },
            ValueCounts::Large(m) => match m.get_mut(key) {
                Some(entry) => {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        m.remove(key);
                    }
                    true
                }
                None => false,
            },
        }
    }
}

/// Keeps the non-null values of one group with their multiplicities.
pub struct MultisetAccumulator {
    aggregate: MultisetAggregate,
    data_type: DataType,
    /// Shared by every group of an aggregate (one per group costs more than its values).
    converter: Arc<RowConverter>,
    values: ValueCounts,
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
        Ok(Self::new(
            aggregate,
            data_type,
            Arc::new(Self::converter(data_type)?),
        ))
    }

    /// An accumulator encoding values with `converter` (from [`Self::converter`]).
    pub fn new(
        aggregate: MultisetAggregate,
        data_type: &DataType,
        converter: Arc<RowConverter>,
    ) -> Self {
        MultisetAccumulator {
            aggregate,
            data_type: data_type.clone(),
            converter,
            values: ValueCounts::Small(Vec::new()),
            forgetful: false,
        }
    }

    /// The row format of values of `data_type`, for every group's accumulator to share.
    pub fn converter(data_type: &DataType) -> Result<RowConverter> {
        Ok(RowConverter::new(vec![SortField::new(data_type.clone())])?)
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
            if retract {
                if !self.values.remove_one(row.as_ref()) && !self.forgetful {
                    return Err(DataFusionError::Internal(
                        "retraction of a value the aggregate does not hold".into(),
                    ));
                }
            } else {
                self.values
                    .add(row.as_ref(), 1, || ScalarValue::try_from_array(column, i))?;
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
            MultisetAggregate::Min => match self.values.iter().next() {
                Some((v, _)) => Ok(v.clone()),
                None => ScalarValue::try_from(&self.data_type),
            },
            MultisetAggregate::Max => match self.values.iter().next_back() {
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
                .map(|(v, _)| 2 * v.size() + 8)
                .sum::<usize>()
    }

    /// The multiset as two lists: the distinct values and how many rows hold each. Used
    /// by checkpoints (Sluice aggregates each group in one subtask, so DataFusion's
    /// partial aggregation never asks for it).
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values: Vec<ScalarValue> = self.values.iter().map(|(v, _)| v.clone()).collect();
        let counts: Vec<ScalarValue> = self
            .values
            .iter()
            .map(|(_, c)| ScalarValue::UInt64(Some(c)))
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
                self.values.add(row.as_ref(), group_counts.value(j), || {
                    ScalarValue::try_from_array(&group_values, j)
                })?;
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
    fn a_multiset_past_the_small_size_keeps_its_order_and_counts() {
        let mut max =
            MultisetAccumulator::try_new(MultisetAggregate::Max, &DataType::Int64).unwrap();
        let mut distinct =
            MultisetAccumulator::try_new(MultisetAggregate::CountDistinct, &DataType::Int64)
                .unwrap();
        // Three times LARGE distinct values, twice each, in an order that is not sorted.
        let values: Vec<Option<i64>> = (0..3 * LARGE as i64)
            .map(|i| Some((i * 37) % (3 * LARGE as i64)))
            .collect();
        for acc in [&mut max, &mut distinct] {
            acc.update_batch(&col(values.clone())).unwrap();
            acc.update_batch(&col(values.clone())).unwrap();
        }
        let top = 3 * LARGE as i64 - 1;
        assert_eq!(max.evaluate().unwrap(), ScalarValue::Int64(Some(top)));
        assert_eq!(
            distinct.evaluate().unwrap(),
            ScalarValue::Int64(Some(3 * LARGE as i64))
        );
        // Its state round-trips through merge_batch.
        let state = max.state().unwrap();
        let mut merged =
            MultisetAccumulator::try_new(MultisetAggregate::Max, &DataType::Int64).unwrap();
        let arrays: Vec<ArrayRef> = state.iter().map(|s| s.to_array().unwrap()).collect();
        merged.merge_batch(&arrays).unwrap();
        for acc in [&mut max, &mut merged] {
            acc.retract_batch(&col(vec![Some(top)])).unwrap();
            assert_eq!(
                acc.evaluate().unwrap(),
                ScalarValue::Int64(Some(top)),
                "one left"
            );
            acc.retract_batch(&col(vec![Some(top)])).unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Int64(Some(top - 1)));
        }
        // Back below the small size: every value but the first two goes.
        let rest: Vec<Option<i64>> = (2..top).map(Some).collect();
        for _ in 0..2 {
            distinct.retract_batch(&col(rest.clone())).unwrap();
        }
        distinct
            .retract_batch(&col(vec![Some(top), Some(top)]))
            .unwrap();
        assert_eq!(distinct.evaluate().unwrap(), ScalarValue::Int64(Some(2)));
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
