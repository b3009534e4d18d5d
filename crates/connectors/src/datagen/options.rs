//! Datagen's `WITH` options, parsed and checked against the source's schema.
//!
//! Both spellings users bring are accepted: RisingWave's (`datagen.rows.per.second`,
//! `fields.<col>.max_past`) and Flink's (`rows-per-second`, `number-of-rows`,
//! `fields.<col>.max-past`). Everything is checked here, once, so that `CREATE SOURCE`
//! fails with the offending option named and a reader never meets a bad value.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::compute::kernels::cast_utils::{Parser, parse_decimal, string_to_timestamp_nanos};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Schema, TimeUnit};
use sluice_common::error::{Result, SluiceError};

use super::columns::{Generator, column_stream};
use super::interval::{NANOS_PER_DAY, NANOS_PER_SECOND, parse_interval_nanos};

/// Total rows per second (over all splits) when no rate option is given.
pub const DEFAULT_ROWS_PER_SECOND: f64 = 1000.0;
/// Length of random strings when `fields.<col>.length` is not given.
pub const DEFAULT_STRING_LENGTH: usize = 10;
/// Upper bound on `fields.<col>.length`, so one option cannot exhaust memory.
const MAX_STRING_LENGTH: usize = 1 << 20;

const RATE_KEYS: [&str; 2] = ["datagen.rows.per.second", "rows-per-second"];
const TOTAL_KEYS: [&str; 2] = ["datagen.rows.total", "number-of-rows"];
const IGNORED_KEYS: [&str; 2] = ["connector", "datagen.split.num"];
const FIELD_PROPERTIES: [&str; 10] = [
    "kind", "start", "end", "step", "min", "max", "seed", "length", "max_past", "basetime",
];

/// Everything a datagen reader needs, for every split alike.
#[derive(Debug, Clone)]
pub struct DatagenConfig {
    /// Rows per second over all splits, in thousandths (so fractional rates stay exact).
    pub milli_rows_per_second: u128,
    /// One generator per schema column, in schema order.
    pub columns: Vec<Generator>,
    /// Rows (over all splits) after which the source ends because the user bounded it
    /// (a sequence `end`, `number-of-rows`); `None` for an unbounded source.
    pub bound: Option<u64>,
    /// Rows (over all splits) after which the source ends in any case: the bound, or the
    /// point where a sequence without `end` would leave its column type.
    pub limit: u64,
}

/// Parses and checks `options` against `schema`.
pub fn parse(options: &BTreeMap<String, String>, schema: &Schema) -> Result<DatagenConfig> {
    let mut per_column: Vec<BTreeMap<&'static str, (&str, &str)>> =
        vec![BTreeMap::new(); schema.fields().len()];
    for (key, value) in options {
        let key = key.as_str();
        if RATE_KEYS.contains(&key) || TOTAL_KEYS.contains(&key) || IGNORED_KEYS.contains(&key) {
            continue;
        }
        let Some(rest) = key.strip_prefix("fields.") else {
            return Err(SluiceError::invalid_parameter(format!(
                "unknown datagen option \"{key}\"; allowed: {}, {}, datagen.split.num and \
                 fields.<column>.<property>",
                RATE_KEYS.join(", "),
                TOTAL_KEYS.join(", ")
            )));
        };
        let Some((column, property)) = rest.rsplit_once('.') else {
            return Err(SluiceError::invalid_parameter(format!(
                "datagen option \"{key}\" must have the form fields.<column>.<property>"
            )));
        };
        let normalized = property.replace('-', "_");
        let Some(&property) = FIELD_PROPERTIES.iter().find(|p| **p == normalized) else {
            return Err(SluiceError::invalid_parameter(format!(
                "unknown datagen option \"{key}\": property \"{property}\" is not one of {}",
                FIELD_PROPERTIES.join(", ")
            )));
        };
        let index = find_column(schema, column, key)?;
        if let Some((other, _)) = per_column[index].insert(property, (key, value)) {
            return Err(SluiceError::invalid_parameter(format!(
                "datagen options \"{other}\" and \"{key}\" both set {property} of column \"{}\"",
                schema.field(index).name()
            )));
        }
    }

    let rate = match one_of(options, &RATE_KEYS)? {
        None => DEFAULT_ROWS_PER_SECOND,
        Some((key, value)) => match value.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && r >= 0.001 => r,
            _ => {
                return Err(SluiceError::invalid_parameter(format!(
                    "invalid value \"{value}\" for datagen option \"{key}\": expected a \
                     positive number of rows per second (at least 0.001)"
                )));
            }
        },
    };
    let mut bound = match one_of(options, &TOTAL_KEYS)? {
        None => None,
        Some((key, value)) => Some(value.trim().parse::<u64>().map_err(|_| {
            SluiceError::invalid_parameter(format!(
                "invalid value \"{value}\" for datagen option \"{key}\": expected a \
                 non-negative whole number of rows"
            ))
        })?),
    };

    let now_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let mut limit = u64::MAX;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, props) in schema.fields().iter().zip(&per_column) {
        let spec = FieldOptions {
            column: field.name(),
            props,
        };
        let (generator, length) = spec.generator(field.data_type(), now_nanos)?;
        if let Some(length) = length {
            if length.explicit {
                bound = Some(bound.map_or(length.rows, |b| b.min(length.rows)));
            }
            limit = limit.min(length.rows);
        }
        columns.push(generator);
    }
    if let Some(bound) = bound {
        limit = limit.min(bound);
    }
    Ok(DatagenConfig {
        milli_rows_per_second: (rate * 1000.0).round() as u128,
        columns,
        bound,
        limit,
    })
}

