//! Journal records and segments (`outbox::record`, `outbox::journal`): a delivery encodes and
//! decodes to itself (and its metadata alone to its metadata); any bytes are a record or an
//! error, never a panic; a journal replays what was put and not removed, and after any damage
//! to its files it opens without panicking, returns only records that were put, and goes on
//! writing records it can read back.

mod prop_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hooker::event_json::EventJson;
use hooker::message::Message;
use hooker::outbox::Delivery;
use hooker::outbox::journal::Journal;
use hooker::outbox::record;
use proptest::prelude::*;
use serde_json::{Value, json};

// === Records ===

fn same(a: &Delivery, b: &Delivery) -> Result<(), TestCaseError> {
    let a_json = serde_json::to_value(a).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let b_json = serde_json::to_value(b).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(a_json, b_json);
    prop_assert_eq!(a.message.event.text().get(), b.message.event.text().get());
    Ok(())
}

/// What [`record::decode_meta`] gives for `delivery`.
fn meta(delivery: &Delivery) -> Delivery {
    let mut meta = delivery.clone();
    meta.message = Message::placeholder(delivery.message.event_id.clone());
    meta
}

/// Checks any bytes as a record: no panic; when the whole record decodes, its metadata decodes
/// alone to the same.
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let whole = record::decode(7, bytes);
    let alone = record::decode_meta(7, bytes);
    if let Ok(whole) = &whole {
        let alone = alone.map_err(|e| TestCaseError::fail(format!("metadata refused: {e}")))?;
        same(&meta(whole), &alone)?;
        // A record read back serializes (its event is checked JSON).
        let _ = serde_json::to_vec(whole).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z]{0,8}", Just(String::new())]
}

fn field_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event as the intakes make it (it is stored as its text).
fn event() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-zA-Z]{1,8}", field_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

prop_compose! {
    fn delivery()(
        id in any::<u64>(),
        route in text(),
        actions in prop::collection::vec(text(), 0..4),
        event_id in text(),
        title in text(),
        body in prop_oneof![text(), ".{0,200}"],
        body_pending in any::<bool>(),
        url in prop::option::of(text()),
        fields in prop::collection::btree_map(text(), field_value(), 0..4),
        owners in prop::collection::vec(text(), 0..3),
        event in event(),
        attempts in any::<u32>(),
        created_ms in any::<u64>(),
        next_ms in any::<u64>(),
        last_error in prop::option::of(text()),
    ) -> Delivery {
        Delivery {
            id,
            route: route.clone(),
            actions,
            message: Message {
                route,
                event_id,
                title,
                body: if body_pending { String::new() } else { body },
                body_pending,
                url,
                fields: fields.into_iter().collect::<BTreeMap<_, _>>(),
                owners,
                event: Arc::new(EventJson::new(event)),
            },
            attempts,
            created_ms,
            next_ms,
            last_error,
            stored_bytes: 0,
        }
    }
}

// === Journal segments ===

/// A fresh directory for one case, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hooker-prop-journal-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Small segments, so that a case rotates, retires and copies records forward.
const SEGMENT: u64 = 512;

fn open(dir: &Path) -> Result<(Journal, BTreeMap<u64, Vec<u8>>), TestCaseError> {
    Journal::open_with(dir, SEGMENT, false)
        .map_err(|e| TestCaseError::fail(format!("cannot open the journal: {e}")))
}

#[derive(Debug, Clone)]
enum Op {
    Put(u64, Vec<u8>),
    Remove(u64),
    Sync,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0u64..12, prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(id, r)| Op::Put(id, r)),
        2 => (0u64..12).prop_map(Op::Remove),
        2 => Just(Op::Sync),
    ];
    prop::collection::vec(op, 1..40)
}

