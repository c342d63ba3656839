//! Durations and byte sizes as Postee writes them (`30s`, `2h45m`, `1d`, `10MB`).
//!
//! Every config key and `HOOKER_*` setting that takes a duration or a size is read here, so the
//! limits hold everywhere: a duration is at most [`MAX_DURATION`] (a deadline computed from one
//! never overflows), and a text that is not a duration or a size is an error that says why,
//! never a panic.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// The longest duration accepted: 100 years (`876000h`). Anything longer is a typo or a way of
/// saying "never", and `now` plus it, in milliseconds, stays far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

const NANOS_PER_SEC: u128 = 1_000_000_000;
/// Fraction digits read: enough below a nanosecond at any unit (a day is 8.64e13 ns), small
/// enough that the arithmetic cannot overflow a u128.
const FRACTION_DIGITS: usize = 18;

/// Parses `300ms`, `2h45m`, `1.5s`, `1d`, `90` (bare number = seconds), Go and Postee style.
/// Units: `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, `d`. At most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.starts_with('-') {
        return Err(format!("`{text}` is not a duration: it is negative"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Whole seconds; more digits than a u128 holds are too long as well.
        let seconds = text.parse::<u128>().unwrap_or(u128::MAX);
        return checked_duration(text, seconds.saturating_mul(NANOS_PER_SEC));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number before `{rest}`"
            ));
        }
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "d" => 86_400 * NANOS_PER_SEC,
            "" => {
                return Err(format!(
                    "`{text}` is not a duration: missing unit after {number} (use ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "`{text}` is not a duration: unknown unit `{other}` (use ms, s, m, h or d)"
                ));
            }
        };
        let nanos = scaled(number, scale)
            .ok_or_else(|| format!("`{text}` is not a duration: bad number `{number}`"))?;
        total = total.saturating_add(nanos);
    }
    checked_duration(text, total)
}

/// `number` (digits with at most one `.`) times `scale` nanoseconds; `None` when it is not a
/// number; saturated when huge (the caller refuses it as too long).
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let whole = if whole.is_empty() {
        0
    } else {
        whole.parse::<u128>().unwrap_or(u128::MAX)
    };
    let fraction = &fraction[..fraction.len().min(FRACTION_DIGITS)];
    let fraction_nanos = if fraction.is_empty() {
        0
    } else {
        // Below 10^18 × 8.64e13: no overflow.
        fraction.parse::<u128>().ok()? * scale / 10u128.pow(fraction.len() as u32)
    };
    Some(whole.saturating_mul(scale).saturating_add(fraction_nanos))
}

/// `nanos` as a duration, refused past [`MAX_DURATION`].
fn checked_duration(text: &str, nanos: u128) -> Result<Duration, String> {
    if nanos > MAX_DURATION.as_nanos() {
        return Err(too_long(text));
    }
    let seconds = (nanos / NANOS_PER_SEC) as u64;
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Ok(Duration::new(seconds, subsec))
}

fn too_long(text: &str) -> String {
    format!("`{text}` is too long: the longest duration accepted is 100 years (876000h)")
}

