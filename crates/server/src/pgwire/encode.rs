//! Encoding Arrow record batches as PostgreSQL `DataRow`s, in text or binary format.
//!
//! The wire format is row-major while Arrow is columnar, so each column is first
//! encoded into a vector of cells (one type dispatch per column, not per value), and the
//! rows are then assembled from the cells. The text format follows PostgreSQL's output
//! conventions (`t`/`f`, `2024-01-02 03:04:05.5`, `1 day 02:00:00`, `{1,2}`, `\x00ff`);
//! the binary format is PostgreSQL's `send` format of the type [`pg_type_of`] picked.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;
use sluice_common::error::{Result, SluiceError};

use super::types::pg_type_of;
use super::values::{
    float_text, hex_bytea, interval_text, numeric_binary, quote_array_element, timestamp_text,
};

/// One encoded value; `None` is SQL NULL.
type Cell = Option<Vec<u8>>;

/// Days from 1970-01-01 (Unix) to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// Encodes every row of `batches`; `fields` gives each column's format (and must have
/// one entry per column).
pub fn encode_rows(batches: &[RecordBatch], fields: &[FieldInfo]) -> Result<Vec<DataRow>> {
    let mut rows = Vec::new();
    for batch in batches {
        if batch.num_columns() != fields.len() {
            return Err(SluiceError::internal(format!(
                "result has {} columns but {} were described",
                batch.num_columns(),
                fields.len()
            )));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(fields)
            .map(|(array, field)| match field.format() {
                FieldFormat::Text => text_cells(array),
                FieldFormat::Binary => binary_cells(array),
            })
            .collect::<Result<Vec<_>>>()?;
        // The wire protocol is row-major: this loop transposes the encoded columns.
        for row in 0..batch.num_rows() {
            let mut buf = Vec::with_capacity(16 * columns.len());
            for cells in &columns {
                match &cells[row] {
                    None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        buf.extend_from_slice(bytes);
                    }
                }
            }
            rows.push(DataRow::new(buf.as_slice().into(), columns.len() as i16));
        }
    }
    Ok(rows)
}

fn cells_with<F>(array: &dyn Array, mut f: F) -> Vec<Cell>
where
    F: FnMut(usize) -> Vec<u8>,
{
    (0..array.len())
        .map(|i| (!array.is_null(i)).then(|| f(i)))
        .collect()
}

macro_rules! prim_text {
    ($array:expr, $t:ty) => {{
        let a = $array.as_primitive::<$t>();
        cells_with(a, |i| a.value(i).to_string().into_bytes())
    }};
}

macro_rules! prim_binary {
    ($array:expr, $t:ty, $out:ty) => {{
        let a = $array.as_primitive::<$t>();
        cells_with(a, |i| (a.value(i) as $out).to_be_bytes().to_vec())
    }};
}

fn text_cells(array: &ArrayRef) -> Result<Vec<Cell>> {
    Ok(match array.data_type() {
        DataType::Null => vec![None; array.len()],
        DataType::Boolean => {
            let a = array.as_boolean();
            cells_with(a, |i| {
                if a.value(i) {
                    b"t".to_vec()
                } else {
                    b"f".to_vec()
                }
            })
        }
        DataType::Int8 => prim_text!(array, Int8Type),
        DataType::Int16 => prim_text!(array, Int16Type),
        DataType::Int32 => prim_text!(array, Int32Type),
        DataType::Int64 => prim_text!(array, Int64Type),
        DataType::UInt8 => prim_text!(array, UInt8Type),
        DataType::UInt16 => prim_text!(array, UInt16Type),
        DataType::UInt32 => prim_text!(array, UInt32Type),
        DataType::UInt64 => prim_text!(array, UInt64Type),
        DataType::Float16 => {
            let a = array.as_primitive::<Float16Type>();
            cells_with(a, |i| {
                float_text(f64::from(a.value(i).to_f32())).into_bytes()
            })
        }
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            cells_with(a, |i| {
                let v = a.value(i);
                if v.is_finite() {
                    v.to_string().into_bytes()
                } else {
                    float_text(f64::from(v)).into_bytes()
                }
            })
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            cells_with(a, |i| float_text(a.value(i)).into_bytes())
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            cells_with(a, |i| a.value(i).as_bytes().to_vec())
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            cells_with(a, |i| a.value(i).as_bytes().to_vec())
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            cells_with(a, |i| a.value(i).as_bytes().to_vec())
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let a = arrow::compute::cast(array, &DataType::LargeBinary)?;
            let a = a.as_binary::<i64>();
            cells_with(a, |i| hex_bytea(a.value(i)).into_bytes())
        }
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(array, *unit);
            let with_zone = tz.is_some();
            micros
                .into_iter()
                .map(|m| m.map(|m| timestamp_text(m, with_zone).into_bytes()))
                .collect()
        }
        DataType::Interval(_) | DataType::Duration(_) => interval_parts(array)?
            .into_iter()
            .map(|p| {
                p.map(|(months, days, micros)| interval_text(months, days, micros).into_bytes())
            })
            .collect(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            list_text_cells(array)?
        }
        DataType::Dictionary(_, value_type) => {
            text_cells(&arrow::compute::cast(array, value_type)?)?
        }
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
            cells_with(array.as_ref(), |i| {
                formatter.value(i).to_string().into_bytes()
            })
        }
    })
}

