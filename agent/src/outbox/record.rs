//! How a pending delivery is written in the store: length-prefixed fields after a format byte.
//!
//! Strings (the rendered body above all, often JSON itself) are copied as they are instead of
//! being escaped into a JSON document, and the event is the text its [`EventJson`] serialized once
//! for all the deliveries made from it (and for the forensic log). Decoding checks the event's
//! JSON without parsing it: an action that reads the event parses it then. Records of schema
//! version 1 were JSON documents, and format 2 had no `body_pending`; [`decode`] still reads
//! both, so a store written by an older Hooker resumes where it stopped.
//!
//! Layout (integers little-endian, `str` = u32 length + UTF-8 bytes):
//! `3, route: str, actions: u32 + str…, event_id: str, title: str, body_pending: u8, body: str,
//! url: u8 (+ str), fields: str (JSON object), owners: u32 + str…, event: str (JSON),
//! attempts: u32, created_ms: u64, next_ms: u64, last_error: u8 (+ str)`.

use std::sync::Arc;

use super::store::Delivery;
use crate::event_json::EventJson;
use crate::message::Message;

const FORMAT: u8 = 3;
/// The format before `body_pending`.
const FORMAT_2: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record ends early")]
    Truncated,
    #[error("record format {0} is unknown")]
    Format(u8),
    #[error("record has a field that is not UTF-8")]
    Utf8,
    #[error("record has invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// About how many bytes `delivery` encodes to (to size the buffer once).
pub fn size_hint(delivery: &Delivery) -> usize {
    let message = &delivery.message;
    256 + message.title.len() + message.body.len() + message.event.text().get().len()
}

/// Encodes `delivery` into `out` (cleared first).
pub fn encode(delivery: &Delivery, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let message = &delivery.message;
    out.clear();
    out.push(FORMAT);
    put_str(out, &delivery.route);
    put_len(out, delivery.actions.len());
    for action in &delivery.actions {
        put_str(out, action);
    }
    put_str(out, &message.event_id);
    put_str(out, &message.title);
    out.push(u8::from(message.body_pending));
    put_str(out, &message.body);
    put_opt(out, message.url.as_deref());
    put_bytes(out, &serde_json::to_vec(&message.fields)?);
    put_len(out, message.owners.len());
    for owner in &message.owners {
        put_str(out, owner);
    }
    put_bytes(out, message.event.text().get().as_bytes());
    out.extend_from_slice(&delivery.attempts.to_le_bytes());
    out.extend_from_slice(&delivery.created_ms.to_le_bytes());
    out.extend_from_slice(&delivery.next_ms.to_le_bytes());
    put_opt(out, delivery.last_error.as_deref());
    Ok(())
}

/// Decodes a record's metadata only: the message is left empty but for its event id (the
/// outbox reads the whole record back when the delivery runs). The title, body and event are
/// skipped, not parsed.
pub fn decode_meta(id: u64, bytes: &[u8]) -> Result<Delivery, DecodeError> {
    read(id, bytes, false)
}

/// Decodes a record of either format; `id` is the record's key.
pub fn decode(id: u64, bytes: &[u8]) -> Result<Delivery, DecodeError> {
    read(id, bytes, true)
}

