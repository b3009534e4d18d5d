//! PostgreSQL's text spelling of single values (floats, timestamps, intervals, bytea,
//! array elements) and its binary `numeric` layout, used by [`super::encode`].

use sluice_common::error::{Result, SluiceError};

/// A float as PostgreSQL prints it (`NaN`, `Infinity`, shortest round-trip digits).
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        v.to_string()
    }
}

/// Bytes in PostgreSQL's hex `bytea` output format: `\\x00ff`.
pub fn hex_bytea(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("\\x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `2024-01-02 03:04:05.25` (UTC, with `+00` when the type has a zone).
pub fn timestamp_text(micros: i64, with_zone: bool) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let mut s = match arrow::temporal_conversions::timestamp_s_to_datetime(secs) {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => return micros.to_string(),
    };
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    if with_zone {
        s.push_str("+00");
    }
    s
}

/// PostgreSQL's default (`postgres`) interval style: `1 year 2 mons 3 days 04:05:06.5`.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    fn unit(n: i64, singular: &str, plural: &str) -> String {
        format!("{n} {}", if n == 1 || n == -1 { singular } else { plural })
    }
    let mut parts = Vec::new();
    let (years, mons) = (months / 12, months % 12);
    if years != 0 {
        parts.push(unit(years.into(), "year", "years"));
    }
    if mons != 0 {
        parts.push(unit(mons.into(), "mon", "mons"));
    }
    if days != 0 {
        parts.push(unit(days.into(), "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let m = micros.unsigned_abs();
        let (h, rest) = (m / 3_600_000_000, m % 3_600_000_000);
        let (min, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (s, frac) = (rest / 1_000_000, rest % 1_000_000);
        let mut t = format!("{sign}{h:02}:{min:02}:{s:02}");
        if frac != 0 {
            t.push('.');
            t.push_str(format!("{frac:06}").trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

/// An array element as it appears inside `{...}`: quoted and escaped when PostgreSQL
/// would quote it (empty, `NULL`-looking strings, delimiters, whitespace).
pub fn quote_array_element(s: &str, is_string: bool) -> String {
    let needs_quotes = s.is_empty()
        || (is_string && s.eq_ignore_ascii_case("null"))
        || s.chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
    if !needs_quotes {
        return s.to_string();
    }
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// PostgreSQL's binary `numeric`: digit count, weight, sign, display scale and base-10000
/// digits, from a decimal string such as `-123.4500`.
pub fn numeric_binary(text: &str) -> Result<Vec<u8>> {
    let bad = || SluiceError::internal(format!("cannot encode {text:?} as numeric"));
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let dscale = frac_part.len() as u16;
    let int_part = int_part.trim_start_matches('0');
    // Pad the integer part on the left and the fraction on the right to groups of four.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let int_digits = format!("{}{int_part}", "0".repeat(int_pad));
    let frac_digits = format!("{frac_part}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
            .collect()
    };
    let int_groups = group(&int_digits);
    let mut digits: Vec<i16> = int_groups.clone();
    digits.extend(group(&frac_digits));
    let mut weight = int_groups.len() as i16 - 1;
    // Strip leading zero groups (moving the weight) and trailing zero groups.
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_binary_matches_postgres_layout() {
        // 123.45 = 123 (weight 0) . 4500; dscale 2.
        assert_eq!(
            numeric_binary("123.45").expect("numeric"),
            vec![0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
        );
        // 10000 = 1 * 10000^1.
        assert_eq!(
            numeric_binary("10000").expect("numeric"),
            vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            numeric_binary("-0.05").expect("numeric"),
            vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4]
        );
        assert!(numeric_binary("abc").is_err());
    }
}
