//! Turning the parameters of a `Bind` message into DataFusion `ScalarValue`s.
//!
//! Each parameter arrives as bytes in text or binary format, of the type the client
//! declared in `Parse` or (when it declared none) the type Sluice described. Text values
//! become strings and are cast with Arrow's cast kernels, so every type Arrow can parse
//! from text binds; binary values are decoded for the types drivers send in binary
//! (booleans, integers, floats, text, bytea, date, timestamp, numeric).

use arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;
use sluice_common::error::{Result, SluiceError, SqlState};

use super::types::arrow_type_of;

/// Decodes one parameter. `pg_type` is the type it was sent as, `target` the type the
/// statement expects (when known); the value is cast to `target`. Fails with `22P02`
/// when the bytes are not a valid value of the type.
pub fn decode_param(
    bytes: Option<&[u8]>,
    binary: bool,
    pg_type: &Type,
    target: Option<&DataType>,
) -> Result<ScalarValue> {
    let sent_as = arrow_type_of(pg_type).unwrap_or(DataType::Utf8);
    let value = match bytes {
        None => ScalarValue::try_from(target.unwrap_or(&sent_as))?,
        Some(bytes) if !binary => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                SluiceError::new(
                    SqlState::INVALID_TEXT_REPRESENTATION,
                    "parameter is not valid UTF-8",
                )
            })?;
            let text = ScalarValue::Utf8(Some(text.to_string()));
            let want = target.unwrap_or(&sent_as);
            if matches!(pg_type, &Type::BOOL) && want == &DataType::Boolean {
                // PostgreSQL accepts t/f, which Arrow's cast does not.
                ScalarValue::Boolean(Some(parse_bool(&text.to_string())?))
            } else {
                cast(text, want)?
            }
        }
        Some(bytes) => decode_binary(bytes, pg_type)?,
    };
    match target {
        Some(t) if value.data_type() != *t => cast(value, t),
        _ => Ok(value),
    }
}

fn cast(value: ScalarValue, to: &DataType) -> Result<ScalarValue> {
    value.cast_to(to).map_err(|e| {
        SluiceError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid parameter value for type {to}: {e}"),
        )
    })
}

fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        other => Err(SluiceError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type boolean: \"{other}\""),
        )),
    }
}

fn fixed<const N: usize>(bytes: &[u8], pg_type: &Type) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| {
        SluiceError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!(
                "binary {} parameter has {} bytes, expected {N}",
                pg_type.name(),
                bytes.len()
            ),
        )
    })
}

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn decode_binary(bytes: &[u8], pg_type: &Type) -> Result<ScalarValue> {
    Ok(match *pg_type {
        Type::BOOL => ScalarValue::Boolean(Some(fixed::<1>(bytes, pg_type)?[0] != 0)),
        Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(fixed(bytes, pg_type)?))),
        Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(fixed(bytes, pg_type)?))),
        Type::OID => ScalarValue::Int64(Some(u32::from_be_bytes(fixed(bytes, pg_type)?).into())),
        Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(fixed(bytes, pg_type)?))),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(fixed(bytes, pg_type)?))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(fixed(bytes, pg_type)?))),
        Type::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
        Type::DATE => ScalarValue::Date32(Some(
            i32::from_be_bytes(fixed(bytes, pg_type)?).saturating_add(PG_EPOCH_DAYS),
        )),
        Type::TIMESTAMP => ScalarValue::TimestampMicrosecond(
            Some(i64::from_be_bytes(fixed(bytes, pg_type)?).saturating_add(PG_EPOCH_MICROS)),
            None,
        ),
        Type::TIMESTAMPTZ => ScalarValue::TimestampMicrosecond(
            Some(i64::from_be_bytes(fixed(bytes, pg_type)?).saturating_add(PG_EPOCH_MICROS)),
            Some("+00:00".into()),
        ),
        Type::NUMERIC => {
            let text = numeric_text(bytes)?;
            let scale = text.split_once('.').map_or(0, |(_, f)| f.len()).min(38);
            cast(
                ScalarValue::Utf8(Some(text)),
                &DataType::Decimal128(38, scale as i8),
            )?
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            ScalarValue::Utf8(Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                SluiceError::new(
                    SqlState::INVALID_TEXT_REPRESENTATION,
                    "text parameter is not valid UTF-8",
                )
            })?))
        }
        _ => {
            return Err(SluiceError::unsupported(format!(
                "binary parameters of type {} are not supported; send it in text format",
                pg_type.name()
            )));
        }
    })
}

/// The decimal text of a binary `numeric`.
fn numeric_text(bytes: &[u8]) -> Result<String> {
    let bad = || {
        SluiceError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            "malformed binary numeric parameter",
        )
    };
    let word = |i: usize| -> Result<i16> {
        let b = bytes.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::try_from(word(0)?).map_err(|_| bad())?;
    let weight = i64::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = usize::try_from(word(3)?).map_err(|_| bad())?;
    if sign == 0xC000 {
        return Err(SluiceError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            "NaN is not a supported numeric parameter",
        ));
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<_>>>()?;
    let mut int_part = String::new();
    let mut frac_part = String::new();
    for (i, d) in digits.iter().enumerate() {
        let pos = weight - i as i64;
        let s = format!("{d:04}");
        if pos >= 0 {
            int_part.push_str(&s);
        } else {
            // Groups between the point and this one are zero.
            while (frac_part.len() as i64) < (-pos - 1) * 4 {
                frac_part.push_str("0000");
            }
            frac_part.push_str(&s);
        }
    }
    // Trailing zero groups of the integer part were stripped by the sender.
    let last_int_pos = weight - digits.len() as i64 + 1;
    if weight >= 0 && last_int_pos > 0 {
        int_part.push_str(&"0000".repeat(last_int_pos as usize));
    }
    let int_part = int_part.trim_start_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let mut frac_part: String = frac_part.chars().take(dscale).collect();
    while frac_part.len() < dscale {
        frac_part.push('0');
    }
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if dscale > 0 {
        format!("{sign}{int_part}.{frac_part}")
    } else {
        format!("{sign}{int_part}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parameters_cast_to_the_described_type() {
        let v = decode_param(Some(b"41"), false, &Type::UNKNOWN, Some(&DataType::Int32))
            .expect("decodes");
        assert_eq!(v, ScalarValue::Int32(Some(41)));
        let v = decode_param(Some(b"t"), false, &Type::BOOL, None).expect("decodes");
        assert_eq!(v, ScalarValue::Boolean(Some(true)));
    }

    #[test]
    fn binary_int4_decodes_and_bad_lengths_fail() {
        let v = decode_param(Some(&7i32.to_be_bytes()), true, &Type::INT4, None).expect("decodes");
        assert_eq!(v, ScalarValue::Int32(Some(7)));
        let e = decode_param(Some(&[1, 2]), true, &Type::INT4, None).expect_err("2 bytes");
        assert_eq!(e.state, SqlState::INVALID_TEXT_REPRESENTATION);
    }

    #[test]
    fn binary_numeric_round_trips_through_text() {
        assert_eq!(
            numeric_text(&[0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]).expect("numeric"),
            "123.45"
        );
        assert_eq!(
            numeric_text(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 1]).expect("numeric"),
            "10000"
        );
        assert_eq!(
            numeric_text(&[0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4]).expect("numeric"),
            "-0.05"
        );
    }

    #[test]
    fn null_parameters_take_the_target_type() {
        let v = decode_param(None, false, &Type::INT8, Some(&DataType::Int32)).expect("null");
        assert_eq!(v, ScalarValue::Int32(None));
    }
}
