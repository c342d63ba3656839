//! MessagePack and Fluent Forward (`intake::msgpack`, `intake::forward`): any bytes decode to a
//! value, "incomplete" or an error, never a panic; a value's prefixes are incomplete and say how
//! much is missing (the Forward reader waits on that); what an encoder writes decodes to the same
//! value, and to the JSON it was made from; a Forward message's records become its events.

mod prop_support;

use base64::Engine;
use hooker::intake::forward::message_events;
use hooker::intake::msgpack::{Budget, DecodeError, Value, encode_ack};
use proptest::prelude::*;
use serde_json::Value as Json;

/// Decodes with a 10 MiB budget (`HOOKER_MAX_BODY` defaults to 16MB): what these tests generate
/// stays far below it, so a `TooLarge` here is a budget that charges too much.
fn decode(bytes: &[u8]) -> Result<(Value, usize), DecodeError> {
    hooker::intake::msgpack::decode(bytes, &mut Budget::new(10 << 20))
}

// === A small MessagePack encoder, written from the specification ===

/// How to write a value when more than one encoding fits: the smallest or a wider one (a
/// decoder must read both).
#[derive(Debug, Clone, Copy)]
struct Width(u8);

fn encode(value: &Value, width: Width, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::UInt(n) => encode_uint(*n, width, out),
        Value::Int(n) => encode_int(*n, width, out),
        Value::Float(f) => {
            let single = *f as f32;
            if width.0.is_multiple_of(2) && f64::from(single).to_bits() == f.to_bits() {
                out.push(0xca);
                out.extend(single.to_bits().to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend(f.to_bits().to_be_bytes());
            }
        }
        Value::Str(bytes) => {
            let n = bytes.len();
            match (n, width.0 % 3) {
                (0..=31, 0) => out.push(0xa0 | n as u8),
                (0..=0xff, 0 | 1) => out.extend([0xd9, n as u8]),
                (0..=0xffff, 0..=1) => {
                    out.push(0xda);
                    out.extend((n as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xdb);
                    out.extend((n as u32).to_be_bytes());
                }
            }
            out.extend(bytes);
        }
        Value::Bin(bytes) => {
            let n = bytes.len();
            match (n, width.0 % 3) {
                (0..=0xff, 0) => out.extend([0xc4, n as u8]),
                (0..=0xffff, 0 | 1) => {
                    out.push(0xc5);
                    out.extend((n as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xc6);
                    out.extend((n as u32).to_be_bytes());
                }
            }
            out.extend(bytes);
        }
        Value::Array(items) => {
            let n = items.len();
            match (n, width.0 % 3) {
                (0..=15, 0) => out.push(0x90 | n as u8),
                (0..=0xffff, 0 | 1) => {
                    out.push(0xdc);
                    out.extend((n as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xdd);
                    out.extend((n as u32).to_be_bytes());
                }
            }
            for item in items {
                encode(item, Width(width.0.rotate_left(1)), out);
            }
        }
        Value::Map(pairs) => {
            let n = pairs.len();
            match (n, width.0 % 3) {
                (0..=15, 0) => out.push(0x80 | n as u8),
                (0..=0xffff, 0 | 1) => {
                    out.push(0xde);
                    out.extend((n as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xdf);
                    out.extend((n as u32).to_be_bytes());
                }
            }
            for (key, value) in pairs {
                encode(key, Width(width.0.rotate_left(1)), out);
                encode(value, Width(width.0.rotate_left(2)), out);
            }
        }
        Value::Ext(kind, bytes) => {
            let n = bytes.len();
            let fixed = match n {
                1 => Some(0xd4),
                2 => Some(0xd5),
                4 => Some(0xd6),
                8 => Some(0xd7),
                16 => Some(0xd8),
                _ => None,
            };
            match (fixed, n, width.0 % 3) {
                (Some(marker), _, 0) => out.push(marker),
                (_, 0..=0xff, 0 | 1) => out.extend([0xc7, n as u8]),
                (_, 0..=0xffff, _) => {
                    out.push(0xc8);
                    out.extend((n as u16).to_be_bytes());
                }
                _ => {
                    out.push(0xc9);
                    out.extend((n as u32).to_be_bytes());
                }
            }
            out.push(*kind as u8);
            out.extend(bytes);
        }
    }
}

/// Writes `n` in `bytes` big-endian bytes after `marker`.
fn put(out: &mut Vec<u8>, marker: u8, n: u64, bytes: usize) {
    out.push(marker);
    out.extend(&n.to_be_bytes()[8 - bytes..]);
}

/// An unsigned integer (decoded as `UInt`): a positive fixint or the `uint` family, at least
/// as wide as it needs.
fn encode_uint(n: u64, width: Width, out: &mut Vec<u8>) {
    let smallest = match n {
        0..=0x7f => 0,
        0x80..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 3,
        _ => 4,
    };
    match smallest.max(width.0 % 5) {
        0 => out.push(n as u8),
        1 => put(out, 0xcc, n, 1),
        2 => put(out, 0xcd, n, 2),
        3 => put(out, 0xce, n, 4),
        _ => put(out, 0xcf, n, 8),
    }
}

/// A signed integer (decoded as `Int`): a negative fixint or the `int` family, at least as wide
/// as it needs. A non-negative `Int` only comes from the `int` family.
fn encode_int(n: i64, width: Width, out: &mut Vec<u8>) {
    let smallest = match n {
        -32..=-1 => 0,
        -128..=127 => 1,
        -32_768..=32_767 => 2,
        -2_147_483_648..=2_147_483_647 => 3,
        _ => 4,
    };
    let bits = n as u64;
    match smallest.max(width.0 % 5) {
        0 => out.push(n as i8 as u8),
        1 => put(out, 0xd0, bits & 0xff, 1),
        2 => put(out, 0xd1, bits & 0xffff, 2),
        3 => put(out, 0xd2, bits & 0xffff_ffff, 4),
        _ => put(out, 0xd3, bits, 8),
    }
}

/// `value` as MessagePack, smallest encodings first.
fn encoded(value: &Value, width: Width) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, width, &mut out);
    out
}

/// JSON as MessagePack the way Fluent Bit writes records: maps with string keys.
fn from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::UInt(u),
            (None, Some(i), _) => Value::Int(i),
            (_, _, Some(f)) => Value::Float(f),
            _ => Value::Nil,
        },
        Json::String(s) => Value::Str(s.as_bytes().to_vec()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        Json::Object(members) => Value::Map(
            members
                .iter()
                .map(|(k, v)| (Value::Str(k.as_bytes().to_vec()), from_json(v)))
                .collect(),
        ),
    }
}

