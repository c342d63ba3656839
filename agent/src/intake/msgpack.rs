//! The MessagePack subset the Fluent Forward intake needs: decode one value from the front of a
//! buffer (or learn how many bytes are still missing), convert it to JSON, and encode the ack.
//!
//! Invariant: a declared length never allocates more than the bytes actually present (nor more
//! than the [`Budget`] has left), so a hostile length prefix cannot make Hooker reserve memory.
//! Invariant: what a value decodes to is bounded, not only its wire size: every value built is
//! charged to a [`Budget`] (its slot, and its text as JSON), and decoding stops with
//! [`DecodeError::TooLarge`] once the budget is spent. A one-byte `nil` becomes a 32-byte value
//! and a 4-byte `null`, so without it a 15 MB frame of nils takes gigabytes.

use base64::Engine;
use serde_json::Value as Json;

/// Deepest nesting accepted; Fluent Forward needs four levels.
const MAX_DEPTH: usize = 64;

/// A decoded MessagePack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes are needed: the value ends at or after `needed` bytes from the start.
    #[error("incomplete value: at least {needed} bytes needed")]
    Incomplete { needed: usize },
    #[error("invalid MessagePack: byte 0xc1 is never used")]
    Reserved,
    #[error("MessagePack nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The values would take more than the budget (see [`Budget`]).
    #[error(
        "MessagePack decodes to more than the limit of {limit} bytes (estimated: {SLOT} bytes per \
         value plus its text as JSON)"
    )]
    TooLarge { limit: usize },
}

/// What decoded values may take: each value is charged its slot ([`SLOT`] bytes, about what it
/// takes in memory as a [`Value`] and again as JSON) and its text as JSON (strings escaped,
/// `bin` as base64), so the budget bounds both the memory a message takes and the size of the
/// records it becomes. The Forward intake gives each message `HOOKER_MAX_BODY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    limit: usize,
    left: usize,
}

/// What one value is charged beside its text: the size of a [`Value`] (32 bytes).
pub const SLOT: usize = std::mem::size_of::<Value>();

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget { limit, left: limit }
    }

    /// Takes `bytes` from the budget, or fails with [`DecodeError::TooLarge`].
    pub fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(DecodeError::TooLarge { limit: self.limit })
            }
        }
    }

    /// Gives back what a value no longer held was charged.
    pub fn refund(&mut self, bytes: usize) {
        self.left = self.left.saturating_add(bytes).min(self.limit);
    }

    /// How many more values of [`SLOT`] bytes the budget can take.
    fn slots_left(&self) -> usize {
        self.left / SLOT
    }
}

/// What a `str` or `bin` of these bytes is charged: its JSON text (quotes, escapes, U+FFFD for
/// bytes that are not UTF-8; base64 for `bin`), which is never less than its bytes in memory.
pub fn text_cost(value: &Value) -> usize {
    match value {
        Value::Str(bytes) => {
            let escaped: usize = bytes
                .iter()
                .map(|b| match b {
                    b'"' | b'\\' => 2,
                    0..=0x1f => 6,
                    _ => 1,
                })
                .sum();
            // `from_utf8_lossy` turns each bad byte into a 3-byte U+FFFD at most.
            let lossy = if std::str::from_utf8(bytes).is_ok() {
                0
            } else {
                2 * bytes.iter().filter(|b| **b >= 0x80).count()
            };
            2 + escaped + lossy
        }
        Value::Bin(bytes) => 2 + bytes.len().div_ceil(3) * 4,
        Value::Ext(_, bytes) => bytes.len(),
        _ => 0,
    }
}

/// Decodes the value at the front of `buf`, charging what it builds to `budget`; returns it and
/// the bytes it took. A value over budget is refused as soon as that is certain, even before
/// its bytes have all arrived.
pub fn decode(buf: &[u8], budget: &mut Budget) -> Result<(Value, usize), DecodeError> {
    let mut reader = Reader {
        buf,
        pos: 0,
        budget,
    };
    let value = reader.value(0)?;
    Ok((value, reader.pos))
}

struct Reader<'a, 'b> {
    buf: &'a [u8],
    pos: usize,
    budget: &'b mut Budget,
}

