//! The forensic log's hash chain: how a line is sealed when it is written, read back when the
//! agent restarts, and checked line by line.
//!
//! A sealed line is the record's JSON object with three members added at its end:
//!
//! ```text
//! {"time":…,"event":{…},"seq":41,"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `seq` counts lines from the chain's first (0), `prev` is the line before's `hash` (64 zeros
//! for line 0) and `hash` is the SHA-256 of the line's bytes up to and without `,"hash":"`: so
//! each line's hash covers its own text and, through `prev`, every line before it. The line
//! stays one JSON object a reader can parse; the chain needs no sidecar, and it runs on across
//! rotation (a segment's first line names the previous segment's last hash).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// `prev` of a chain's first line.
pub const GENESIS: [u8; 32] = [0; 32];

const HASH_KEY: &[u8] = b",\"hash\":\"";
const PREV_KEY: &[u8] = b",\"prev\":\"";
const SEQ_KEY: &[u8] = b",\"seq\":";
/// `,"hash":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// A line's place in the chain: what the next line must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Appends `record` (a JSON object, `{…}`) to `out` sealed after `prev` (the chain's last line,
/// `None` to start a chain) and a newline; returns the new line's link.
///
/// A `record` that is not an object (it never is: [`crate::action`]'s log writes a struct) is
/// wrapped as `{"record":…}` so the line stays JSON.
pub fn seal(record: &[u8], prev: Option<Link>, out: &mut Vec<u8>) -> Link {
    let start = out.len();
    match record.strip_suffix(b"}").filter(|r| r.starts_with(b"{")) {
        Some(open) => out.extend_from_slice(open),
        None => {
            out.extend_from_slice(b"{\"record\":");
            out.extend_from_slice(record);
        }
    }
    // An empty object's members start without a comma.
    let empty = out.len() == start + 1;
    let seq = prev.map_or(0, |p| p.seq + 1);
    let prev_hash = prev.map_or(GENESIS, |p| p.hash);
    let seq_key = if empty { &SEQ_KEY[1..] } else { SEQ_KEY };
    out.extend_from_slice(seq_key);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(PREV_KEY);
    push_hex(out, &prev_hash);
    out.push(b'"');
    let hash = sha256(&out[start..]);
    out.extend_from_slice(HASH_KEY);
    push_hex(out, &hash);
    out.extend_from_slice(b"\"}\n");
    Link { seq, hash }
}

/// What is wrong with one line, on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// No `seq`/`prev`/`hash` members at the end: written by an older Hooker, or by hand.
    NotSealed,
    /// The hash does not match the line's text: it was edited after it was written.
    Edited,
    /// The line is not JSON although its hash matches (written so by someone who could
    /// recompute hashes).
    NotJson,
}

/// A sealed line's chain members, checked against its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

