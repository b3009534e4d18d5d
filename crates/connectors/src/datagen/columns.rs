//! Column generators: the value of every column is a pure function of the row's global
//! index (its place in the source's whole stream, over all splits).
//!
//! That is what makes datagen deterministic and parallel: split `i` of `n` produces the
//! global rows `i, i + n, i + 2n, ...`, so the rows of a source are the same whatever its
//! parallelism, and a reader resumed at a position regenerates exactly the rows it
//! would have produced. Random values come from a counter-based hash of
//! `(seed, column name, row index)` rather than a stateful generator for the same
//! reason.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, PrimitiveArray,
    StringArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use sluice_common::error::{Result, SluiceError};

/// How one column's values are produced. Sequences count from `start` by the row's
/// global index; random generators draw from the hash stream `stream`.
#[derive(Debug, Clone, PartialEq)]
pub enum Generator {
    IntSequence {
        start: i64,
    },
    IntRandom {
        min: i64,
        max: i64,
        stream: u64,
    },
    FloatSequence {
        start: f64,
    },
    FloatRandom {
        min: f64,
        max: f64,
        stream: u64,
    },
    /// Decimal values in the column's scaled representation.
    DecimalSequence {
        start: i128,
        step: i128,
    },
    DecimalRandom {
        min: i128,
        max: i128,
        stream: u64,
    },
    /// The sequence's numbers, as text.
    StringSequence {
        start: i64,
    },
    /// Alphanumeric strings of a fixed length.
    StringRandom {
        length: usize,
        stream: u64,
    },
    BoolRandom {
        stream: u64,
    },
    /// DATE or TIMESTAMP values in the column's unit (days for DATE).
    TemporalSequence {
        start: i64,
        step: i64,
    },
    /// `base - uniform[0, max_past]`, in the column's unit.
    TemporalRandom {
        base: i64,
        max_past: i64,
        stream: u64,
    },
}

