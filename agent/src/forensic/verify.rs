//! `hooker log verify`: checks the hash chain of forensic log segments (a file, a directory of
//! segments, or shipped objects) and says where it breaks and how.
//!
//! Segments are put in chain order by the `seq` of their first line (names differ between the
//! node, `forensic.jsonl.3`, and the store, `…/<date>/<segment>.gz`). Each line is checked on its
//! own (its hash covers its text) and against the line before it (its `prev` must be that line's
//! hash, its `seq` one more). A break is classified from the sequence numbers: a gap whose lines
//! appear nowhere else is a deletion, one whose lines appear elsewhere is a reordering.

use std::collections::HashSet;
use std::fmt;

use super::chain::{self, LineError, Link, Sealed};

/// One file or object of the log.
pub struct Segment {
    /// Where it came from, as the report names it.
    pub name: String,
    pub text: Vec<u8>,
}

/// How the chain breaks at a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The line's text does not match its hash.
    Edited,
    /// Lines are missing before this one.
    Deleted,
    /// The line is out of its place.
    Reordered,
    /// The line's hash matches its text, but it does not name the line before it: one of the
    /// two was rewritten with a recomputed hash.
    Rewritten,
    /// The line ends without a newline: the segment was cut short.
    Truncated,
    /// The line carries no chain (written by a Hooker before the chain, or by hand), or is not
    /// JSON.
    NotSealed,
    /// A new chain starts here (seq 0): the log before it was not read back at start.
    Restarted,
    /// The anchor (`--last`) is nowhere in the log: its tail was deleted.
    TailDeleted,
    /// A shipped object does not match its `sha256` metadata, or is not gzip.
    ObjectAltered,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Break::Edited => "edited",
            Break::Deleted => "deleted",
            Break::Reordered => "reordered",
            Break::Rewritten => "rewritten",
            Break::Truncated => "truncated",
            Break::NotSealed => "not sealed",
            Break::Restarted => "restarted",
            Break::TailDeleted => "tail deleted",
            Break::ObjectAltered => "object altered",
        })
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub segment: String,
    /// 1-based line number within the segment (0 for the whole log).
    pub line: usize,
    pub what: Break,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: {}: {}",
            self.segment, self.line, self.what, self.detail
        )
    }
}

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Verified {
    pub segments: usize,
    pub lines: u64,
    /// `seq` of the first line read: above 0 when older segments are not part of the check.
    pub first_seq: Option<u64>,
    /// The last line's link: the anchor to check the next shipped copy against.
    pub last: Option<Link>,
    pub findings: Vec<Finding>,
}

impl Verified {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let verdict = if self.intact() {
            "intact".to_string()
        } else {
            format!("BROKEN ({} problems)", self.findings.len())
        };
        write!(
            f,
            "{verdict}: {} segments, {} lines",
            self.segments, self.lines
        )?;
        if let (Some(first), Some(last)) = (self.first_seq, self.last) {
            write!(
                f,
                ", seq {first}..{}, last hash {}",
                last.seq,
                chain::hex(&last.hash)
            )?;
        }
        Ok(())
    }
}

/// One line, as read.
struct Line<'a> {
    segment: usize,
    number: usize,
    bytes: &'a [u8],
    /// Ends the segment without a newline.
    torn: bool,
    sealed: Option<Sealed>,
}