fn binary_cells(array: &ArrayRef) -> Result<Vec<Cell>> {
    Ok(match array.data_type() {
        DataType::Null => vec![None; array.len()],
        DataType::Boolean => {
            let a = array.as_boolean();
            cells_with(a, |i| vec![u8::from(a.value(i))])
        }
        DataType::Int8 => prim_binary!(array, Int8Type, i16),
        DataType::UInt8 => prim_binary!(array, UInt8Type, i16),
        DataType::Int16 => prim_binary!(array, Int16Type, i16),
        DataType::UInt16 => prim_binary!(array, UInt16Type, i32),
        DataType::Int32 => prim_binary!(array, Int32Type, i32),
        DataType::UInt32 => prim_binary!(array, UInt32Type, i64),
        DataType::Int64 => prim_binary!(array, Int64Type, i64),
        DataType::Float16 => {
            let a = array.as_primitive::<Float16Type>();
            cells_with(a, |i| a.value(i).to_f32().to_be_bytes().to_vec())
        }
        DataType::Float32 => prim_binary!(array, Float32Type, f32),
        DataType::Float64 => prim_binary!(array, Float64Type, f64),
        DataType::UInt64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => text_cells(array)?
            .into_iter()
            .map(|c| {
                c.map(|text| numeric_binary(&String::from_utf8_lossy(&text)))
                    .transpose()
            })
            .collect::<Result<_>>()?,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let a = arrow::compute::cast(array, &DataType::LargeBinary)?;
            let a = a.as_binary::<i64>();
            cells_with(a, |i| a.value(i).to_vec())
        }
        DataType::FixedSizeBinary(_) => {
            let a = array.as_fixed_size_binary();
            cells_with(a, |i| a.value(i).to_vec())
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            cells_with(a, |i| {
                ((a.value(i) as i64 - PG_EPOCH_DAYS) as i32)
                    .to_be_bytes()
                    .to_vec()
            })
        }
        DataType::Date64 => {
            let a = array.as_primitive::<Date64Type>();
            cells_with(a, |i| {
                ((a.value(i).div_euclid(86_400_000) - PG_EPOCH_DAYS) as i32)
                    .to_be_bytes()
                    .to_vec()
            })
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros = arrow::compute::cast(array, &DataType::Time64(TimeUnit::Microsecond))?;
            let a = micros.as_primitive::<arrow::datatypes::Time64MicrosecondType>();
            cells_with(a, |i| a.value(i).to_be_bytes().to_vec())
        }
        DataType::Timestamp(unit, _) => timestamp_micros(array, *unit)
            .into_iter()
            .map(|m| m.map(|m| (m - PG_EPOCH_MICROS).to_be_bytes().to_vec()))
            .collect(),
        DataType::Interval(_) | DataType::Duration(_) => interval_parts(array)?
            .into_iter()
            .map(|p| {
                p.map(|(months, days, micros)| {
                    let mut b = micros.to_be_bytes().to_vec();
                    b.extend_from_slice(&days.to_be_bytes());
                    b.extend_from_slice(&months.to_be_bytes());
                    b
                })
            })
            .collect(),
        DataType::Dictionary(_, value_type) => {
            binary_cells(&arrow::compute::cast(array, value_type)?)?
        }
        // Sent as `text`, whose binary format is its text.
        _ => text_cells(array)?,
    })
}

/// Microseconds since the Unix epoch of each timestamp (nanoseconds are truncated, as
/// PostgreSQL's timestamps have microsecond precision).
fn timestamp_micros(array: &ArrayRef, unit: TimeUnit) -> Vec<Option<i64>> {
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .iter()
            .map(|v| v.map(|v| v.saturating_mul(1_000_000)))
            .collect(),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .map(|v| v.map(|v| v.saturating_mul(1_000)))
            .collect(),
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect(),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .map(|v| v.map(|v| v.div_euclid(1_000)))
            .collect(),
    }
}

/// Each interval as (months, days, microseconds), PostgreSQL's representation.
fn interval_parts(array: &ArrayRef) -> Result<Vec<Option<(i32, i32, i64)>>> {
    Ok(match array.data_type() {
        DataType::Interval(IntervalUnit::YearMonth) => array
            .as_primitive::<IntervalYearMonthType>()
            .iter()
            .map(|v| v.map(|m| (m, 0, 0)))
            .collect(),
        DataType::Interval(IntervalUnit::DayTime) => array
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| v.map(|v| (0, v.days, i64::from(v.milliseconds) * 1_000)))
            .collect(),
        DataType::Interval(IntervalUnit::MonthDayNano) => array
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| v.map(|v| (v.months, v.days, v.nanoseconds / 1_000)))
            .collect(),
        DataType::Duration(_) => {
            let micros = arrow::compute::cast(array, &DataType::Duration(TimeUnit::Microsecond))?;
            micros
                .as_primitive::<arrow::datatypes::DurationMicrosecondType>()
                .iter()
                .map(|v| v.map(|v| (0, 0, v)))
                .collect()
        }
        other => {
            return Err(SluiceError::internal(format!(
                "{other} is not an interval type"
            )));
        }
    })
}