fn text(s: &str) -> Value {
    Value::Str(s.as_bytes().to_vec())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (text(k), v)).collect())
}

// === Strategies ===

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Json::Number)),
        any::<String>().prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::vec(("[a-z]{0,3}|.{0,4}", inner), 0..5)
                .prop_map(|members| Json::Object(members.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Json> {
    prop::collection::vec(("[a-z]{1,6}", json_value()), 0..6)
        .prop_map(|members| Json::Object(members.into_iter().collect()))
}

/// Any MessagePack value the decoder can produce (no NaN: it is not equal to itself).
fn msgpack_value() -> impl Strategy<Value = Value> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..40);
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::UInt),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        bytes().prop_map(Value::Str),
        bytes().prop_map(Value::Bin),
        (any::<i8>(), bytes()).prop_map(|(kind, data)| Value::Ext(kind, data)),
        prop::collection::vec(any::<u8>(), 256..300).prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((inner.clone(), inner), 0..5).prop_map(Value::Map),
        ]
    })
}

/// A Forward message carrying `records`, in one of the three modes, with or without `chunk`.
fn forward_message(records: &[Json], mode: u8, chunk: Option<&str>, width: Width) -> Value {
    let entry = |record: &Json| Value::Array(vec![Value::UInt(1_733_400_000), from_json(record)]);
    let option = chunk.map(|chunk| map(vec![("chunk", text(chunk)), ("size", Value::UInt(1))]));
    let mut items = vec![text("tracee.events")];
    match mode % 3 {
        0 => {
            // Message mode carries one record.
            items.push(Value::Ext(0, vec![0x67, 0x5c, 0, 0, 0, 0, 0, 1]));
            items.push(from_json(&records[0]));
        }
        1 => items.push(Value::Array(records.iter().map(entry).collect())),
        _ => {
            let mut packed = Vec::new();
            for record in records {
                encode(&entry(record), width, &mut packed);
            }
            items.push(Value::Bin(packed));
        }
    }
    items.extend(option);
    Value::Array(items)
}

// === Properties ===

