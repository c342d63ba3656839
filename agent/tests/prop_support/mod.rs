//! What the property tests share: the corpus of seed inputs (agent/tests/corpus/<parser>/), the
//! case count (PROPTEST_CASES overrides each test's default), and byte-level mutations.
//!
//! Each test runs its corpus as fixed cases first, then proptest's generated ones. A failure
//! proptest finds is saved beside its test (agent/tests/prop_*.proptest-regressions) and replayed before new cases; add
//! a small sample of it to the corpus as well, so the case stays readable.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// The config of a property test: `default_cases` unless PROPTEST_CASES is set. The defaults
/// keep the whole prop suite well under two minutes in a debug build on two cores.
pub fn config(default_cases: u32) -> Config {
    let mut config = Config {
        // Beside the test file: agent/tests/prop_*.proptest-regressions.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config
}

/// The directory of a parser's corpus.
pub fn corpus_dir(parser: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(parser)
}

/// Every file of a parser's corpus, by name; fails the test when there is none (the corpus is
/// part of the repository).
pub fn corpus(parser: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(parser);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read the corpus {}: {error}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path())
                .unwrap_or_else(|error| panic!("cannot read {name}: {error}"));
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
}

/// The lines of every text file of a parser's corpus (`#` starts a comment line).
pub fn corpus_lines(parser: &str) -> Vec<String> {
    corpus(parser)
        .into_iter()
        .flat_map(|(name, bytes)| {
            let text = String::from_utf8(bytes)
                .unwrap_or_else(|_| panic!("corpus file {name} is not UTF-8"));
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One change to a byte string.
#[derive(Debug, Clone)]
pub enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Copies a span over another place (repeats structure, as real damage often does).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
}

/// Up to `max` mutations at arbitrary places (positions are taken modulo the length).
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let one =
        prop_oneof![
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
            (any::<usize>(), interesting_bytes())
                .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
            (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Remove { at, len }),
            any::<usize>().prop_map(|at| Mutation::Truncate { at }),
            (any::<usize>(), 1usize..64, any::<usize>())
                .prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
        ];
    proptest::collection::vec(one, 1..=max)
}

/// Short byte strings a parser is likely to trip on.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8),
        proptest::sample::select(vec![
            b"\\u".to_vec(),
            b"\\ud800".to_vec(),
            b"\"".to_vec(),
            b"[".to_vec(),
            b"{".to_vec(),
            b"}".to_vec(),
            b",".to_vec(),
            b":".to_vec(),
            b"\n".to_vec(),
            b"1e400".to_vec(),
            b"-".to_vec(),
            b"\xff\xff\xff\xff".to_vec(),
            b"\x00\x00\x00\x00".to_vec(),
            b"&a ".to_vec(),
            b"*a".to_vec(),
            b"99999999999999999999s".to_vec(),
        ]),
    ]
}

/// `bytes` with `mutations` applied in order.
pub fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for mutation in mutations {
        let len = out.len();
        let at = |n: usize| if len == 0 { 0 } else { n % (len + 1) };
        match mutation {
            Mutation::Flip { at: n, bit } if len > 0 => out[n % len] ^= 1 << bit,
            Mutation::Set { at: n, byte } if len > 0 => out[n % len] = *byte,
            Mutation::Insert { at: n, bytes } => {
                let at = at(*n);
                out.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at: n, len: count } if len > 0 => {
                let start = n % len;
                out.drain(start..(start + count).min(len));
            }
            Mutation::Truncate { at: n } => out.truncate(at(*n)),
            Mutation::Splice {
                from,
                len: count,
                to,
            } if len > 0 => {
                let start = from % len;
                let span: Vec<u8> = out[start..(start + count).min(len)].to_vec();
                let to = at(*to);
                out.splice(to..to, span);
            }
            _ => {}
        }
    }
    out
}

/// A seed from a corpus and mutations for it.
pub fn mutated_seed(
    seeds: Vec<(String, Vec<u8>)>,
    max_mutations: usize,
) -> impl Strategy<Value = (String, Vec<u8>)> {
    (proptest::sample::select(seeds), mutations(max_mutations))
        .prop_map(|((name, bytes), changes)| (name, mutate(&bytes, &changes)))
}
