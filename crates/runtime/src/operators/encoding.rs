//! What the stateful operators share: timestamps in milliseconds, rows in Arrow's row
//! format, the wall clock (for processing-time expiry), and taking what is due out of a
//! time-ordered index.

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, Schema, TimeUnit};
use arrow::row::{RowConverter, SortField};
use sluice_common::error::Result;

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
