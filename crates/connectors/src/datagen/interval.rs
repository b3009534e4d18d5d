//! Durations in datagen options (`fields.<col>.max_past`, `fields.<col>.step`), in the
//! spellings RisingWave and Flink users write.

pub const NANOS_PER_SECOND: i128 = 1_000_000_000;
pub const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

/// Parses a duration: RisingWave's intervals (`'2h 37min'`, `'1 day'`, `'5 seconds'`) and
/// Flink's durations (`'5 s'`, `'1000'` meaning milliseconds). Returns nanoseconds;
/// `None` for anything else, including negative durations.
pub fn parse_interval_nanos(text: &str) -> Option<i128> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(millis) = text.parse::<u64>() {
        return Some(millis as i128 * 1_000_000);
    }
    let mut total: i128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].to_ascii_lowercase();
        rest = rest[unit_len..].trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let unit_nanos: i128 = match unit.as_str() {
            "ns" | "nanosecond" | "nanoseconds" => 1,
            "us" | "µs" | "microsecond" | "microseconds" => 1_000,
            "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => NANOS_PER_SECOND,
            "m" | "min" | "mins" | "minute" | "minutes" => 60 * NANOS_PER_SECOND,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * NANOS_PER_SECOND,
            "d" | "day" | "days" => NANOS_PER_DAY,
            "w" | "week" | "weeks" => 7 * NANOS_PER_DAY,
            _ => return None,
        };
        let nanos = number * unit_nanos as f64;
        if !nanos.is_finite() || nanos > 1e30 {
            return None;
        }
        total = total.checked_add(nanos.round() as i128)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_in_risingwave_and_flink_spellings() {
        let s = NANOS_PER_SECOND;
        assert_eq!(
            parse_interval_nanos("2h 37min"),
            Some((2 * 3600 + 37 * 60) * s)
        );
        assert_eq!(parse_interval_nanos("1 day"), Some(NANOS_PER_DAY));
        assert_eq!(parse_interval_nanos("5 s"), Some(5 * s));
        assert_eq!(parse_interval_nanos("1000"), Some(s));
        assert_eq!(parse_interval_nanos("1.5 hours"), Some(5400 * s));
        assert_eq!(parse_interval_nanos("500ms"), Some(s / 2));
        assert_eq!(parse_interval_nanos("-5s"), None);
        assert_eq!(parse_interval_nanos("5 fortnights"), None);
        assert_eq!(parse_interval_nanos(""), None);
    }
}