/// The random stream of one column: a user seed mixed with the column's name, so two
/// columns with the same options still differ, and reordering columns changes nothing.
pub fn column_stream(seed: u64, column: &str) -> u64 {
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in column.to_ascii_lowercase().bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(seed ^ mix64(hash))
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `lane`-th random word of global row `row` in `stream`.
fn random_word(stream: u64, row: u64, lane: u64) -> u64 {
    mix64(stream ^ mix64(row.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix64(lane)))
}

/// A uniform value in `0..span` (`span == 0` means the full 2^64 range).
fn below(word: u64, span: u128) -> u128 {
    if span == 0 {
        word as u128
    } else {
        (word as u128 * span) >> 64
    }
}

/// A uniform integer in `min..=max`.
fn random_in(word: u64, min: i128, max: i128) -> i128 {
    let span = (max - min + 1) as u128;
    if span > u64::MAX as u128 {
        // Only the full i64 range gets here; any 64 bits are then a uniform i64.
        return word as i64 as i128;
    }
    min + below(word, span) as i128
}

const ALPHANUMERIC: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters drawn from one random word (62^10 < 2^64).
const CHARS_PER_WORD: usize = 10;

impl Generator {
    /// The column for the global rows `rows` (ascending, all within the source's limit
    /// checked at parse time), in `data_type`.
    ///
    /// Values are produced by per-row loops: no Arrow kernel generates a sequence or a
    /// hash stream, and each loop is a tight map over a `Vec` collected into an array.
    pub fn generate(&self, rows: &[u64], data_type: &DataType) -> Result<ArrayRef> {
        let array: ArrayRef = match self {
            Generator::IntSequence { start } => {
                let values: Int64Array = rows.iter().map(|&g| Some(start + g as i64)).collect();
                return cast_to(Arc::new(values), data_type);
            }
            Generator::IntRandom { min, max, stream } => {
                let values: Int64Array = rows
                    .iter()
                    .map(|&g| {
                        Some(
                            random_in(random_word(*stream, g, 0), *min as i128, *max as i128)
                                as i64,
                        )
                    })
                    .collect();
                return cast_to(Arc::new(values), data_type);
            }
            Generator::FloatSequence { start } => {
                let values: Float64Array = rows.iter().map(|&g| Some(start + g as f64)).collect();
                return cast_to(Arc::new(values), data_type);
            }
            Generator::FloatRandom { min, max, stream } => {
                let values: Float64Array = rows
                    .iter()
                    .map(|&g| {
                        let unit = (random_word(*stream, g, 0) >> 11) as f64 / (1u64 << 53) as f64;
                        // Interpolating this way cannot overflow even over the full range.
                        Some(min * (1.0 - unit) + max * unit)
                    })
                    .collect();
                return cast_to(Arc::new(values), data_type);
            }
            Generator::DecimalSequence { start, step } => {
                let DataType::Decimal128(p, s) = data_type else {
                    return Err(mismatch("DECIMAL", data_type));
                };
                let values: Decimal128Array = rows
                    .iter()
                    .map(|&g| Some(start + g as i128 * step))
                    .collect();
                Arc::new(values.with_precision_and_scale(*p, *s)?)
            }
            Generator::DecimalRandom { min, max, stream } => {
                let DataType::Decimal128(p, s) = data_type else {
                    return Err(mismatch("DECIMAL", data_type));
                };
                let values: Decimal128Array = rows
                    .iter()
                    .map(|&g| Some(random_in(random_word(*stream, g, 0), *min, *max)))
                    .collect();
                Arc::new(values.with_precision_and_scale(*p, *s)?)
            }
            Generator::StringSequence { start } => {
                let values: StringArray = rows
                    .iter()
                    .map(|&g| Some((*start as i128 + g as i128).to_string()))
                    .collect();
                return cast_to(Arc::new(values), data_type);
            }
            Generator::StringRandom { length, stream } => {
                let mut text = String::with_capacity(*length);
                let values: StringArray = rows
                    .iter()
                    .map(|&g| {
                        text.clear();
                        let mut word = 0;
                        for i in 0..*length {
                            if i % CHARS_PER_WORD == 0 {
                                word = random_word(*stream, g, (i / CHARS_PER_WORD) as u64);
                            }
                            text.push(ALPHANUMERIC[(word % 62) as usize] as char);
                            word /= 62;
                        }
                        Some(text.clone())
                    })
                    .collect();
                return cast_to(Arc::new(values), data_type);
            }
            Generator::BoolRandom { stream } => {
                let values: BooleanArray = rows
                    .iter()
                    .map(|&g| Some(random_word(*stream, g, 0) >> 63 == 1))
                    .collect();
                Arc::new(values)
            }
            Generator::TemporalSequence { start, step } => {
                let values = rows.iter().map(|&g| start + g as i64 * step);
                temporal_array(values, data_type)?
            }
            Generator::TemporalRandom {
                base,
                max_past,
                stream,
            } => {
                let values = rows.iter().map(|&g| {
                    base - random_in(random_word(*stream, g, 0), 0, *max_past as i128) as i64
                });
                temporal_array(values, data_type)?
            }
        };
        Ok(array)
    }
}

fn cast_to(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if array.data_type() == data_type {
        Ok(array)
    } else {
        Ok(cast(&array, data_type)?)
    }
}

fn temporal_array(values: impl Iterator<Item = i64>, data_type: &DataType) -> Result<ArrayRef> {
    Ok(match data_type {
        DataType::Date32 => Arc::new(Date32Array::from_iter_values(values.map(|d| d as i32))),
        DataType::Timestamp(unit, tz) => match unit {
            TimeUnit::Second => Arc::new(
                PrimitiveArray::<TimestampSecondType>::from_iter_values(values)
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Millisecond => Arc::new(
                PrimitiveArray::<TimestampMillisecondType>::from_iter_values(values)
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Microsecond => Arc::new(
                PrimitiveArray::<TimestampMicrosecondType>::from_iter_values(values)
                    .with_timezone_opt(tz.clone()),
            ),
            TimeUnit::Nanosecond => Arc::new(
                PrimitiveArray::<TimestampNanosecondType>::from_iter_values(values)
                    .with_timezone_opt(tz.clone()),
            ),
        },
        other => return Err(mismatch("DATE or TIMESTAMP", other)),
    })
}

/// A generator meeting a type its options were not parsed for: a bug, not user error.
fn mismatch(expected: &str, found: &DataType) -> SluiceError {
    SluiceError::internal(format!(
        "datagen generator for {expected} asked to produce {found}"
    ))
}