/// Everything checked on any bytes.
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok((value, used)) = decode(bytes) else {
        return Ok(());
    };
    prop_assert!(used > 0 && used <= bytes.len());
    // Debug text, not `==`: a decoded NaN is not equal to itself.
    let again = decode(&bytes[..used]).map(|(value, used)| (format!("{value:?}"), used));
    prop_assert_eq!(again, Ok((format!("{value:?}"), used)));
    // Every prefix is incomplete, and asks for no more than the value takes (each of the
    // first 512, then a sample).
    let step = (used / 512).max(1);
    for cut in (0..used.min(512)).chain((512..used).step_by(step)) {
        match decode(&bytes[..cut]) {
            Err(DecodeError::Incomplete { needed }) => {
                prop_assert!(
                    needed > cut && needed <= used,
                    "cut {} needed {} used {}",
                    cut,
                    needed,
                    used
                );
            }
            other => prop_assert!(false, "prefix of {} bytes of {}: {:?}", cut, used, other),
        }
    }
    let _ = value.to_json();
    let _ = message_events(value);
    Ok(())
}

#[test]
fn the_corpus_decodes_without_panicking() {
    for (name, bytes) in prop_support::corpus("msgpack") {
        if let Err(error) = check_bytes(&bytes) {
            panic!("corpus file {name}: {error}");
        }
        // Every Forward frame of the corpus is one whole value.
        if name.starts_with("forward_") {
            let (value, used) = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(used, bytes.len(), "{name}");
            let events = message_events(value).unwrap_or_else(|| panic!("{name}: not a message"));
            assert!(events.iter().all(Result::is_ok), "{name}: {events:?}");
        }
    }
}

proptest! {
    #![proptest_config(prop_support::config(2000))]

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_bytes(&bytes)?;
    }

    #[test]
    fn mutated_corpus_frames_decode_or_fail_cleanly(
        (_name, bytes) in prop_support::mutated_seed(prop_support::corpus("msgpack"), 6),
    ) {
        check_bytes(&bytes)?;
    }

    #[test]
    fn an_encoded_value_decodes_to_itself(value in msgpack_value(), width in any::<u8>()) {
        let bytes = encoded(&value, Width(width));
        prop_assert_eq!(decode(&bytes), Ok((value, bytes.len())));
        check_bytes(&bytes)?;
    }

    #[test]
    fn an_encoded_json_value_decodes_to_that_json(json in json_value(), width in any::<u8>()) {
        let bytes = encoded(&from_json(&json), Width(width));
        let (value, used) = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(value.to_json(), json);
    }

    #[test]
    fn bin_and_ext_become_base64_and_null(data in prop::collection::vec(any::<u8>(), 0..64), kind in any::<i8>()) {
        let value = Value::Array(vec![Value::Bin(data.clone()), Value::Ext(kind, data.clone())]);
        let (decoded, _) = decode(&encoded(&value, Width(0))).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected = serde_json::json!([base64::engine::general_purpose::STANDARD.encode(&data), null]);
        prop_assert_eq!(decoded.to_json(), expected);
    }

    #[test]
    fn a_forward_message_carries_its_records(
        records in prop::collection::vec(json_object(), 1..5),
        tracee in any::<bool>(),
        mode in any::<u8>(),
        chunk in prop::option::of("[a-zA-Z0-9=]{1,40}"),
        width in any::<u8>(),
    ) {
        // Tracee sends `{"event": "<the event's JSON text>"}`; other producers a plain map.
        let sent: Vec<Json> = if tracee {
            records.iter().map(|r| serde_json::json!({"event": r.to_string()})).collect()
        } else {
            records.clone()
        };
        // A record sent as JSON text is what parsing that text gives (serde_json may round a
        // float's last digit).
        let records: Vec<Json> = if tracee {
            records
                .iter()
                .map(|r| serde_json::from_str(&r.to_string()).unwrap_or(Json::Null))
                .collect()
        } else {
            records
        };
        let message = forward_message(&sent, mode, chunk.as_deref(), Width(width));
        let bytes = encoded(&message, Width(width));
        let (value, used) = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(used, bytes.len());
        let events = message_events(value).ok_or_else(|| TestCaseError::fail("not a message"))?;
        let expected: Vec<Result<Json, String>> = if mode % 3 == 0 {
            records[..1].iter().cloned().map(Ok).collect()
        } else {
            records.iter().cloned().map(Ok).collect()
        };
        prop_assert_eq!(events, expected);
        check_bytes(&bytes)?;
    }

    #[test]
    fn an_ack_decodes_to_its_chunk(chunk in ".{0,300}") {
        let ack = encode_ack(&chunk);
        let (value, used) = decode(&ack).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(used, ack.len());
        prop_assert_eq!(value.get("ack").and_then(Value::as_text), Some(chunk));
    }
}
