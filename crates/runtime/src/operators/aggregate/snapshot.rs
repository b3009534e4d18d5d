//! Checkpointing an [`AggregateOperator`]: each group becomes one state entry.
//!
//! An entry's key is the group key (Arrow row format); its value is one row, in Arrow's
//! row format, of: the group's row count, its window end, whether it was emitted, the
//! values last emitted, and every accumulator's intermediate state
//! (`Accumulator::state`). Restoring merges those states into fresh accumulators
//! (`Accumulator::merge_batch`), which is how DataFusion itself combines partial
//! aggregates, so every aggregate DataFusion has can be checkpointed. A few operator-wide
//! values (the window watermark) are entries of their own, told apart by a key prefix.

use crate::operators::OPERATOR_WIDE;
use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;
use sluice_common::error::{Result, SluiceError};
use sluice_state::DEFAULT_KEY_GROUPS;

use super::{AggregateOperator, AggregateSpec, Group};
use crate::keygroup::key_groups_of_columns;
use crate::operators::StateEntry;
use crate::operators::encoding::{timestamp_millis, wall_clock_ms};

/// Key prefix of a group's entry.
const GROUP: u8 = 0;
/// Key prefix of an operator-wide value.
const META: u8 = 1;
const WATERMARK_KEY: &[u8] = &[META, b'w'];

/// The types of a group entry's value columns.
struct Layout {
    /// Per aggregate: the type `evaluate` returns.
    emitted: Vec<DataType>,
    /// Per aggregate: the types of `state`'s values.
    states: Vec<Vec<DataType>>,
}

impl Layout {
    fn of(aggregates: &[AggregateSpec]) -> Result<Self> {
        let mut emitted = Vec::new();
        let mut states = Vec::new();
        for spec in aggregates {
            let mut acc = spec.create_accumulator()?;
            emitted.push(acc.evaluate()?.data_type());
            states.push(acc.state()?.iter().map(ScalarValue::data_type).collect());
        }
        Ok(Layout { emitted, states })
    }

    /// Row count, window end, emitted flag, emitted values, then the states.
    fn columns(&self) -> Vec<DataType> {
        let mut types = vec![DataType::Int64, DataType::Int64, DataType::Boolean];
        types.extend(self.emitted.iter().cloned());
        types.extend(self.states.iter().flatten().cloned());
        types
    }

    fn converter(&self) -> Result<RowConverter> {
        Ok(RowConverter::new(
            self.columns().into_iter().map(SortField::new).collect(),
        )?)
    }
}