impl Sealed {
    pub fn link(&self) -> Link {
        Link {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// Reads a line's chain members (`line` without its newline) and checks its hash.
pub fn open(line: &[u8]) -> Result<Sealed, LineError> {
    let sealed = claims(line).ok_or(LineError::NotSealed)?;
    check(line, &sealed)?;
    Ok(sealed)
}

/// The chain members a line claims, unchecked: `None` when it has none.
pub fn claims(line: &[u8]) -> Option<Sealed> {
    let body = body(line)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hash = parse_hex(&line[body.len() + HASH_KEY.len()..line.len() - 2])?;
    // `,"prev":"<64 hex>"` ends the body.
    let prev_at = body
        .len()
        .checked_sub(PREV_KEY.len() + 64 + 1)
        .filter(|&at| body[at..].starts_with(PREV_KEY) && body.ends_with(b"\""))?;
    let prev = parse_hex(&body[prev_at + PREV_KEY.len()..body.len() - 1])?;
    let seq_at = find_last(&body[..prev_at], &SEQ_KEY[1..])?;
    let seq = std::str::from_utf8(&body[seq_at + SEQ_KEY.len() - 1..prev_at])
        .ok()?
        .parse::<u64>()
        .ok()?;
    Some(Sealed { seq, prev, hash })
}

/// Checks that `line`'s hash, as `claims` read it, matches its text, and that it is JSON.
pub fn check(line: &[u8], sealed: &Sealed) -> Result<(), LineError> {
    let body = body(line).ok_or(LineError::NotSealed)?;
    if sha256(body) != sealed.hash {
        return Err(LineError::Edited);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_err() {
        return Err(LineError::NotJson);
    }
    Ok(())
}

/// The hashed part of a sealed line: everything before `,"hash":"`.
fn body(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < SUFFIX_LEN || !line.ends_with(b"\"}") {
        return None;
    }
    let (body, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    suffix.starts_with(HASH_KEY).then_some(body)
}

/// The last sealed line of the log file at `path` and whether the file ends mid-line (a write
/// cut short by a crash or a full disk: the next line must start on a line of its own).
/// `Ok((None, _))` when the file is missing, empty or its last complete line is not sealed.
pub fn last_link(path: &Path) -> std::io::Result<(Option<Link>, bool)> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((None, false)),
        Err(err) => return Err(err),
    };
    let size = file.metadata()?.len();
    if size == 0 {
        return Ok((None, false));
    }
    // Read backwards in chunks until the last complete line is whole.
    const CHUNK: u64 = 64 << 10;
    let mut tail: Vec<u8> = Vec::new();
    let mut from = size;
    loop {
        let start = from.saturating_sub(CHUNK);
        let mut chunk = vec![0; (from - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        from = start;
        let torn = tail.last() != Some(&b'\n');
        // The complete lines: up to the last newline.
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => &tail[..end],
            None if start == 0 => return Ok((None, torn)),
            None => continue,
        };
        match complete.iter().rposition(|&b| b == b'\n') {
            Some(newline) => {
                let link = open(&complete[newline + 1..]).ok().map(|s| s.link());
                return Ok((link, torn));
            }
            None if start == 0 => return Ok((open(complete).ok().map(|s| s.link()), torn)),
            None => continue,
        }
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize]);
        out.push(DIGITS[(byte & 15) as usize]);
    }
}

/// 64 lowercase hex digits → 32 bytes.
pub fn parse_hex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(records: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut last = None;
        for record in records {
            last = Some(seal(record.as_bytes(), last, &mut out));
        }
        out
    }

    #[test]
    fn sealed_lines_are_json_and_chain() {
        let text = chain(&[r#"{"a":1}"#, r#"{"b":"}"}"#, "{}"]);
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        let mut prev = GENESIS;
        for (n, line) in lines.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(value["seq"], n as u64);
            let sealed = open(line).unwrap();
            assert_eq!((sealed.seq, sealed.prev), (n as u64, prev));
            assert_eq!(value["hash"], hex(&sealed.hash));
            prev = sealed.hash;
        }
        let first: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(first["a"], 1);
        assert_eq!(first["prev"], "0".repeat(64));
    }

    #[test]
    fn an_edited_line_fails_its_hash() {
        let text = String::from_utf8(chain(&[r#"{"user":"alice"}"#])).unwrap();
        let edited = text.trim_end().replace("alice", "bob");
        assert_eq!(open(edited.as_bytes()), Err(LineError::Edited));
        assert_eq!(open(br#"{"user":"alice"}"#), Err(LineError::NotSealed));
    }

    #[test]
    fn the_last_link_is_read_back_past_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("hooker-chain-last-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        assert_eq!(last_link(&path).unwrap(), (None, false));
        // Lines longer than the read-back chunk.
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000));
        let mut text = Vec::new();
        let first = seal(big.as_bytes(), None, &mut text);
        let second = seal(big.as_bytes(), Some(first), &mut text);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(last_link(&path).unwrap(), (Some(second), false));
        text.extend_from_slice(br#"{"torn":"#);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(last_link(&path).unwrap(), (Some(second), true));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