/// Decodes a record, its message content only when `content` is set.
fn read(id: u64, bytes: &[u8], content: bool) -> Result<Delivery, DecodeError> {
    match bytes.first() {
        Some(b'{') => {
            let mut delivery: Delivery = serde_json::from_slice(bytes)?;
            if !content {
                delivery.message =
                    Message::placeholder(std::mem::take(&mut delivery.message.event_id));
            }
            return Ok(delivery);
        }
        Some(&FORMAT | &FORMAT_2) => {}
        Some(&other) => return Err(DecodeError::Format(other)),
        None => return Err(DecodeError::Truncated),
    }
    let has_pending = bytes[0] == FORMAT;
    let mut r = Reader { rest: &bytes[1..] };
    let route = r.string()?;
    let actions = (0..r.u32()?)
        .map(|_| r.string())
        .collect::<Result<Vec<_>, _>>()?;
    let event_id = r.string()?;
    let message = if content {
        Message {
            route: route.clone(),
            event_id,
            title: r.string()?,
            body_pending: has_pending && r.take(1)?[0] == 1,
            body: r.string()?,
            url: r.opt()?,
            fields: serde_json::from_slice(r.bytes()?)?,
            owners: (0..r.u32()?)
                .map(|_| r.string())
                .collect::<Result<Vec<_>, _>>()?,
            event: Arc::new(EventJson::from_text(r.bytes()?)?),
        }
    } else {
        r.bytes()?; // title
        if has_pending {
            r.take(1)?; // body_pending
        }
        r.bytes()?; // body
        r.opt()?; // url
        r.bytes()?; // fields
        for _ in 0..r.u32()? {
            r.bytes()?; // owners
        }
        r.bytes()?; // event
        Message::placeholder(event_id)
    };
    Ok(Delivery {
        id,
        message,
        route,
        actions,
        attempts: r.u32()?,
        created_ms: r.u64()?,
        next_ms: r.u64()?,
        last_error: r.opt()?,
        stored_bytes: 0,
    })
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Fields are bounded far below 4 GiB by the intake's body limit.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8)
    }

    fn opt(&mut self) -> Result<Option<String>, DecodeError> {
        match self.take(1)?[0] {
            0 => Ok(None),
            _ => self.string().map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        let event = Arc::new(EventJson::new(
            serde_json::json!({"eventName": "x", "args": [{"name": "p", "value": "é\n\"q\""}]}),
        ));
        Delivery {
            id: 7,
            route: "r".into(),
            actions: vec!["a".into(), "b".into()],
            message: Message {
                route: "r".into(),
                event_id: "e-1".into(),
                title: "T".into(),
                body: "{\n  \"k\": \"v\"\n}".into(),
                body_pending: false,
                url: Some("https://x".into()),
                fields: [("severity".to_string(), serde_json::json!("high"))].into(),
                owners: vec!["o@x".into()],
                event,
            },
            attempts: 3,
            created_ms: 1,
            next_ms: u64::MAX,
            last_error: Some("HTTP 503".into()),
            stored_bytes: 0,
        }
    }

    fn same(a: &Delivery, b: &Delivery) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }

    #[test]
    fn round_trips_and_reads_the_json_format() {
        let original = delivery();
        let mut out = Vec::new();
        encode(&original, &mut out).unwrap();
        same(&decode(7, &out).unwrap(), &original);

        let json = serde_json::to_vec(&original).unwrap();
        same(&decode(7, &json).unwrap(), &original);
    }

    #[test]
    fn metadata_decodes_without_the_message_in_both_formats() {
        let original = delivery();
        let mut expected = original.clone();
        expected.message = Message::placeholder("e-1".into());
        let mut out = Vec::new();
        encode(&original, &mut out).unwrap();
        same(&decode_meta(7, &out).unwrap(), &expected);
        let json = serde_json::to_vec(&original).unwrap();
        same(&decode_meta(7, &json).unwrap(), &expected);
        for len in 0..out.len() {
            assert!(
                decode_meta(7, &out[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut out = Vec::new();
        encode(&delivery(), &mut out).unwrap();
        for len in 0..out.len() {
            assert!(decode(7, &out[..len]).is_err(), "prefix of {len} bytes");
        }
        assert!(matches!(decode(7, &[9]), Err(DecodeError::Format(9))));
    }

    #[test]
    fn a_pending_body_round_trips_and_format_2_still_decodes() {
        let mut pending = delivery();
        pending.message.body = String::new();
        pending.message.body_pending = true;
        let mut out = Vec::new();
        encode(&pending, &mut out).unwrap();
        same(&decode(7, &out).unwrap(), &pending);
        let json = serde_json::to_vec(&pending).unwrap();
        same(&decode(7, &json).unwrap(), &pending);

        // Format 2 is format 3 without the body_pending byte before the body.
        let original = delivery();
        encode(&original, &mut out).unwrap();
        let at = 1 + (4 + 1) + (4 + 2 * (4 + 1)) + (4 + 3) + (4 + 1);
        assert_eq!(out[at], 0, "the body_pending byte is where the layout says");
        out.remove(at);
        out[0] = FORMAT_2;
        same(&decode(7, &out).unwrap(), &original);
        same(&decode_meta(7, &out).unwrap(), &{
            let mut meta = original.clone();
            meta.message = Message::placeholder("e-1".into());
            meta
        });
    }

    #[test]
    fn the_event_is_serialized_once_for_its_deliveries() {
        let first = delivery();
        let mut second = delivery();
        second.message.event = first.message.event.clone();
        let mut out = Vec::new();
        encode(&first, &mut out).unwrap();
        let text = first.message.event.text().get().as_ptr();
        encode(&second, &mut out).unwrap();
        assert_eq!(second.message.event.text().get().as_ptr(), text);
        let decoded = decode(7, &out).unwrap();
        same(&decoded, &second);
        assert_eq!(
            decoded.message.event.text().get(),
            first.message.event.text().get()
        );
    }
}