/// One array of `data_type` from `values`, casting any value whose type differs (an
/// accumulator may report a typed or an untyped NULL).
fn to_array(values: Vec<ScalarValue>, data_type: &DataType) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    if values.iter().all(|v| v.data_type() == *data_type) {
        return Ok(ScalarValue::iter_to_array(values)?);
    }
    let parts = values
        .iter()
        .map(|v| {
            let array = v.to_array_of_size(1)?;
            Ok(arrow::compute::cast(&array, data_type)?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    Ok(arrow::compute::concat(&refs)?)
}

/// A fresh accumulator holding `state`.
fn accumulator_from_state(
    spec: &AggregateSpec,
    state: &[ScalarValue],
    types: &[DataType],
) -> Result<Box<dyn Accumulator>> {
    let mut acc = spec.create_accumulator()?;
    let arrays = state
        .iter()
        .zip(types)
        .map(|(v, t)| to_array(vec![v.clone()], t))
        .collect::<Result<Vec<_>>>()?;
    acc.merge_batch(&arrays)?;
    Ok(acc)
}

impl AggregateOperator {
    pub(super) fn snapshot_groups(&mut self) -> Result<Vec<StateEntry>> {
        let mut entries = Vec::new();
        if let Some(watermark) = self.window_close.as_ref().and_then(|wc| wc.watermark) {
            entries.push((
                OPERATOR_WIDE,
                WATERMARK_KEY.to_vec(),
                watermark.to_le_bytes().to_vec(),
            ));
        }
        if self.spill.is_some() {
            // The store then holds every group; on disk, its files are the snapshot
            // (`snapshot_database`).
            self.spill_flush()?;
            let spill = self.spill.as_ref().expect("checked above");
            if !spill.store.on_disk() {
                entries.extend(spill.store.entries());
            }
            return Ok(entries);
        }
        let slots: Vec<usize> = (0..self.groups.len())
            .filter(|&s| self.groups[s].is_some())
            .collect();
        entries.extend(self.encode_groups(&slots)?);
        Ok(entries)
    }

    /// One state entry per group in `slots` (see the module docs).
    pub(super) fn encode_groups(&mut self, slots: &[usize]) -> Result<Vec<StateEntry>> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let layout = Layout::of(&self.aggregates)?;
        let types = layout.columns();
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(slots.len()); types.len()];
        for &slot in slots {
            let group = self.groups[slot].as_mut().expect("live slot");
            columns[0].push(ScalarValue::Int64(Some(group.rows)));
            columns[1].push(ScalarValue::Int64(group.window_end));
            columns[2].push(ScalarValue::Boolean(Some(group.emitted.is_some())));
            let mut c = 3;
            for (j, data_type) in layout.emitted.iter().enumerate() {
                let value = match &group.emitted {
                    Some(values) => values[j].clone(),
                    None => ScalarValue::try_from(data_type)?,
                };
                columns[c].push(value);
                c += 1;
            }
            // `state` may consume an accumulator's state: continue with a fresh one
            // holding the same state.
            for (j, spec) in self.aggregates.iter().enumerate() {
                let state = group.accumulators[j].state()?;
                group.accumulators[j] = accumulator_from_state(spec, &state, &layout.states[j])?;
                for value in state {
                    columns[c].push(value);
                    c += 1;
                }
            }
        }
        let arrays = columns
            .into_iter()
            .zip(&types)
            .map(|(values, t)| to_array(values, t))
            .collect::<Result<Vec<_>>>()?;
        let values = layout.converter()?.convert_columns(&arrays)?;
        let key_groups = if self.is_global() {
            vec![0; slots.len()]
        } else {
            let key_columns = self.converter.convert_rows(
                slots
                    .iter()
                    .filter_map(|&s| self.groups[s].as_ref()?.key.as_ref().map(|k| k.row())),
            )?;
            key_groups_of_columns(&key_columns, slots.len(), DEFAULT_KEY_GROUPS)?
        };
        Ok(slots
            .iter()
            .enumerate()
            .map(|(i, &slot)| {
                let key = self.groups[slot].as_ref().and_then(|g| g.key.as_ref());
                (
                    key_groups[i],
                    group_entry_key(key.map(|k| k.as_ref())),
                    values.row(i).as_ref().to_vec(),
                )
            })
            .collect())
    }

    pub(super) fn restore_groups(&mut self, entries: Vec<StateEntry>) -> Result<()> {
        if self.group_count() > 0 || self.spill.as_ref().is_some_and(|s| s.store.holds_entries()) {
            return Err(SluiceError::internal(
                "restoring an aggregate that already holds groups",
            ));
        }
        let (meta, groups): (Vec<StateEntry>, Vec<StateEntry>) = entries
            .into_iter()
            .partition(|(_, k, _)| k.first() == Some(&META));
        for (_, key, value) in meta {
            if key == WATERMARK_KEY {
                let bytes: [u8; 8] = value
                    .as_slice()
                    .try_into()
                    .map_err(|_| SluiceError::corrupted("aggregate watermark is not 8 bytes"))?;
                if let Some(wc) = &mut self.window_close {
                    wc.watermark = Some(i64::from_le_bytes(bytes));
                }
            }
        }
        if let Some(spill) = &mut self.spill {
            // Groups stay encoded until a row needs them.
            spill.store.put(groups);
            return Ok(());
        }
        for group in self.decode_groups(&groups)? {
            if let (Some(wc), Some(end), Some(key)) =
                (&mut self.window_close, group.window_end, &group.key)
            {
                wc.open.entry(end).or_default().push(key.as_ref().into());
            }
            self.insert_group(group);
        }
        Ok(())
    }

    /// Under a TTL, gives every restored group (in memory and in the store, whose keys
    /// are read a chunk at a time) one more TTL: touch times are not checkpointed.
    /// Touching a group again changes nothing that matters.
    pub(super) fn touch_restored_groups(&mut self) -> Result<()> {
        if self.ttl.is_none() {
            return Ok(());
        }
        let mut keys: Vec<Box<[u8]>> = self
            .groups
            .iter()
            .flatten()
            .filter_map(|group| group.key.as_ref().map(|k| k.as_ref().into()))
            .collect();
        if let Some(spill) = &self.spill {
            spill
                .store
                .table()
                .scan_chunks(None, sluice_state::spill::WRITE_CHUNK, &mut |chunk| {
                    keys.extend(
                        chunk
                            .iter()
                            .filter_map(|(_, k, _)| k.strip_prefix(&[GROUP]).map(Box::from)),
                    );
                });
        }
        let ttl = self.ttl.as_mut().expect("checked above");
        let now = wall_clock_ms();
        for key in keys {
            ttl.touch(key, now);
        }
        Ok(())
    }

    /// Files the groups a spilling window aggregate restored into its store under their
    /// windows' ends (read from their keys, a chunk at a time; the values stay encoded).
    pub(super) fn index_stored_windows(&mut self) -> Result<()> {
        let (Some(spill), Some(wc)) = (&self.spill, &self.window_close) else {
            return Ok(());
        };
        let group_index = wc.group_index;
        let mut open: Vec<(i64, Box<[u8]>)> = Vec::new();
        let mut failed = None;
        let parser = self.converter.parser();
        spill
            .store
            .table()
            .scan_chunks(None, sluice_state::spill::WRITE_CHUNK, &mut |chunk| {
                let keys: Vec<&[u8]> = chunk
                    .iter()
                    .filter_map(|(_, k, _)| k.strip_prefix(&[GROUP]))
                    .collect();
                let ends = self
                    .converter
                    .convert_rows(keys.iter().map(|k| parser.parse(k)))
                    .map_err(SluiceError::from)
                    .and_then(|columns| timestamp_millis(&columns[group_index]));
                match ends {
                    Ok(ends) => open.extend(
                        ends.into_iter()
                            .zip(keys)
                            .map(|(end, key)| (end.unwrap_or(i64::MIN), key.into())),
                    ),
                    Err(e) => failed = Some(e),
                }
            });
        if let Some(e) = failed {
            return Err(e);
        }
        let wc = self.window_close.as_mut().expect("checked above");
        for (end, key) in open {
            wc.open.entry(end).or_default().push(key);
        }
        Ok(())
    }

    /// Files a decoded group under a slot of its own.
    pub(super) fn insert_group(&mut self, group: Group) -> usize {
        let key = group.key.as_ref().map(|k| Box::<[u8]>::from(k.as_ref()));
        let slot = self.place(group);
        if let Some(key) = key {
            self.index.insert(key, slot);
        }
        slot
    }

    /// The groups that [`Self::encode_groups`] encoded as `entries`.
    pub(super) fn decode_groups(&self, entries: &[StateEntry]) -> Result<Vec<Group>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let layout = Layout::of(&self.aggregates)?;
        let converter = layout.converter()?;
        let parser = converter.parser();
        let arrays = converter.convert_rows(entries.iter().map(|(_, _, v)| parser.parse(v)))?;
        let rows = arrays[0]
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| SluiceError::corrupted("aggregate snapshot: bad row count column"))?;
        let ends = arrays[1]
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| SluiceError::corrupted("aggregate snapshot: bad window column"))?;
        let emitted_flags = arrays[2]
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| SluiceError::corrupted("aggregate snapshot: bad emitted column"))?;
        let key_parser = self.converter.parser();
        let mut groups = Vec::with_capacity(entries.len());
        for (i, (_, key, _)) in entries.iter().enumerate() {
            let key = if self.group_exprs.is_empty() {
                None
            } else {
                let bytes = key
                    .strip_prefix(&[GROUP])
                    .ok_or_else(|| SluiceError::corrupted("aggregate snapshot: bad group key"))?;
                Some(key_parser.parse(bytes).owned())
            };
            let mut c = 3 + layout.emitted.len();
            let mut accumulators = Vec::with_capacity(self.aggregates.len());
            for (j, spec) in self.aggregates.iter().enumerate() {
                let width = layout.states[j].len();
                let state: Vec<ArrayRef> =
                    arrays[c..c + width].iter().map(|a| a.slice(i, 1)).collect();
                let mut acc = spec.create_accumulator()?;
                acc.merge_batch(&state)?;
                accumulators.push(acc);
                c += width;
            }
            let emitted = if emitted_flags.value(i) {
                Some(
                    (0..layout.emitted.len())
                        .map(|j| ScalarValue::try_from_array(&arrays[3 + j], i))
                        .collect::<datafusion::error::Result<Vec<_>>>()?,
                )
            } else {
                None
            };
            groups.push(Group {
                key,
                accumulators,
                rows: rows.value(i),
                emitted,
                window_end: (!ends.is_null(i)).then(|| ends.value(i)),
            });
        }
        Ok(groups)
    }
}

/// The state entry key of a group with key `key` (row format; `None` when global).
pub(super) fn group_entry_key(key: Option<&[u8]>) -> Vec<u8> {
    let mut entry_key = vec![GROUP];
    entry_key.extend_from_slice(key.unwrap_or_default());
    entry_key
}