/// Checks `segments` as one log (in chain order whatever their order here); `anchor` is a hash
/// the log must contain (the last hash seen in a shipped copy), so a deleted tail is found.
pub fn verify(mut segments: Vec<Segment>, anchor: Option<[u8; 32]>) -> Verified {
    segments.sort_by_cached_key(|segment| (first_seq(&segment.text), segment.name.clone()));
    let mut lines = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        let text = segment.text.as_slice();
        let mut rest = text;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let (bytes, torn, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..end], false, &rest[end + 1..]),
                None => (rest, true, &rest[rest.len()..]),
            };
            rest = next;
            lines.push(Line {
                segment: index,
                number,
                bytes,
                torn,
                sealed: chain::claims(bytes),
            });
        }
    }
    let present: HashSet<u64> = lines
        .iter()
        .filter_map(|l| l.sealed.map(|s| s.seq))
        .collect();
    let mut verified = Verified {
        segments: segments.len(),
        lines: lines.len() as u64,
        ..Verified::default()
    };
    let mut anchored = anchor.is_none();
    let mut expected: Option<Link> = None;
    for line in &lines {
        let mut found = |what: Break, detail: String| {
            verified.findings.push(Finding {
                segment: segments[line.segment].name.clone(),
                line: line.number,
                what,
                detail,
            })
        };
        if line.torn {
            found(
                Break::Truncated,
                "the segment ends in the middle of this line".into(),
            );
            continue;
        }
        let Some(sealed) = line.sealed else {
            found(
                Break::NotSealed,
                "the line carries no seq/prev/hash (not written by the chain, or cut)".into(),
            );
            continue;
        };
        match chain::check(line.bytes, &sealed) {
            Ok(()) => {}
            Err(LineError::Edited) => found(
                Break::Edited,
                format!("seq {}: its text does not match its hash", sealed.seq),
            ),
            Err(LineError::NotJson | LineError::NotSealed) => found(
                Break::NotSealed,
                format!("seq {}: the line is not JSON", sealed.seq),
            ),
        }
        anchored |= anchor == Some(sealed.hash);
        let Some(before) = expected else {
            verified.first_seq = Some(sealed.seq);
            if sealed.seq == 0 && sealed.prev != chain::GENESIS {
                found(
                    Break::Rewritten,
                    "seq 0 does not start from the genesis hash".into(),
                );
            }
            expected = Some(sealed.link());
            continue;
        };
        if sealed.seq == before.seq + 1 && sealed.prev == before.hash {
            expected = Some(sealed.link());
            continue;
        }
        if sealed.seq == 0 && sealed.prev == chain::GENESIS {
            found(
                Break::Restarted,
                format!(
                    "a new chain starts after seq {}: the log before it was lost or moved",
                    before.seq
                ),
            );
        } else if sealed.seq <= before.seq {
            found(
                Break::Reordered,
                format!("seq {} comes after seq {}", sealed.seq, before.seq),
            );
            // Still expect what follows the line before it.
            continue;
        } else if sealed.seq > before.seq + 1 {
            let missing = before.seq + 1..sealed.seq;
            if missing.clone().any(|seq| present.contains(&seq)) {
                found(
                    Break::Reordered,
                    format!(
                        "seq {} comes after seq {}: seq {}..{} appear elsewhere",
                        sealed.seq,
                        before.seq,
                        missing.start,
                        missing.end - 1
                    ),
                );
            } else {
                let count = missing.end - missing.start;
                found(
                    Break::Deleted,
                    format!(
                        "{count} line{} deleted before this one (seq {}..{})",
                        if count == 1 { "" } else { "s" },
                        missing.start,
                        missing.end - 1
                    ),
                );
            }
        } else {
            found(
                Break::Rewritten,
                format!(
                    "seq {} does not name the hash of seq {} before it: one of them was rewritten",
                    sealed.seq, before.seq
                ),
            );
        }
        expected = Some(sealed.link());
    }
    verified.last = expected;
    if !anchored && let Some(anchor) = anchor {
        verified.findings.push(Finding {
            segment: segments.last().map_or_else(String::new, |s| s.name.clone()),
            line: 0,
            what: Break::TailDeleted,
            detail: format!(
                "no line has the anchor hash {}: the log was cut before it",
                chain::hex(&anchor)
            ),
        });
    }
    verified
}

/// The `seq` of a segment's first sealed line (segments without one sort first).
fn first_seq(text: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n')
        .find_map(chain::claims)
        .map(|sealed| sealed.seq)
}

