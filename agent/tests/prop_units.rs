//! Durations and sizes (`config::units`): any text is a value or an error, never a panic; a
//! duration is never longer than `MAX_DURATION`; valid ones read back as what was written.

mod prop_support;

use std::time::Duration;

use hooker::config::units::{
    MAX_DURATION, de_byte_size, de_duration, parse_byte_size, parse_duration,
};
use proptest::prelude::*;

/// Any text: an answer, never a panic, and never past the limit.
fn check_duration(text: &str) -> Result<Duration, String> {
    let parsed = parse_duration(text);
    if let Ok(duration) = parsed {
        assert!(duration <= MAX_DURATION, "{text:?} gave {duration:?}");
    }
    parsed
}

fn check_size(text: &str) {
    let _ = parse_byte_size(text);
}

/// `duration` written as Go would write it, in whole units (`2h3m4s5ms6us7ns`).
fn components(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let mut out = String::new();
    let mut rest = nanos;
    for (unit, size) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[test]
fn the_corpus_parses_or_is_refused_without_panicking() {
    for line in prop_support::corpus_lines("units") {
        // `text => expected`: nanoseconds, bytes, or `error: <part of the message>`.
        let (text, expected) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("corpus line without ` => `: {line}"));
        let (kind, text) = text
            .split_once(' ')
            .unwrap_or_else(|| panic!("corpus line without a kind: {line}"));
        let got = match kind {
            "duration" => check_duration(text).map(|d| d.as_nanos().to_string()),
            "size" => parse_byte_size(text).map(|n| n.to_string()),
            other => panic!("unknown corpus kind {other}"),
        };
        match expected.strip_prefix("error: ") {
            Some(why) => {
                let error = got.expect_err(&line);
                assert!(error.contains(why), "{line}: {error}");
            }
            None => assert_eq!(got.as_deref(), Ok(expected), "{line}"),
        }
    }
}

proptest! {
    #![proptest_config(prop_support::config(2000))]

    #[test]
    fn any_text_is_a_duration_or_an_error(text in any::<String>()) {
        let _ = check_duration(&text);
        check_size(&text);
    }

    #[test]
    fn duration_like_text_is_a_duration_or_an_error(
        text in "[ +-]?([0-9]{0,30}(\\.[0-9]{0,25})?(ns|us|µs|μs|ms|s|m|h|d|x|S|e|)){1,4} ?"
    ) {
        let _ = check_duration(&text);
    }

    #[test]
    fn a_duration_in_whole_units_reads_back(nanos in 0..=MAX_DURATION.as_nanos()) {
        let duration = Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        );
        let written = components(duration);
        prop_assert_eq!(parse_duration(&written), Ok(duration), "{}", written);
        // Seconds with a fraction: `12.000000345s`.
        let decimal = format!("{}.{:09}s", duration.as_secs(), duration.subsec_nanos());
        prop_assert_eq!(parse_duration(&decimal), Ok(duration), "{}", decimal);
        // Whole seconds, bare.
        let seconds = Duration::from_secs(duration.as_secs());
        prop_assert_eq!(parse_duration(&duration.as_secs().to_string()), Ok(seconds));
    }

    #[test]
    fn a_duration_past_the_limit_is_too_long(
        extra in 1..=u128::from(u64::MAX),
        unit in prop::sample::select(vec![("ns", 1u128), ("s", 1_000_000_000), ("h", 3_600_000_000_000)]),
    ) {
        let (name, size) = unit;
        let count = MAX_DURATION.as_nanos() / size + extra;
        let written = format!("{count}{name}");
        let error = parse_duration(&written).unwrap_err();
        prop_assert!(error.contains("too long"), "{}: {}", written, error);
    }

    #[test]
    fn a_yaml_number_of_seconds_is_held_to_the_same_limit(seconds in any::<u64>()) {
        let parsed = de_duration(serde_json::json!(seconds));
        if seconds <= MAX_DURATION.as_secs() {
            prop_assert_eq!(parsed.ok().flatten(), Some(Duration::from_secs(seconds)));
        } else {
            prop_assert!(parsed.unwrap_err().to_string().contains("too long"));
        }
    }

    #[test]
    fn a_size_reads_back_or_is_too_large(
        number in prop_oneof![any::<u64>(), 0u64..100_000],
        unit in prop::sample::select(vec![
            ("", 1u64), ("b", 1), ("B", 1), ("k", 1 << 10), ("KB", 1 << 10), ("m", 1 << 20),
            ("Mb", 1 << 20), ("MB", 1 << 20), ("g", 1 << 30), ("GB", 1 << 30),
        ]),
        space in prop::bool::ANY,
    ) {
        let (name, scale) = unit;
        let written = format!("{number}{}{name}", if space && !name.is_empty() { " " } else { "" });
        match number.checked_mul(scale) {
            Some(bytes) => prop_assert_eq!(parse_byte_size(&written), Ok(bytes)),
            None => prop_assert!(parse_byte_size(&written).unwrap_err().contains("too large")),
        }
        // The same through the config's deserializer, as a string and as a YAML number.
        prop_assert_eq!(
            de_byte_size(serde_json::json!(written)).ok().flatten(),
            number.checked_mul(scale)
        );
        prop_assert_eq!(de_byte_size(serde_json::json!(number)).ok().flatten(), Some(number));
    }
}