/// Runs `ops` and a last sync, keeping `synced` (what is pending on disk) and `puts` (every
/// record ever put, by id) up to date.
fn run(
    journal: &mut Journal,
    ops: &[Op],
    synced: &mut BTreeMap<u64, Vec<u8>>,
    puts: &mut BTreeMap<u64, Vec<Vec<u8>>>,
) -> Result<(), TestCaseError> {
    let mut staged: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
    for op in ops.iter().chain([&Op::Sync]) {
        match op {
            Op::Put(id, bytes) => {
                journal.put(*id, bytes);
                staged.push((*id, Some(bytes.clone())));
                puts.entry(*id).or_default().push(bytes.clone());
            }
            Op::Remove(id) => {
                journal.remove(*id);
                staged.push((*id, None));
            }
            Op::Sync => {
                journal
                    .sync()
                    .map_err(|e| TestCaseError::fail(format!("sync failed: {e}")))?;
                for (id, record) in staged.drain(..) {
                    match record {
                        Some(record) => synced.insert(id, record),
                        None => synced.remove(&id),
                    };
                }
            }
        }
    }
    Ok(())
}

/// The segment files of a journal directory, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn the_corpus_records_decode_without_panicking() {
    for (name, bytes) in prop_support::corpus("journal") {
        if name.ends_with(".record") {
            if let Err(error) = check_bytes(&bytes) {
                panic!("corpus file {name}: {error}");
            }
            assert!(
                record::decode(7, &bytes).is_ok(),
                "{name} is a valid record"
            );
        }
    }
}

#[test]
fn the_corpus_segments_open_without_panicking() {
    for (name, bytes) in prop_support::corpus("journal") {
        if name.ends_with(".log") {
            let dir = Dir::new();
            std::fs::create_dir_all(&dir.0).expect("temp dir");
            std::fs::write(dir.0.join("0000000000000001.log"), &bytes).expect("segment");
            let (mut journal, records) = Journal::open_with(&dir.0, SEGMENT, false)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            for (id, record) in &records {
                assert!(record::decode(*id, record).is_ok(), "{name}: record {id}");
            }
            journal.put(1000, b"after");
            journal.sync().expect("sync");
            drop(journal);
            let (_, again) = Journal::open_with(&dir.0, SEGMENT, false).expect("reopen");
            assert_eq!(
                again.get(&1000).map(Vec::as_slice),
                Some(&b"after"[..]),
                "{name}"
            );
        }
    }
}

/// Writes the corpus again: `HOOKER_WRITE_CORPUS=1 cargo test -p hooker --test prop_journal`.
#[test]
fn write_the_corpus_when_asked() {
    if std::env::var_os("HOOKER_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = prop_support::corpus_dir("journal");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let delivery = Delivery {
        id: 1,
        route: "tracee-to-log".into(),
        actions: vec!["forensic-log".into(), "slack".into()],
        message: Message {
            route: "tracee-to-log".into(),
            event_id: "0193a1b2c3d4e-000001".into(),
            title: "Anti-Debugging detected".into(),
            body: "{\"signatureID\":\"TRC-102\"}".into(),
            body_pending: false,
            url: Some("https://console.example/x".into()),
            fields: [("severity".to_string(), json!("high"))].into(),
            owners: vec!["sec@example.com".into()],
            event: Arc::new(EventJson::new(
                json!({"eventName": "anti_debugging", "args": [1.5, "é"]}),
            )),
        },
        attempts: 2,
        created_ms: 1_733_400_000_000,
        next_ms: 1_733_400_005_000,
        last_error: Some("HTTP 503: busy".into()),
        stored_bytes: 0,
    };
    let mut bytes = Vec::new();
    record::encode(&delivery, &mut bytes).expect("encode");
    std::fs::write(dir.join("format3.record"), &bytes).expect("write");
    let mut pending = delivery.clone();
    pending.message.body = String::new();
    pending.message.body_pending = true;
    record::encode(&pending, &mut bytes).expect("encode");
    std::fs::write(dir.join("format3_body_pending.record"), &bytes).expect("write");
    std::fs::write(
        dir.join("format1_json.record"),
        serde_json::to_vec(&delivery).expect("json"),
    )
    .expect("write");

    // A segment: three puts, a reschedule and a removal, as the writer leaves it.
    let temp = Dir::new();
    let (mut journal, _) = Journal::open_with(&temp.0, 1 << 20, false).expect("journal");
    for id in 1..=3 {
        let mut each = delivery.clone();
        each.id = id;
        record::encode(&each, &mut bytes).expect("encode");
        journal.put(id, &bytes);
    }
    journal.sync().expect("sync");
    record::encode(&pending, &mut bytes).expect("encode");
    journal.put(2, &bytes);
    journal.remove(3);
    journal.sync().expect("sync");
    drop(journal);
    let segment = segments(&temp.0).pop().expect("a segment");
    std::fs::copy(segment, dir.join("three_puts_a_reschedule_a_removal.log")).expect("copy");
}

