//! What the stateful operators share: timestamps in milliseconds, rows in Arrow's row
//! format, the wall clock (for processing-time expiry), taking what is due out of a
//! time-ordered index, and the pieces of their snapshot entries' keys.

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, Schema, TimeUnit};
use arrow::row::{RowConverter, SortField};
use sluice_common::error::Result;
use sluice_state::DEFAULT_KEY_GROUPS;

use crate::keygroup::key_groups_of_columns;

/// A timestamp array's values in milliseconds since the epoch (`None` for NULL), the
/// unit watermarks are in.
pub fn timestamp_millis(values: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let millis = arrow::compute::cast(values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let millis = arrow::compute::cast(&millis, &DataType::Int64)?;
    Ok(millis.as_primitive::<Int64Type>().iter().collect())
}

/// A converter of whole rows of `schema` to Arrow's row format, for keeping rows in state.
pub fn row_converter(schema: &Schema) -> Result<RowConverter> {
    Ok(RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )?)
}

/// The wall clock in milliseconds since the epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Takes the entries of a time-ordered index at or before `upto` out of it: the windows
/// a watermark closes, the rows whose expiry has come.
pub fn take_through<V>(index: &mut BTreeMap<i64, V>, upto: i64) -> BTreeMap<i64, V> {
    let later = index.split_off(&upto.saturating_add(1));
    std::mem::replace(index, later)
}

/// Appends `part` to `buf` behind its length (`u32`, little-endian): how a state entry's
/// key holds a variable-length part (a join key, a partition key) ahead of others.
pub fn push_sized(buf: &mut Vec<u8>, part: &[u8]) {
    buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
    buf.extend_from_slice(part);
}

/// Takes a part written by [`push_sized`] off the front of `bytes`: the part, then the
/// rest. `None` when `bytes` is too short to hold it.
pub fn split_sized(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let length: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let end = 4usize.checked_add(u32::from_le_bytes(length) as usize)?;
    Some((bytes.get(4..end)?, &bytes[end..]))
}

/// The key group of each key, given in the row format of `converter`: where a snapshot
/// files the state held under it.
pub fn key_groups_of_rows(converter: &RowConverter, keys: &[&[u8]]) -> Result<Vec<u16>> {
    let parser = converter.parser();
    let columns = converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
    key_groups_of_columns(&columns, keys.len(), DEFAULT_KEY_GROUPS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sized_part_comes_back_with_the_rest() {
        let mut buf = vec![];
        push_sized(&mut buf, b"key");
        buf.extend_from_slice(b"row");
        assert_eq!(split_sized(&buf), Some((&b"key"[..], &b"row"[..])));
        assert_eq!(split_sized(&buf[..5]), None, "truncated");
        assert_eq!(split_sized(&[1, 0]), None, "no length");
    }
}