impl Reader<'_, '_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Incomplete { needed: usize::MAX })?;
        if end > self.buf.len() {
            return Err(DecodeError::Incomplete { needed: end });
        }
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, width: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn int(&mut self, width: usize) -> Result<i64, DecodeError> {
        let raw = self.uint(width)?;
        let shift = 64 - 8 * width as u32;
        Ok(((raw << shift) as i64) >> shift)
    }

    fn len(&mut self, width: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.uint(width)?)
            .map_err(|_| DecodeError::Incomplete { needed: usize::MAX })
    }

    /// `n` bytes, copied only when the budget can take them (their text costs at least `n`).
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        if n > self.budget.left {
            return Err(DecodeError::TooLarge {
                limit: self.budget.limit,
            });
        }
        Ok(self.take(n)?.to_vec())
    }

    /// A `str`, `bin` or extension value, charged its text.
    fn text(&mut self, value: Value) -> Result<Value, DecodeError> {
        self.budget.charge(text_cost(&value))?;
        Ok(value)
    }

    fn ext(&mut self, n: usize) -> Result<Value, DecodeError> {
        let kind = self.byte()? as i8;
        let value = Value::Ext(kind, self.bytes(n)?);
        self.text(value)
    }

    /// Every item takes at least one byte and one slot of the budget, so `n` items need `n`
    /// more bytes and `n` slots: checked before reserving anything, and what is reserved is
    /// never more than the budget can fill.
    fn items(&mut self, n: usize, depth: usize) -> Result<Vec<Value>, DecodeError> {
        self.ensure_slots(n)?;
        self.ensure_remaining(n)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(items)
    }

    fn pairs(&mut self, n: usize, depth: usize) -> Result<Vec<(Value, Value)>, DecodeError> {
        self.ensure_slots(n.saturating_mul(2))?;
        self.ensure_remaining(n.saturating_mul(2))?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.value(depth + 1)?;
            let value = self.value(depth + 1)?;
            pairs.push((key, value));
        }
        Ok(pairs)
    }

    /// Refuses at once a container whose `n` values would certainly exceed the budget.
    fn ensure_slots(&self, n: usize) -> Result<(), DecodeError> {
        if n > self.budget.slots_left() {
            return Err(DecodeError::TooLarge {
                limit: self.budget.limit,
            });
        }
        Ok(())
    }

    fn ensure_remaining(&self, n: usize) -> Result<(), DecodeError> {
        let needed = self.pos.saturating_add(n);
        if needed > self.buf.len() {
            return Err(DecodeError::Incomplete { needed });
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.budget.charge(SLOT)?;
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Value::UInt(u64::from(marker)),
            0x80..=0x8f => Value::Map(self.pairs(usize::from(marker & 0x0f), depth)?),
            0x90..=0x9f => Value::Array(self.items(usize::from(marker & 0x0f), depth)?),
            0xa0..=0xbf => {
                let bytes = self.bytes(usize::from(marker & 0x1f))?;
                self.text(Value::Str(bytes))?
            }
            0xc0 => Value::Nil,
            0xc1 => return Err(DecodeError::Reserved),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.len(1)?;
                {
                    let bytes = self.bytes(n)?;
                    self.text(Value::Bin(bytes))?
                }
            }
            0xc5 => {
                let n = self.len(2)?;
                {
                    let bytes = self.bytes(n)?;
                    self.text(Value::Bin(bytes))?
                }
            }
            0xc6 => {
                let n = self.len(4)?;
                {
                    let bytes = self.bytes(n)?;
                    self.text(Value::Bin(bytes))?
                }
            }
            0xc7 => {
                let n = self.len(1)?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len(2)?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len(4)?;
                self.ext(n)?
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc => Value::UInt(self.uint(1)?),
            0xcd => Value::UInt(self.uint(2)?),
            0xce => Value::UInt(self.uint(4)?),
            0xcf => Value::UInt(self.uint(8)?),
            0xd0 => Value::Int(self.int(1)?),
            0xd1 => Value::Int(self.int(2)?),
            0xd2 => Value::Int(self.int(4)?),
            0xd3 => Value::Int(self.uint(8)? as i64),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len(1)?;
                {
                    let bytes = self.bytes(n)?;
                    self.text(Value::Str(bytes))?
                }
            }
            0xda => {
                let n = self.len(2)?;
                {
                    let bytes = self.bytes(n)?;
                    self.text(Value::Str(bytes))?
                }
            }
            0xdb => {
                let n = self.len(4)?;
                {
                    let bytes = self.bytes(n)?;
                    self.text(Value::Str(bytes))?
                }
            }
            0xdc => {
                let n = self.len(2)?;
                Value::Array(self.items(n, depth)?)
            }
            0xdd => {
                let n = self.len(4)?;
                Value::Array(self.items(n, depth)?)
            }
            0xde => {
                let n = self.len(2)?;
                Value::Map(self.pairs(n, depth)?)
            }
            0xdf => {
                let n = self.len(4)?;
                Value::Map(self.pairs(n, depth)?)
            }
            0xe0..=0xff => Value::Int(i64::from(marker as i8)),
        })
    }
}