proptest! {
    #![proptest_config(prop_support::config(512))]

    #[test]
    fn a_delivery_round_trips_through_its_record(delivery in delivery()) {
        let mut bytes = Vec::new();
        record::encode(&delivery, &mut bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let decoded = record::decode(delivery.id, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        same(&decoded, &delivery)?;
        same(&record::decode_meta(delivery.id, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?, &meta(&delivery))?;
        // Format 1 (a JSON document) still reads.
        let json = serde_json::to_vec(&delivery).map_err(|e| TestCaseError::fail(e.to_string()))?;
        same(&record::decode(delivery.id, &json).map_err(|e| TestCaseError::fail(e.to_string()))?, &delivery)?;
        // Every strict prefix is an error.
        for cut in 0..bytes.len() {
            prop_assert!(record::decode(delivery.id, &bytes[..cut]).is_err(), "prefix {}", cut);
        }
    }

    #[test]
    fn any_bytes_are_a_record_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_bytes(&bytes)?;
    }

    #[test]
    fn damaged_records_are_a_record_or_an_error(
        delivery in delivery(),
        changes in prop_support::mutations(4),
    ) {
        let mut bytes = Vec::new();
        record::encode(&delivery, &mut bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_bytes(&prop_support::mutate(&bytes, &changes))?;
    }

    #[test]
    fn mutated_corpus_records_are_a_record_or_an_error(
        (_name, bytes) in prop_support::mutated_seed(prop_support::corpus("journal"), 6),
    ) {
        check_bytes(&bytes)?;
    }

    #[test]
    fn a_journal_replays_what_was_put_and_not_removed(first in ops(), second in ops()) {
        let dir = Dir::new();
        let (mut synced, mut puts) = (BTreeMap::new(), BTreeMap::new());
        let (mut journal, records) = open(&dir.0)?;
        prop_assert!(records.is_empty());
        run(&mut journal, &first, &mut synced, &mut puts)?;
        drop(journal);
        let (mut journal, records) = open(&dir.0)?;
        prop_assert_eq!(&records, &synced);
        // Written on after a reopen, then reopened again.
        run(&mut journal, &second, &mut synced, &mut puts)?;
        drop(journal);
        let (_, records) = open(&dir.0)?;
        prop_assert_eq!(&records, &synced);
    }

    #[test]
    fn a_damaged_journal_opens_returns_only_what_was_put_and_writes_on(
        ops in ops(),
        changes in prop_support::mutations(4),
        which in any::<usize>(),
    ) {
        let dir = Dir::new();
        let (mut synced, mut puts) = (BTreeMap::new(), BTreeMap::new());
        let (mut journal, _) = open(&dir.0)?;
        run(&mut journal, &ops, &mut synced, &mut puts)?;
        drop(journal);
        let files = segments(&dir.0);
        prop_assume!(!files.is_empty());
        let victim = &files[which % files.len()];
        let bytes = std::fs::read(victim).map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(victim, prop_support::mutate(&bytes, &changes))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;

        let (mut journal, records) = open(&dir.0)?;
        for (id, record) in &records {
            prop_assert!(puts.get(id).is_some_and(|all| all.contains(record)), "record {} was never put", id);
        }
        // Whatever the damage, what is written now reads back.
        journal.put(1000, b"after the damage");
        journal.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let reader = journal.reader();
        prop_assert_eq!(
            reader.read(1000).map_err(|e| TestCaseError::fail(e.to_string()))?,
            Some(b"after the damage".to_vec())
        );
        drop(journal);
        let (_, again) = open(&dir.0)?;
        prop_assert_eq!(again.get(&1000).map(Vec::as_slice), Some(&b"after the damage"[..]));
    }
}
