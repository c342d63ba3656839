//! Durations and byte sizes as Postee writes them (`30s`, `2h45m`, `1d`, `10MB`).

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Parses `300ms`, `2h45m`, `1d`, `90` (bare number = seconds), Go and Postee style.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number before `{rest}`"
            ));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| {
            format!(
                "`{text}` is not a duration: bad number `{}`",
                &rest[..digits]
            )
        })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(format!(
                    "`{text}` is not a duration: missing unit after {number}"
                ));
            }
            other => {
                return Err(format!(
                    "`{text}` is not a duration: unknown unit `{other}` (use ms, s, m, h or d)"
                ));
            }
        };
        total += Duration::from_secs_f64(number * scale);
    }
    Ok(total)
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
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
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
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration accepted as a string (`"30s"`) or a bare number of seconds.
pub fn de_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| de::Error::custom(format!("`{n}` is not a whole number of seconds"))),
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
    fn byte_sizes_are_1024_based() {
        assert_eq!(parse_byte_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_byte_size("10 mb"), Ok(10 << 20));
        assert_eq!(parse_byte_size("3k"), Ok(3 << 10));
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert!(parse_byte_size("10TB").is_err());
        assert!(parse_byte_size("MB").is_err());
    }
}