impl Value {
    /// The text of a `str` (lossy), or of a `bin` holding text.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(bytes) | Value::Bin(bytes) => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        }
    }

    /// Looks up a string key in a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// As JSON: map keys become strings, `bin` becomes base64, extension values become null.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Nil | Value::Ext(..) => Json::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(n) => (*n).into(),
            Value::UInt(n) => (*n).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
            Value::Str(bytes) => String::from_utf8_lossy(bytes).into_owned().into(),
            Value::Bin(bytes) => base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
            Value::Array(items) => items.iter().map(Value::to_json).collect(),
            Value::Map(pairs) => Json::Object(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Value::Str(s) => String::from_utf8_lossy(s).into_owned(),
                            other => other.to_json().to_string(),
                        };
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }
}

/// `{"ack": <chunk>}`, the answer to an entry sent with the `chunk` option.
pub fn encode_ack(chunk: &str) -> Vec<u8> {
    let mut out = vec![0x81, 0xa3, b'a', b'c', b'k'];
    let bytes = chunk.as_bytes();
    match bytes.len() {
        n if n < 32 => out.push(0xa0 | n as u8),
        n if n <= 0xff => out.extend([0xd9, n as u8]),
        n if n <= 0xffff => {
            out.push(0xda);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(0xdb);
            out.extend((n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes with no limit but the input's.
    fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
        super::decode(buf, &mut Budget::new(usize::MAX))
    }

    /// `[nil × n]` as an array32.
    fn nils(n: usize) -> Vec<u8> {
        let mut bytes = vec![0xdd];
        bytes.extend((n as u32).to_be_bytes());
        bytes.resize(5 + n, 0xc0);
        bytes
    }

    #[test]
    fn nils_are_charged_what_they_decode_to_not_their_wire_size() {
        let frame = nils(1000);
        // The array and its items: 1001 slots; their text (`null`) is within the slot.
        let needed = 1001 * SLOT;
        let mut budget = Budget::new(needed);
        assert!(super::decode(&frame, &mut budget).is_ok());
        let mut budget = Budget::new(needed - 1);
        assert_eq!(
            super::decode(&frame, &mut budget),
            Err(DecodeError::TooLarge { limit: needed - 1 })
        );
        // 2 MB of nils against 16 MB: 64 MB decoded, refused.
        let limit = 16 << 20;
        assert_eq!(
            super::decode(&nils(2 << 20), &mut Budget::new(limit)),
            Err(DecodeError::TooLarge { limit })
        );
    }

    #[test]
    fn a_declared_count_over_budget_is_refused_before_its_bytes_arrive() {
        // array32 claiming 4 billion items, with none of them here yet.
        let mut budget = Budget::new(16 << 20);
        assert_eq!(
            super::decode(&[0xdd, 0xff, 0xff, 0xff, 0xff], &mut budget),
            Err(DecodeError::TooLarge { limit: 16 << 20 })
        );
        // str32 of 4 GB likewise, and a map's pairs count twice.
        let mut budget = Budget::new(1 << 20);
        assert!(matches!(
            super::decode(&[0xdb, 0xff, 0xff, 0xff, 0xff], &mut budget),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut map = vec![0xdf];
        map.extend(20_000u32.to_be_bytes());
        let mut budget = Budget::new(30_000 * SLOT);
        assert!(matches!(
            super::decode(&map, &mut budget),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn small_containers_are_charged_as_they_are_built() {
        // array16 of 4,000 fixarrays of 15 nils: no header is over budget, the whole is.
        let mut frame = vec![0xdc];
        frame.extend(4000u16.to_be_bytes());
        for _ in 0..4000 {
            frame.push(0x9f);
            frame.extend([0xc0; 15]);
        }
        let limit = 1000 * 16 * SLOT;
        // Refused on a prefix too: no need to wait for the rest.
        for end in [frame.len() / 2, frame.len()] {
            assert_eq!(
                super::decode(&frame[..end], &mut Budget::new(limit)),
                Err(DecodeError::TooLarge { limit })
            );
        }
        assert!(super::decode(&frame, &mut Budget::new(4001 * 16 * SLOT)).is_ok());
    }

    #[test]
    fn text_is_charged_as_json() {
        let control = Value::Str(vec![0x01; 10]);
        assert_eq!(text_cost(&control), 2 + 60);
        assert_eq!(
            text_cost(&control),
            serde_json::to_string(&control.to_json()).unwrap().len()
        );
        let plain = Value::Str(b"abc\"".to_vec());
        assert_eq!(text_cost(&plain), 2 + 3 + 2);
        let latin1 = Value::Str(vec![0xe9; 4]);
        assert!(text_cost(&latin1) >= serde_json::to_string(&latin1.to_json()).unwrap().len());
        let bin = Value::Bin(vec![0; 10]);
        assert_eq!(
            text_cost(&bin),
            serde_json::to_string(&bin.to_json()).unwrap().len()
        );
        // A 1 KB string of control bytes against a 4 KB budget: 6 KB as JSON, refused.
        let mut frame = vec![0xda, 0x04, 0x00];
        frame.extend([0x01; 1024]);
        assert!(matches!(
            super::decode(&frame, &mut Budget::new(4096)),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn decodes_a_forward_message() {
        // ["tag", 1, {"event": "{}"}, {"chunk": "c1"}]
        let bytes = [
            0x94, 0xa3, b't', b'a', b'g', 0x01, 0x81, 0xa5, b'e', b'v', b'e', b'n', b't', 0xa2,
            b'{', b'}', 0x81, 0xa5, b'c', b'h', b'u', b'n', b'k', 0xa2, b'c', b'1',
        ];
        let (value, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let Value::Array(items) = &value else {
            panic!("{value:?}")
        };
        assert_eq!(items[0].as_text().as_deref(), Some("tag"));
        assert_eq!(
            items[2].get("event").and_then(Value::as_text).as_deref(),
            Some("{}")
        );
        assert_eq!(
            items[3].get("chunk").and_then(Value::as_text).as_deref(),
            Some("c1")
        );
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Err(DecodeError::Incomplete { .. })),
                "{cut}"
            );
        }
    }

    #[test]
    fn huge_declared_lengths_allocate_nothing() {
        // array32 claiming 4 billion items, str32 claiming 4 GB.
        assert_eq!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::Incomplete {
                needed: 5 + 0xffff_ffff
            })
        );
        assert_eq!(
            decode(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Incomplete {
                needed: 5 + 0xffff_ffff
            })
        );
        assert_eq!(decode(&[0xc1]), Err(DecodeError::Reserved));
    }

    #[test]
    fn numbers_and_json() {
        assert_eq!(decode(&[0xff]).unwrap().0, Value::Int(-1));
        assert_eq!(decode(&[0xd1, 0xff, 0x38]).unwrap().0, Value::Int(-200));
        assert_eq!(decode(&[0xcd, 0x01, 0x00]).unwrap().0, Value::UInt(256));
        let (event_time, _) = decode(&[0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2]).unwrap();
        assert_eq!(event_time, Value::Ext(0, vec![0, 0, 0, 1, 0, 0, 0, 2]));
        let map = Value::Map(vec![(
            Value::Str(b"a".to_vec()),
            Value::Array(vec![Value::Nil, Value::Bool(true)]),
        )]);
        assert_eq!(map.to_json(), serde_json::json!({"a": [null, true]}));
    }

    #[test]
    fn ack_is_a_one_entry_map() {
        let ack = encode_ack("abc");
        let (value, used) = decode(&ack).unwrap();
        assert_eq!(used, ack.len());
        assert_eq!(
            value.get("ack").and_then(Value::as_text).as_deref(),
            Some("abc")
        );
        let long = "x".repeat(300);
        let (value, _) = decode(&encode_ack(&long)).unwrap();
        assert_eq!(value.get("ack").and_then(Value::as_text), Some(long));
    }
}