/// `{1,2,NULL}`, with elements quoted where PostgreSQL quotes them.
fn list_text_cells(array: &ArrayRef) -> Result<Vec<Cell>> {
    let (values, offsets): (ArrayRef, Vec<(usize, usize)>) = match array.data_type() {
        DataType::List(_) => {
            let a = array.as_list::<i32>();
            let o = a.value_offsets();
            (
                a.values().clone(),
                o.windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize))
                    .collect(),
            )
        }
        DataType::LargeList(_) => {
            let a = array.as_list::<i64>();
            let o = a.value_offsets();
            (
                a.values().clone(),
                o.windows(2)
                    .map(|w| (w[0] as usize, w[1] as usize))
                    .collect(),
            )
        }
        DataType::FixedSizeList(_, n) => {
            let a = array.as_fixed_size_list();
            let n = *n as usize;
            (
                a.values().clone(),
                (0..a.len()).map(|i| (i * n, (i + 1) * n)).collect(),
            )
        }
        other => return Err(SluiceError::internal(format!("{other} is not a list"))),
    };
    let element_text = text_cells(&values)?;
    let quote_all_like_strings = matches!(
        values.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    Ok((0..array.len())
        .map(|i| {
            if array.is_null(i) {
                return None;
            }
            let (start, end) = offsets[i];
            let items: Vec<String> = element_text[start..end]
                .iter()
                .map(|c| match c {
                    None => "NULL".to_string(),
                    Some(b) => {
                        quote_array_element(&String::from_utf8_lossy(b), quote_all_like_strings)
                    }
                })
                .collect();
            Some(format!("{{{}}}", items.join(",")).into_bytes())
        })
        .collect())
}

/// The `FieldInfo`s of a result schema, each in the format the client asked for.
pub fn field_infos(
    schema: &arrow::datatypes::Schema,
    format: &pgwire::api::portal::Format,
) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let pg_type = pg_type_of(f.data_type());
            let size = super::types::type_len(&pg_type);
            let field_format = if is_binary(format, i) {
                FieldFormat::Binary
            } else {
                FieldFormat::Text
            };
            FieldInfo::new(f.name().clone(), None, None, pg_type, field_format).with_type_size(size)
        })
        .collect()
}

/// True when result column or parameter `idx` uses the binary format. PostgreSQL sends
/// no code (all text), one code for all, or one per column; unlike pgwire's
/// `Format::format_for`, a short list does not panic here (missing codes are text).
pub fn is_binary(format: &pgwire::api::portal::Format, idx: usize) -> bool {
    use pgwire::api::portal::Format;
    match format {
        Format::UnifiedText => false,
        Format::UnifiedBinary => true,
        Format::Individual(codes) => codes.get(idx) == Some(&1),
    }
}

/// Shorthand used by tests: the text of one column.
#[cfg(test)]
fn texts(array: ArrayRef) -> Vec<Option<String>> {
    text_cells(&array)
        .expect("encodable")
        .into_iter()
        .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Decimal128Array, IntervalMonthDayNanoArray, ListArray, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Int32Type, IntervalMonthDayNano};
    use std::sync::Arc;

    #[test]
    fn timestamps_render_like_postgres() {
        let a = TimestampMicrosecondArray::from(vec![Some(1_700_000_000_250_000), None]);
        assert_eq!(
            texts(Arc::new(a)),
            vec![Some("2023-11-14 22:13:20.25".to_string()), None]
        );
    }

    #[test]
    fn intervals_render_like_postgres() {
        let a = IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(14, 3, 3_723_000_000_000),
            IntervalMonthDayNano::new(0, 1, 0),
            IntervalMonthDayNano::new(0, 0, 0),
        ]);
        assert_eq!(
            texts(Arc::new(a)),
            vec![
                Some("1 year 2 mons 3 days 01:02:03".to_string()),
                Some("1 day".to_string()),
                Some("00:00:00".to_string()),
            ]
        );
    }

    #[test]
    fn lists_render_as_array_literals() {
        let a = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            Some(vec![]),
        ]);
        assert_eq!(
            texts(Arc::new(a)),
            vec![Some("{1,NULL,3}".to_string()), Some("{}".to_string())]
        );
        assert_eq!(quote_array_element("a b", true), "\"a b\"");
    }

    #[test]
    fn decimals_render_with_their_scale() {
        let a = Decimal128Array::from(vec![12345, -5])
            .with_precision_and_scale(10, 2)
            .expect("valid decimal");
        assert_eq!(
            texts(Arc::new(a)),
            vec![Some("123.45".to_string()), Some("-0.05".to_string())]
        );
    }

    #[test]
    fn strings_and_nulls_pass_through() {
        let a = StringArray::from(vec![Some(""), None, Some("x")]);
        assert_eq!(
            texts(Arc::new(a)),
            vec![Some(String::new()), None, Some("x".to_string())]
        );
    }
}