/// Reads `path`: one file, or every file of a directory (hidden ones and `.sha256` sidecars
/// left out), as segments.
pub fn read_local(path: &std::path::Path) -> std::io::Result<Vec<Segment>> {
    if !path.is_dir() {
        return Ok(vec![Segment {
            name: path.display().to_string(),
            text: std::fs::read(path)?,
        }]);
    }
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".sha256") || !entry.file_type()?.is_file() {
            continue;
        }
        segments.push(Segment {
            name: entry.path().display().to_string(),
            text: std::fs::read(entry.path())?,
        });
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines 0..n sealed into one text, and the text split into its lines.
    fn log(n: usize) -> Vec<String> {
        let mut text = Vec::new();
        let mut last = None;
        for i in 0..n {
            last = Some(chain::seal(
                format!(r#"{{"n":{i},"user":"u{i}"}}"#).as_bytes(),
                last,
                &mut text,
            ));
        }
        String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn segment(name: &str, lines: &[String]) -> Segment {
        Segment {
            name: name.into(),
            text: lines.concat().into_bytes(),
        }
    }

    fn first(verified: &Verified) -> (&str, usize, Break) {
        let finding = &verified.findings[0];
        (finding.segment.as_str(), finding.line, finding.what)
    }

    #[test]
    fn an_intact_log_across_segments_passes_in_any_order() {
        let lines = log(10);
        let verified = verify(
            vec![
                segment("new", &lines[6..]),
                segment("old", &lines[..3]),
                segment("mid", &lines[3..6]),
            ],
            None,
        );
        assert!(verified.intact(), "{verified}");
        assert_eq!(verified.lines, 10);
        assert_eq!(verified.last.map(|l| l.seq), Some(9));
        // Anchored at a line it holds, it still passes.
        let anchor = chain::claims(lines[9].trim_end().as_bytes()).unwrap().hash;
        assert!(verify(vec![segment("all", &lines)], Some(anchor)).intact());
    }

    #[test]
    fn each_kind_of_tampering_is_found_where_it_is() {
        let lines = log(8);
        // Edited (line 4 of the segment is seq 3).
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("\"u3\"", "\"root\"");
        let verified = verify(vec![segment("a", &edited)], None);
        assert_eq!(first(&verified), ("a", 4, Break::Edited), "{verified}");
        assert_eq!(verified.findings.len(), 1, "{verified}");
        // Deleted.
        let mut deleted = lines.clone();
        deleted.remove(3);
        let verified = verify(vec![segment("a", &deleted)], None);
        assert_eq!(first(&verified), ("a", 4, Break::Deleted), "{verified}");
        assert!(verified.findings[0].detail.contains("seq 3..3"));
        // Reordered.
        let mut reordered = lines.clone();
        reordered.swap(3, 4);
        let verified = verify(vec![segment("a", &reordered)], None);
        assert_eq!(first(&verified), ("a", 4, Break::Reordered), "{verified}");
        // Truncated.
        let mut truncated = lines.clone();
        truncated[7].truncate(20);
        let verified = verify(vec![segment("a", &truncated)], None);
        assert_eq!(first(&verified), ("a", 8, Break::Truncated), "{verified}");
        // A whole segment deleted between two others.
        let verified = verify(
            vec![segment("old", &lines[..3]), segment("new", &lines[5..])],
            None,
        );
        assert_eq!(first(&verified), ("new", 1, Break::Deleted), "{verified}");
        // The tail deleted: found only against an anchor.
        let anchor = chain::claims(lines[7].trim_end().as_bytes()).unwrap().hash;
        assert!(verify(vec![segment("a", &lines[..6])], None).intact());
        let verified = verify(vec![segment("a", &lines[..6])], Some(anchor));
        assert_eq!(first(&verified), ("a", 0, Break::TailDeleted), "{verified}");
    }

    #[test]
    fn a_line_rewritten_with_a_recomputed_hash_breaks_the_next_link() {
        let lines = log(5);
        let mut text = Vec::new();
        let before = chain::claims(lines[1].trim_end().as_bytes()).map(|s| s.link());
        chain::seal(br#"{"n":2,"user":"root"}"#, before, &mut text);
        let mut forged = lines.clone();
        forged[2] = String::from_utf8(text).unwrap();
        let verified = verify(vec![segment("a", &forged)], None);
        assert_eq!(first(&verified), ("a", 4, Break::Rewritten), "{verified}");
    }
}