/// Parses Postee's `max-db-size`: `^(\d+) ?([kKmMgG]?[bB]?)$`, 1024-based; bare number = bytes.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(format!(
            "`{text}` is not a size: expected digits, e.g. `10MB`"
        ));
    }
    if text[digits..].starts_with(['.', ',']) {
        return Err(format!(
            "`{text}` is not a size: use a whole number, e.g. `1536KB` for 1.5 MB"
        ));
    }
    let unit = text[digits..].trim_start().to_ascii_lowercase();
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}` is not a size: unknown unit `{other}` (use B, KB, MB or GB)"
            ));
        }
    };
    text[..digits]
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(scale))
        .ok_or_else(|| {
            format!(
                "`{text}` is too large: the largest size is {} bytes",
                u64::MAX
            )
        })
}

/// A duration accepted as a string (`"30s"`) or a bare number of seconds.
pub fn de_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(seconds) => parse_duration(&seconds.to_string())
                .map(Some)
                .map_err(de::Error::custom),
            None => Err(de::Error::custom(format!(
                "`{n}` is not a whole number of seconds"
            ))),
        },
        Some(serde_json::Value::String(s)) if s.trim().is_empty() || s.trim() == "0" => Ok(None),
        Some(serde_json::Value::String(s)) => {
            parse_duration(&s).map(Some).map_err(de::Error::custom)
        }
        Some(other) => Err(de::Error::custom(format!(
            "expected a duration such as \"30s\", got {other}"
        ))),
    }
}

/// A byte size accepted as a string (`"10MB"`) or a bare number of bytes.
pub fn de_byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("`{n}` is not a whole number of bytes"))),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => {
            parse_byte_size(&s).map(Some).map_err(de::Error::custom)
        }
        Some(other) => Err(de::Error::custom(format!(
            "expected a size such as \"10MB\", got {other}"
        ))),
    }
}

/// A value where null (a key with nothing under it) means the type's default.
pub fn de_null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A boolean that also accepts YAML 1.1 spellings (`yes`, `on`) and strings, as Postee's parser did.
pub fn de_lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" | "1" => Ok(true),
            "false" | "no" | "off" | "n" | "0" | "" => Ok(false),
            other => Err(de::Error::custom(format!(
                "`{other}` is not a boolean (use true or false)"
            ))),
        },
        Some(serde_json::Value::Number(n)) => Ok(n.as_u64() != Some(0)),
        Some(other) => Err(de::Error::custom(format!(
            "expected true or false, got {other}"
        ))),
    }
}

/// A list of strings that also accepts a single string (`labels: security`).
pub fn de_string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::String(s)) => Ok(vec![s]),
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::Bool(b) => Ok(b.to_string()),
                other => Err(de::Error::custom(format!(
                    "expected a string list item, got {other}"
                ))),
            })
            .collect(),
        Some(other) => Err(de::Error::custom(format!(
            "expected a list of strings, got {other}"
        ))),
    }
}

/// A string that also accepts a number (`port: 587` written where a string is expected).
pub fn de_opt_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(de::Error::custom(format!("expected a string, got {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_and_postee_style() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(
            parse_duration("2h45m"),
            Ok(Duration::from_secs(2 * 3600 + 45 * 60))
        );
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .contains("unknown unit `x`")
        );
        assert!(
            parse_duration("s")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn huge_and_odd_durations_are_errors_not_panics() {
        for (text, why) in [
            ("99999999999999999999s", "too long"),
            ("99999999999999999999", "too long"),
            ("876001h", "too long"),
            ("100000000000000000000000000000000000000000000h", "too long"),
            ("1e400s", "unknown unit `e`"),
            ("1.2.3s", "bad number `1.2.3`"),
            (".s", "bad number `.`"),
            ("-5s", "negative"),
            ("1.5", "missing unit"),
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_duration("1.5h30m"), Ok(Duration::from_secs(2 * 3600)));
        assert_eq!(parse_duration("2µs3ns"), Ok(Duration::from_nanos(2003)));
        // A whole number of seconds in YAML goes through the same limit.
        let yaml_number = serde_json::json!(u64::MAX);
        assert!(
            de_duration(yaml_number)
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn byte_sizes_are_1024_based() {
        assert_eq!(parse_byte_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_byte_size("10 mb"), Ok(10 << 20));
        assert_eq!(parse_byte_size("3k"), Ok(3 << 10));
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert!(parse_byte_size("10TB").is_err());
        assert!(parse_byte_size("MB").is_err());
        for (text, why) in [
            ("99999999999999999999", "too large"),
            ("17179869184GB", "too large"),
            ("1.5MB", "whole number"),
            ("-1MB", "expected digits"),
            ("10 MiB", "unknown unit `mib`"),
        ] {
            let error = parse_byte_size(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(parse_byte_size("17179869183GB"), Ok(17_179_869_183 << 30));
    }
}