/// How many rows a sequence column can produce, and whether that came from an `end`
/// the user wrote (which makes the source bounded) or from the column type's range.
struct SequenceLength {
    rows: u64,
    explicit: bool,
}

/// The `fields.<column>.*` options of one column.
struct FieldOptions<'a> {
    column: &'a str,
    props: &'a BTreeMap<&'static str, (&'a str, &'a str)>,
}

impl FieldOptions<'_> {
    fn get(&self, property: &str) -> Option<(&str, &str)> {
        self.props.get(property).map(|(k, v)| (*k, v.trim()))
    }

    fn invalid(
        &self,
        property: &str,
        value: &str,
        expected: impl std::fmt::Display,
    ) -> SluiceError {
        let key = self.props.get(property).map_or_else(
            || format!("fields.{}.{property}", self.column),
            |(k, _)| k.to_string(),
        );
        SluiceError::invalid_parameter(format!(
            "invalid value \"{value}\" for datagen option \"{key}\": expected {expected}"
        ))
    }

    /// Rejects properties that do not apply to this column's kind and type, so a typo'd
    /// or misplaced option is reported rather than silently ignored.
    fn allow_only(&self, allowed: &[&str], what: &str) -> Result<()> {
        for (property, (key, _)) in self.props {
            if !allowed.contains(property) {
                return Err(SluiceError::invalid_parameter(format!(
                    "datagen option \"{key}\" does not apply to column \"{}\" ({what}); \
                     options for it: {}",
                    self.column,
                    allowed
                        .iter()
                        .map(|p| format!("fields.{}.{p}", self.column))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    fn is_sequence(&self) -> Result<bool> {
        match self.get("kind") {
            None => Ok(false),
            Some((_, kind)) if kind.eq_ignore_ascii_case("sequence") => Ok(true),
            Some((_, kind)) if kind.eq_ignore_ascii_case("random") => Ok(false),
            Some((_, kind)) => Err(self.invalid("kind", kind, "'sequence' or 'random'")),
        }
    }

    fn seed(&self) -> Result<u64> {
        match self.get("seed") {
            None => Ok(0),
            Some((_, v)) => v
                .parse::<u64>()
                .or_else(|_| v.parse::<i64>().map(|s| s as u64))
                .map_err(|_| self.invalid("seed", v, "a whole number")),
        }
    }

    fn stream(&self) -> Result<u64> {
        Ok(column_stream(self.seed()?, self.column))
    }

    fn parsed<T>(
        &self,
        property: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>> {
        match self.get(property) {
            None => Ok(None),
            Some((_, v)) => parse(v)
                .map(Some)
                .ok_or_else(|| self.invalid(property, v, expected)),
        }
    }

    fn generator(
        &self,
        data_type: &DataType,
        now_nanos: i128,
    ) -> Result<(Generator, Option<SequenceLength>)> {
        let sequence = self.is_sequence()?;
        let kind = if sequence {
            "kind sequence"
        } else {
            "kind random"
        };
        match data_type {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => {
                let (type_min, type_max) = integer_range(data_type);
                let expected = format!("a whole number between {type_min} and {type_max}");
                let int = |s: &str| {
                    s.parse::<i64>()
                        .ok()
                        .filter(|v| (type_min..=type_max).contains(v))
                };
                if sequence {
                    self.allow_only(&["kind", "start", "end"], kind)?;
                    let start = self
                        .parsed("start", int, &expected)?
                        .unwrap_or(0.max(type_min));
                    let end = self.parsed("end", int, &expected)?;
                    let length = self.sequence_length(
                        start as i128,
                        end.map(|e| e as i128),
                        type_max as i128,
                        1,
                    )?;
                    Ok((Generator::IntSequence { start }, Some(length)))
                } else {
                    self.allow_only(&["kind", "min", "max", "seed"], kind)?;
                    let min = self.parsed("min", int, &expected)?.unwrap_or(type_min);
                    let max = self.parsed("max", int, &expected)?.unwrap_or(type_max);
                    self.check_min_max(min, max)?;
                    Ok((
                        Generator::IntRandom {
                            min,
                            max,
                            stream: self.stream()?,
                        },
                        None,
                    ))
                }
            }
            DataType::Float32 | DataType::Float64 => {
                let type_max = if *data_type == DataType::Float32 {
                    f32::MAX as f64
                } else {
                    f64::MAX
                };
                let float = |s: &str| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && v.abs() <= type_max)
                };
                let expected = format!("a finite number of type {data_type}");
                if sequence {
                    self.allow_only(&["kind", "start", "end"], kind)?;
                    let start = self.parsed("start", float, &expected)?.unwrap_or(0.0);
                    let end = self.parsed("end", float, &expected)?;
                    let length = match end {
                        Some(end) if end < start => return Err(self.start_after_end()),
                        Some(end) => SequenceLength {
                            rows: ((end - start).floor() as u64).saturating_add(1),
                            explicit: true,
                        },
                        None => SequenceLength {
                            rows: u64::MAX,
                            explicit: false,
                        },
                    };
                    Ok((Generator::FloatSequence { start }, Some(length)))
                } else {
                    self.allow_only(&["kind", "min", "max", "seed"], kind)?;
                    let min = self.parsed("min", float, &expected)?.unwrap_or(-type_max);
                    let max = self.parsed("max", float, &expected)?.unwrap_or(type_max);
                    if min > max {
                        return Err(self.min_above_max());
                    }
                    Ok((
                        Generator::FloatRandom {
                            min,
                            max,
                            stream: self.stream()?,
                        },
                        None,
                    ))
                }
            }
            DataType::Decimal128(precision, scale) => {
                let (precision, scale) = (*precision, *scale);
                let type_max = 10i128.pow(precision as u32) - 1;
                let expected = format!("a number that fits DECIMAL({precision}, {scale})");
                let decimal = |s: &str| parse_decimal::<Decimal128Type>(s, precision, scale).ok();
                if sequence {
                    self.allow_only(&["kind", "start", "end"], kind)?;
                    let step = 10i128.checked_pow(scale.max(0) as u32).filter(|s| *s <= type_max).ok_or_else(|| {
                        SluiceError::invalid_parameter(format!(
                            "column \"{}\" of type DECIMAL({precision}, {scale}) cannot hold a sequence \
                             counting in steps of 1; use kind 'random' or a wider precision",
                            self.column
                        ))
                    })?;
                    let start = self.parsed("start", decimal, &expected)?.unwrap_or(0);
                    let end = self.parsed("end", decimal, &expected)?;
                    let length = self.sequence_length(start, end, type_max, step)?;
                    Ok((Generator::DecimalSequence { start, step }, Some(length)))
                } else {
                    self.allow_only(&["kind", "min", "max", "seed"], kind)?;
                    let min = self.parsed("min", decimal, &expected)?.unwrap_or(-type_max);
                    let max = self.parsed("max", decimal, &expected)?.unwrap_or(type_max);
                    self.check_min_max(min, max)?;
                    Ok((
                        Generator::DecimalRandom {
                            min,
                            max,
                            stream: self.stream()?,
                        },
                        None,
                    ))
                }
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                if sequence {
                    self.allow_only(&["kind", "start", "end"], kind)?;
                    let int = |s: &str| s.parse::<i64>().ok();
                    let start = self.parsed("start", int, "a whole number")?.unwrap_or(0);
                    let end = self.parsed("end", int, "a whole number")?;
                    let length = self.sequence_length(
                        start as i128,
                        end.map(|e| e as i128),
                        i64::MAX as i128,
                        1,
                    )?;
                    Ok((Generator::StringSequence { start }, Some(length)))
                } else {
                    self.allow_only(&["kind", "length", "seed"], kind)?;
                    let length = self
                        .parsed(
                            "length",
                            |s| s.parse::<usize>().ok().filter(|l| *l <= MAX_STRING_LENGTH),
                            &format!("a length between 0 and {MAX_STRING_LENGTH}"),
                        )?
                        .unwrap_or(DEFAULT_STRING_LENGTH);
                    Ok((
                        Generator::StringRandom {
                            length,
                            stream: self.stream()?,
                        },
                        None,
                    ))
                }
            }
            DataType::Boolean => {
                if sequence {
                    return Err(SluiceError::invalid_parameter(format!(
                        "datagen option \"{}\" = 'sequence' is not supported for BOOLEAN column \"{}\"; \
                         use kind 'random'",
                        self.get("kind").map_or("", |(k, _)| k),
                        self.column
                    )));
                }
                self.allow_only(&["kind", "seed"], kind)?;
                Ok((
                    Generator::BoolRandom {
                        stream: self.stream()?,
                    },
                    None,
                ))
            }
            DataType::Date32 => self.temporal(
                TemporalUnit {
                    nanos: NANOS_PER_DAY,
                    name: "day",
                },
                sequence,
                now_nanos,
                |s| Date32Type::parse(s).map(|d| d as i128 * NANOS_PER_DAY),
                "a date such as '2024-01-31'",
                365 * NANOS_PER_DAY,
            ),
            DataType::Timestamp(unit, _) => self.temporal(
                TemporalUnit::of(*unit),
                sequence,
                now_nanos,
                |s| string_to_timestamp_nanos(s).ok().map(i128::from),
                "a timestamp such as '2024-01-31 12:00:00'",
                NANOS_PER_DAY,
            ),
            other => Err(SluiceError::invalid_parameter(format!(
                "datagen cannot generate column \"{}\" of type {other}; supported types: BOOLEAN, \
                 SMALLINT, INT, BIGINT, REAL, DOUBLE, DECIMAL, VARCHAR/TEXT, DATE, TIMESTAMP, TIMESTAMPTZ",
                self.column
            ))),
        }
    }

    /// DATE and TIMESTAMP columns. Values are computed in nanoseconds and stored in the
    /// column's unit (days for DATE).
    fn temporal(
        &self,
        unit: TemporalUnit,
        sequence: bool,
        now_nanos: i128,
        parse_nanos: impl Fn(&str) -> Option<i128>,
        expected: &str,
        default_max_past: i128,
    ) -> Result<(Generator, Option<SequenceLength>)> {
        let kind = if sequence {
            "kind sequence"
        } else {
            "kind random"
        };
        let interval = |s: &str| parse_interval_nanos(s);
        let interval_expected =
            "an interval such as '2h 37min', '1 day' or '500ms' (a bare number is milliseconds)";
        if sequence {
            self.allow_only(&["kind", "start", "end", "step"], kind)?;
            let Some(start) = self.parsed("start", &parse_nanos, expected)? else {
                return Err(SluiceError::invalid_parameter(format!(
                    "datagen option \"fields.{}.start\" is required for sequence column \"{}\" of \
                     type {}: expected {expected}",
                    self.column, self.column, unit.name
                )));
            };
            let end = self.parsed("end", &parse_nanos, expected)?;
            let step = self
                .parsed("step", interval, interval_expected)?
                .unwrap_or(unit.nanos.max(NANOS_PER_SECOND));
            if step < unit.nanos || step % unit.nanos != 0 {
                let (_, v) = self.get("step").unwrap_or(("", ""));
                return Err(self.invalid("step", v, format!("a whole number of {}s", unit.name)));
            }
            let (start, step) = (start.div_euclid(unit.nanos), step / unit.nanos);
            let end = end.map(|e| e.div_euclid(unit.nanos));
            let length = self.sequence_length(start, end, unit.max(), step)?;
            Ok((
                Generator::TemporalSequence {
                    start: start as i64,
                    step: step as i64,
                },
                Some(length),
            ))
        } else {
            self.allow_only(&["kind", "max_past", "basetime", "seed"], kind)?;
            let base = self
                .parsed("basetime", &parse_nanos, expected)?
                .unwrap_or(now_nanos);
            let max_past = self
                .parsed("max_past", interval, interval_expected)?
                .unwrap_or(default_max_past);
            let (base, max_past) = (base.div_euclid(unit.nanos), max_past / unit.nanos);
            if base - max_past < -unit.max() || base > unit.max() {
                let (_, v) = self.get("max_past").unwrap_or(("", ""));
                return Err(self.invalid(
                    "max_past",
                    v,
                    "an interval that keeps values within the column type's range",
                ));
            }
            Ok((
                Generator::TemporalRandom {
                    base: base as i64,
                    max_past: max_past as i64,
                    stream: self.stream()?,
                },
                None,
            ))
        }
    }

    /// The number of values `start, start + step, ...` up to `end` (or, without an end,
    /// up to `type_max`), checking that the sequence is not empty.
    fn sequence_length(
        &self,
        start: i128,
        end: Option<i128>,
        type_max: i128,
        step: i128,
    ) -> Result<SequenceLength> {
        let (last, explicit) = match end {
            Some(end) => (end, true),
            None => (type_max, false),
        };
        if last < start {
            return Err(if explicit {
                self.start_after_end()
            } else {
                let (_, v) = self.get("start").unwrap_or(("", ""));
                self.invalid("start", v, format!("at most {type_max}"))
            });
        }
        let rows = ((last - start) / step + 1).min(u64::MAX as i128) as u64;
        Ok(SequenceLength { rows, explicit })
    }

    fn check_min_max<T: PartialOrd>(&self, min: T, max: T) -> Result<()> {
        if min > max {
            Err(self.min_above_max())
        } else {
            Ok(())
        }
    }

    fn min_above_max(&self) -> SluiceError {
        let value = |p| self.get(p).map_or("(default)", |(_, v)| v).to_string();
        SluiceError::invalid_parameter(format!(
            "datagen options for column \"{}\": fields.{}.min ({}) is greater than fields.{}.max ({})",
            self.column,
            self.column,
            value("min"),
            self.column,
            value("max")
        ))
    }

    fn start_after_end(&self) -> SluiceError {
        let value = |p| self.get(p).map_or("(default)", |(_, v)| v).to_string();
        SluiceError::invalid_parameter(format!(
            "datagen options for column \"{}\": fields.{}.start ({}) is after fields.{}.end ({})",
            self.column,
            self.column,
            value("start"),
            self.column,
            value("end")
        ))
    }
}

/// The unit a DATE or TIMESTAMP column stores, in nanoseconds.
struct TemporalUnit {
    nanos: i128,
    name: &'static str,
}

impl TemporalUnit {
    fn of(unit: TimeUnit) -> Self {
        let (nanos, name) = match unit {
            TimeUnit::Second => (NANOS_PER_SECOND, "second"),
            TimeUnit::Millisecond => (1_000_000, "millisecond"),
            TimeUnit::Microsecond => (1_000, "microsecond"),
            TimeUnit::Nanosecond => (1, "nanosecond"),
        };
        TemporalUnit { nanos, name }
    }

    /// The largest value the column holds, in its unit.
    fn max(&self) -> i128 {
        if self.nanos == NANOS_PER_DAY {
            i32::MAX as i128
        } else {
            i64::MAX as i128
        }
    }
}

fn integer_range(data_type: &DataType) -> (i64, i64) {
    match data_type {
        DataType::Int8 => (i8::MIN as i64, i8::MAX as i64),
        DataType::Int16 => (i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        DataType::UInt8 => (0, u8::MAX as i64),
        DataType::UInt16 => (0, u16::MAX as i64),
        DataType::UInt32 => (0, u32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Finds the column a `fields.<column>.*` option names. Option keys arrive lower-cased,
/// so a column declared with capitals (quoted) is matched case-insensitively when that
/// is unambiguous.
fn find_column(schema: &Schema, column: &str, key: &str) -> Result<usize> {
    if let Some(i) = schema.fields().iter().position(|f| f.name() == column) {
        return Ok(i);
    }
    let matches: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().eq_ignore_ascii_case(column))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        _ => Err(SluiceError::invalid_parameter(format!(
            "datagen option \"{key}\" names column \"{column}\", which the source does not have; \
             its columns are: {}",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The value of the first of `keys` present, with the key it came from. Two spellings of
/// the same option with different values are an error rather than a silent choice.
fn one_of<'a>(
    options: &'a BTreeMap<String, String>,
    keys: &[&str],
) -> Result<Option<(&'a str, &'a str)>> {
    let mut found: Option<(&str, &str)> = None;
    for key in keys {
        if let Some((k, v)) = options.get_key_value(*key) {
            if let Some((first, value)) = found {
                if value.trim() != v.trim() {
                    return Err(SluiceError::invalid_parameter(format!(
                        "datagen options \"{first}\" = '{value}' and \"{k}\" = '{v}' disagree; give one of them"
                    )));
                }
            } else {
                found = Some((k, v));
            }
        }
    }
    Ok(found)
}
