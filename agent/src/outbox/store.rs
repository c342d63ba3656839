//! The on-disk state: pending deliveries in the append-only journal (`journal.rs`), and dead
//! letters, dedup keys and aggregation buffers in one redb file. All writes go through one writer
//! thread that commits whatever has queued up together (group commit), so durability costs one
//! fsync per batch, not per event.
//!
//! A group commit writes, in this order: the journal's new and ended deliveries (fsync); then the
//! redb changes (dead letters, dedup keys, aggregation buffers) in one transaction; then the
//! journal removals of deliveries that just became dead letters (fsync). So a crash between the
//! steps can repeat work (a delivery both pending and dead is resumed as dead only; a dedup key
//! not yet stored lets one duplicate through) but never loses an event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, mpsc};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::journal::{Journal, JournalReader};
use crate::message::Message;

/// Bump with a migration (and a test opening the previous format) when a record shape changes.
/// Version 2: pending deliveries are `record.rs` records instead of JSON documents. Version 3:
/// pending deliveries live in the journal, not redb's `outbox` table. Older stores are migrated
/// at open (records copied into the journal as they are, then the table emptied and the version
/// set, in that order, so a crash in between just migrates again); older Hookers then refuse the
/// store instead of missing its pending deliveries. Version 4: the journal has `Oldest` entries
/// (which tell a missing segment from a retired one); nothing to migrate, but a version 3 Hooker
/// would take them for damage and skip the rest of each segment, so it must refuse the store.
pub const SCHEMA_VERSION: u64 = 4;

/// redb's page cache. Its default (1 GiB) would let a busy node's agent grow to that size; the
/// store is written far more than read (reads happen at start-up and for dead-letter commands),
/// so a small cache costs little.
const CACHE_BYTES: usize = 16 << 20;
/// How long a busy writer waits for more to commit together (see `write_loop`).
const LINGER: Duration = Duration::from_micros(100);
/// Batches in one commit that make the writer busy (see `write_loop`).
const BUSY: usize = 4;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
const DEDUP: TableDefinition<&str, u64> = TableDefinition::new("dedup");
const AGGREGATE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("aggregate");

/// One pending delivery: a rendered message for one action, or for a chain of actions when the
/// route has `serialize-actions` (the head runs first; the rest follow in order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub route: String,
    pub actions: Vec<String>,
    pub message: Message,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub next_ms: u64,
    pub last_error: Option<String>,
    /// Size of its record in the store (0 until encoded); counts towards the outbox's
    /// pending-bytes bound.
    #[serde(skip)]
    pub stored_bytes: u64,
}

/// A delivery that was given up on, kept until replayed or dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub delivery: Delivery,
    pub error: String,
    pub died_ms: u64,
    /// Its message was never made (the route's template failed): a replay renders the event
    /// with the route's template in force then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unrendered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state store {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// The redb file cannot be read: what to do about it is in the message.
    #[error("state store {path} is damaged ({message}). {advice}")]
    Damaged {
        path: PathBuf,
        message: String,
        advice: String,
    },
    #[error(
        "state store {path} has schema version {found}; this Hooker reads version {SCHEMA_VERSION}"
    )]
    Schema { path: PathBuf, found: u64 },
    #[error("state store: {0}")]
    Io(String),
}

fn io(err: impl std::fmt::Display) -> StoreError {
    StoreError::Io(err.to_string())
}

/// One change to the store.
pub enum Op {
    /// A pending delivery, already encoded (by [`Op::put`], on the caller's thread: the writer
    /// thread is the one thing every commit waits for, so it does no more than write).
    PutDelivery {
        id: u64,
        record: Vec<u8>,
    },
    RemoveDelivery(u64),
    Kill(DeadLetter),
    RemoveDead(u64),
    PutDedup {
        key: String,
        expires_ms: u64,
    },
    RemoveDedup(String),
    PushAggregate {
        route: String,
        seq: u64,
        message: Message,
    },
    RemoveAggregate {
        route: String,
        seq: u64,
    },
}

impl Op {
    /// Encodes `delivery` for [`Op::PutDelivery`] and notes the record's size in it.
    pub fn put(delivery: &mut Delivery) -> Result<Op, StoreError> {
        let mut record = Vec::with_capacity(super::record::size_hint(delivery));
        super::record::encode(delivery, &mut record).map_err(io)?;
        delivery.stored_bytes = record.len() as u64;
        Ok(Op::PutDelivery {
            id: delivery.id,
            record,
        })
    }
}

pub type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Batch {
    ops: Vec<Op>,
    done: Option<Completion>,
}

/// What a restart finds on disk.
pub struct Recovered {
    pub pending: Vec<Delivery>,
    /// Journal entries skipped as damaged, and records that could not be decoded (each logged).
    pub damaged_entries: u64,
    /// Journal segment files missing (each logged).
    pub missing_segments: u64,
    /// Pending deliveries decoded without their messages (past the resident limit).
    pub stored: std::collections::HashSet<u64>,
    pub dead: usize,
    pub dedup: Vec<(String, u64)>,
    pub aggregate: Vec<(String, u64, Message)>,
    pub next_id: u64,
}

/// The redb file, closed and opened again by the writer after an I/O error (redb fails every
/// later operation until then: one full disk would otherwise refuse dead letters, dedup keys and
/// aggregation buffers until a restart).
struct Db {
    path: PathBuf,
    db: RwLock<Option<Database>>,
}

impl Db {
    /// Runs `f` on the open database (opening it again first if a failed write closed it).
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            self.reopen();
        }
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match db.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Io(
                "the redb file is closed after an I/O error and could not be opened again yet"
                    .into(),
            )),
        }
    }

    /// Closes the database and opens it again (after a failed write).
    fn reopen(&self) {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Closed first: redb refuses a second open of a file this process holds.
        *db = None;
        match open_db(&self.path) {
            Ok(reopened) => {
                *db = Some(reopened);
                tracing::info!(path = %self.path.display(), "State store file opened again after a failed write.");
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "Cannot open the state store file again after a failed write; tried again at the next write.");
            }
        }
    }
}

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// A handle to the writer thread, and read access for the dead-letter commands.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::SyncSender<Batch>,
    db: Arc<Db>,
    writer: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    journal: JournalReader,
}

/// Where the journal of the store at `path` lives (`hooker.redb` → `hooker.journal/`).
pub fn journal_dir(path: &Path) -> PathBuf {
    path.with_extension("journal")
}

impl Store {
    /// Opens (or creates) the store and starts its writer thread.
    pub fn open(path: &Path) -> Result<(Store, Recovered), StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let (db, migrating) = open_checked(path)?;
        let journal_dir = journal_dir(path);
        let (mut journal, records) = Journal::open(&journal_dir).map_err(|e| StoreError::Open {
            path: journal_dir.clone(),
            message: e.to_string(),
        })?;
        let records = match migrating {
            Some(from) => migrate(&db, &mut journal, records, from, path)?,
            None => records,
        };
        let mut recovered = recover(&db, &mut journal, records)?;
        recovered.damaged_entries += journal.damage().entries;
        recovered.missing_segments = journal.damage().missing_segments.len() as u64;
        let reader = journal.reader();
        let db = Arc::new(Db {
            path: path.to_path_buf(),
            db: RwLock::new(Some(db)),
        });
        let (tx, rx) = mpsc::sync_channel::<Batch>(4096);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("hooker-store".into())
            .spawn(move || write_loop(&writer_db, journal, rx))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let writer = std::sync::Arc::new(std::sync::Mutex::new(Some(writer)));
        Ok((
            Store {
                tx,
                db,
                writer,
                journal: reader,
            },
            recovered,
        ))
    }

    /// Stops the writer once everything queued is written, and waits for it (when this is the
    /// last handle; otherwise the writer stops with the last one).
    pub fn close(self) {
        let Store { tx, db, writer, .. } = self;
        drop(tx);
        drop(db);
        if let Ok(writer) = std::sync::Arc::try_unwrap(writer)
            && let Some(handle) = writer.into_inner().ok().flatten()
        {
            let _ = handle.join();
        }
    }

    /// A pending delivery as it is on disk, or `None` when it is not pending (finished, or its
    /// commit not yet written).
    pub fn read_pending(&self, id: u64) -> Result<Option<Delivery>, StoreError> {
        let Some(record) = self.journal.read(id).map_err(io)? else {
            return Ok(None);
        };
        super::record::decode(id, &record).map(Some).map_err(io)
    }

    /// Queues changes; `done` runs once they are on disk (or failed). Blocks while the writer is
    /// far behind, which pushes back on the router.
    pub fn write(&self, ops: Vec<Op>, done: Option<Completion>) {
        if let Err(mpsc::SendError(batch)) = self.tx.send(Batch { ops, done })
            && let Some(done) = batch.done
        {
            done(Err("state store writer stopped".into()));
        }
    }

    /// Writes and waits (for the async side: dead-letter commands, shutdown).
    pub async fn write_and_wait(&self, ops: Vec<Op>) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.write(
                ops,
                Some(Box::new(move |result| {
                    let _ = tx.send(result);
                })),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
        rx.await
            .map_err(|_| "state store writer stopped".to_string())?
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.db.with(|db| {
            let txn = db.begin_read().map_err(io)?;
            let table = txn.open_table(DEAD).map_err(io)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(io)? {
                let (_, value) = entry.map_err(io)?;
                if let Ok(dead) = serde_json::from_slice::<DeadLetter>(value.value()) {
                    out.push(dead);
                }
            }
            Ok(out)
        })
    }

    /// Size of the store on disk: the redb file and the journal.
    pub fn disk_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            + Journal::disk_bytes(&journal_dir(path))
    }
}

/// Opens the redb file and checks its schema version; returns it and, for an older store whose
/// pending deliveries are still in its `outbox` table, the version to migrate from. A file that
/// cannot be read is [`StoreError::Damaged`], saying what the operator can do.
fn open_checked(path: &Path) -> Result<(Database, Option<u64>), StoreError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let damaged = |message: String| StoreError::Damaged {
        path: path.to_path_buf(),
        message,
        advice: damaged_advice(path),
    };
    let db = open_db(path).map_err(|e| match e {
        // Not damage: another process holds it, or the file system refuses.
        redb::DatabaseError::DatabaseAlreadyOpen
        | redb::DatabaseError::LockProtocolMismatch
        | redb::DatabaseError::TransactionInProgress
        | redb::DatabaseError::UpgradeRequired(_) => StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(error))
            if !matches!(
                error.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            StoreError::Open {
                path: path.to_path_buf(),
                message: error.to_string(),
            }
        }
        other => damaged(other.to_string()),
    })?;
    // Reading the tables can find damage the open did not.
    let checked = (|| {
        let txn = db.begin_write().map_err(io)?;
        let migrating = {
            let mut meta = txn.open_table(META).map_err(io)?;
            let found = meta.get("schema_version").map_err(io)?.map(|v| v.value());
            let migrating = match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                    None
                }
                Some(SCHEMA_VERSION) => None,
                Some(old @ 1..SCHEMA_VERSION) => Some(old),
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: path.to_path_buf(),
                        found,
                    });
                }
            };
            txn.open_table(OUTBOX).map_err(io)?;
            txn.open_table(DEAD).map_err(io)?;
            txn.open_table(DEDUP).map_err(io)?;
            txn.open_table(AGGREGATE).map_err(io)?;
            migrating
        };
        txn.commit().map_err(io)?;
        Ok(migrating)
    })();
    match checked {
        Ok(migrating) => Ok((db, migrating)),
        Err(StoreError::Io(message)) => Err(damaged(message)),
        Err(other) => Err(other),
    }
}

/// What to do about a damaged redb file: true only because pending deliveries live in the
/// journal next to it (schema version 3 on), which a new file finds and recovers whole.
fn damaged_advice(path: &Path) -> String {
    let journal = journal_dir(path);
    if journal.is_dir() {
        format!(
            "To start again, move it aside (e.g. `mv {path} {path}.damaged`): the pending deliveries are in the journal {journal} and are all recovered at the next start; the dead letters, dedup keys and aggregation buffers (messages waiting to be aggregated) kept in that file are lost.",
            path = path.display(),
            journal = journal.display()
        )
    } else {
        format!(
            "To start again, move it aside (e.g. `mv {path} {path}.damaged`); there is no journal next to it ({journal}), so the pending deliveries kept in that file are lost with its dead letters, dedup keys and aggregation buffers.",
            path = path.display(),
            journal = journal.display()
        )
    }
}

/// Moves the pending deliveries of a version 1 or 2 store (redb's `outbox` table) into the
/// journal, then empties the table and marks the store current in the same transaction (a
/// version 3 store has nothing in the table: it is only marked).
fn migrate(
    db: &Database,
    journal: &mut Journal,
    mut records: BTreeMap<u64, Vec<u8>>,
    from: u64,
    path: &Path,
) -> Result<BTreeMap<u64, Vec<u8>>, StoreError> {
    let txn = db.begin_write().map_err(io)?;
    {
        let mut outbox = txn.open_table(OUTBOX).map_err(io)?;
        let mut moved = 0;
        for entry in outbox.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            journal.put(key.value(), value.value());
            records.insert(key.value(), value.value().to_vec());
            moved += 1;
        }
        journal.sync().map_err(io)?;
        outbox.retain(|_, _| false).map_err(io)?;
        let mut meta = txn.open_table(META).map_err(io)?;
        meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
        tracing::info!(path = %path.display(), from, pending = moved, "State store upgraded: pending deliveries moved into the journal.");
    }
    txn.commit().map_err(io)?;
    Ok(records)
}

fn recover(
    db: &Database,
    journal: &mut Journal,
    records: BTreeMap<u64, Vec<u8>>,
) -> Result<Recovered, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let mut next_id = journal.max_id() + 1;
    let dead_table = txn.open_table(DEAD).map_err(io)?;
    let mut dead_ids = std::collections::HashSet::new();
    for entry in dead_table.iter().map_err(io)? {
        let (key, _) = entry.map_err(io)?;
        next_id = next_id.max(key.value() + 1);
        dead_ids.insert(key.value());
    }
    let mut pending = Vec::new();
    let mut stored = std::collections::HashSet::new();
    let mut resident = 0;
    let mut damaged_entries = 0;
    for (id, record) in records {
        if dead_ids.contains(&id) {
            // Killed, and the crash came before the journal heard of it.
            journal.remove(id);
            continue;
        }
        // Past the outbox's resident limit only the metadata is decoded: a backlog stays on disk.
        let whole = resident < super::RESIDENT_BYTES;
        let decoded = if whole {
            super::record::decode(id, &record)
        } else {
            super::record::decode_meta(id, &record)
        };
        match decoded {
            Ok(mut delivery) => {
                delivery.stored_bytes = record.len() as u64;
                if whole {
                    resident += delivery.stored_bytes;
                } else {
                    stored.insert(id);
                }
                pending.push(delivery)
            }
            Err(err) => {
                damaged_entries += 1;
                tracing::error!(id, %err, "Unreadable pending delivery skipped: it is lost.")
            }
        }
    }
    journal.sync().map_err(io)?;
    let dead = dead_table.len().map_err(io)? as usize;
    let mut dedup = Vec::new();
    for entry in txn.open_table(DEDUP).map_err(io)?.iter().map_err(io)? {
        let (key, value) = entry.map_err(io)?;
        dedup.push((key.value().to_string(), value.value()));
    }
    let mut aggregate = Vec::new();
    for entry in txn.open_table(AGGREGATE).map_err(io)?.iter().map_err(io)? {
        let (key, value) = entry.map_err(io)?;
        let (route, seq) = key.value();
        next_id = next_id.max(seq + 1);
        if let Ok(message) = serde_json::from_slice::<Message>(value.value()) {
            aggregate.push((route.to_string(), seq, message));
        }
    }
    Ok(Recovered {
        pending,
        damaged_entries,
        missing_segments: 0,
        stored,
        dead,
        dedup,
        aggregate,
        next_id,
    })
}

/// The writer: one group commit for everything queued, then the completions.
///
/// Under load it lingers a moment before committing, so that one `fdatasync` serves more
/// requests: on a VM a sync costs an exit to kick the disk and tens of microseconds of CPU,
/// which a busy node would rather spend on events, while each waiting request waits at most
/// [`LINGER`] longer (the sleep overshoots by some 80 µs here). Load means a commit of [`BUSY`]
/// batches or more; it lasts while commits keep half that. A quiet node commits at once.
/// A producer that waits for each acknowledgement on few connections feels the linger most:
/// at 200 µs, four gRPC streams at 5,000 events/s (0.8 ms per round trip each) read p99 6–16 ms
/// against 3–6 ms without, while 32 streams read 0.72 ms; and 32 HTTP connections at full speed
/// (one event per request, so each waits for its commit) made 24,500 requests/s against 28,700
/// without and 27,800–28,800 at 100 µs, which serves 64 connections best (32,100–33,600 against
/// 29,600–31,500 without). Lingering only from 8 batches on no longer served the busy node.
fn write_loop(db: &Db, mut journal: Journal, rx: mpsc::Receiver<Batch>) {
    const MAX_BATCHES: usize = 4096;
    let mut busy = false;
    while let Some(mut batches) = crate::batch::recv_batch(&rx, MAX_BATCHES) {
        if busy {
            // A sleep, not a timed receive: senders do not wake a writer that is not waiting.
            std::thread::sleep(LINGER);
            batches.extend(
                rx.try_iter()
                    .take(MAX_BATCHES.saturating_sub(batches.len())),
            );
        }
        busy = batches.len() >= if busy { BUSY / 2 } else { BUSY };
        let result = apply(db, &mut journal, &mut batches).map_err(|e| e.to_string());
        if let Err(error) = &result {
            tracing::error!(%error, batches = batches.len(), "State store commit failed.");
            // A failing disk: slow down instead of spinning.
            std::thread::sleep(Duration::from_millis(100));
        }
        for batch in batches {
            if let Some(done) = batch.done {
                done(result.clone());
            }
        }
    }
}

fn apply(db: &Db, journal: &mut Journal, batches: &mut [Batch]) -> Result<(), StoreError> {
    let mut round = Round::default();
    for batch in batches.iter_mut() {
        for op in batch.ops.drain(..) {
            // A delivery put again after being killed in this round (a dead letter replayed at
            // once) must follow the kill's removal: finish the round first.
            if let Op::PutDelivery { id, .. } = &op
                && round.kills.contains(id)
            {
                std::mem::take(&mut round).finish(db, journal)?;
            }
            match op {
                Op::PutDelivery { id, record } => journal.put_owned(id, record),
                Op::RemoveDelivery(id) => journal.remove(id),
                Op::Kill(letter) => {
                    round.kills.push(letter.delivery.id);
                    round.db.push(Op::Kill(letter));
                }
                other => round.db.push(other),
            }
        }
    }
    round.finish(db, journal)
}

/// One group commit's redb changes and kills; the journal holds its staged deliveries.
#[derive(Default)]
struct Round {
    db: Vec<Op>,
    kills: Vec<u64>,
}

impl Round {
    /// Journal first, then redb, then the kills' removals (see the module doc for why).
    fn finish(self, db: &Db, journal: &mut Journal) -> Result<(), StoreError> {
        journal.sync().map_err(io)?;
        if !self.db.is_empty()
            && let Err(error) = db.with(|db| write_db(db, self.db))
        {
            // Its kills stay pending in the journal (they resume at the next start); redb
            // refuses everything after an I/O error until it is opened again.
            db.reopen();
            return Err(error);
        }
        if !self.kills.is_empty() {
            for id in self.kills {
                journal.remove(id);
            }
            journal.sync().map_err(io)?;
        }
        Ok(())
    }
}

fn write_db(db: &Database, ops: Vec<Op>) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(io)?;
    {
        let mut dead = txn.open_table(DEAD).map_err(io)?;
        let mut dedup = txn.open_table(DEDUP).map_err(io)?;
        let mut aggregate = txn.open_table(AGGREGATE).map_err(io)?;
        for op in ops {
            match op {
                // The journal's; `apply` never passes them here.
                Op::PutDelivery { .. } | Op::RemoveDelivery(_) => {}
                Op::Kill(letter) => {
                    let bytes = serde_json::to_vec(&letter).map_err(io)?;
                    dead.insert(letter.delivery.id, bytes.as_slice())
                        .map_err(io)?;
                }
                Op::RemoveDead(id) => {
                    dead.remove(id).map_err(io)?;
                }
                Op::PutDedup { key, expires_ms } => {
                    dedup.insert(key.as_str(), expires_ms).map_err(io)?;
                }
                Op::RemoveDedup(key) => {
                    dedup.remove(key.as_str()).map_err(io)?;
                }
                Op::PushAggregate {
                    route,
                    seq,
                    message,
                } => {
                    let bytes = serde_json::to_vec(&message).map_err(io)?;
                    aggregate
                        .insert((route.as_str(), seq), bytes.as_slice())
                        .map_err(io)?;
                }
                Op::RemoveAggregate { route, seq } => {
                    aggregate.remove((route.as_str(), seq)).map_err(io)?;
                }
            }
        }
    }
    txn.commit().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hooker-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.redb")
    }

    fn delivery(id: u64) -> Delivery {
        Delivery {
            id,
            route: "r".into(),
            actions: vec!["a".into()],
            message: Message {
                route: "r".into(),
                event_id: "e".into(),
                title: "t".into(),
                body: "{\"n\":1}".into(),
                body_pending: false,
                url: None,
                fields: Default::default(),
                owners: vec![],
                event: std::sync::Arc::new(serde_json::json!({"n": 1}).into()),
            },
            attempts: 1,
            created_ms: 5,
            next_ms: 6,
            last_error: Some("HTTP 503".into()),
            stored_bytes: 0,
        }
    }

    /// Writes a store the way schema version 1 did: JSON records.
    fn write_version(path: &Path, version: u64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", version).unwrap();
            let mut outbox = txn.open_table(OUTBOX).unwrap();
            let json = serde_json::to_vec(&delivery(41)).unwrap();
            outbox.insert(41, json.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    fn put(id: u64) -> Op {
        Op::put(&mut delivery(id)).unwrap()
    }

    fn kill(id: u64) -> Op {
        Op::Kill(DeadLetter {
            delivery: delivery(id),
            error: "HTTP 400".into(),
            died_ms: 7,
            unrendered: false,
        })
    }

    fn write(store: &Store, ops: Vec<Op>) {
        let (tx, rx) = std::sync::mpsc::channel();
        store.write(ops, Some(Box::new(move |r| tx.send(r).unwrap())));
        rx.recv().unwrap().unwrap();
    }

    /// Stops `store`, opens it again, and returns the ids of its pending deliveries and what
    /// else it recovered.
    fn reopen(store: Store, path: &Path) -> (Store, Vec<u64>, Recovered) {
        store.close();
        let (store, recovered) = Store::open(path).unwrap();
        let ids = recovered.pending.iter().map(|d| d.id).collect();
        (store, ids, recovered)
    }

    fn schema_version(store: &Store) -> u64 {
        store
            .db
            .with(|db| {
                let txn = db.begin_read().map_err(io)?;
                let meta = txn.open_table(META).map_err(io)?;
                Ok(meta.get("schema_version").map_err(io)?.map(|v| v.value()))
            })
            .unwrap()
            .unwrap()
    }

    #[test]
    fn older_stores_move_their_pending_deliveries_into_the_journal() {
        for version in [1, 2, 3] {
            let path = temp(&format!("v{version}"));
            write_version(&path, version);
            let (store, recovered) = Store::open(&path).unwrap();
            assert_eq!(recovered.pending.len(), 1);
            assert_eq!(
                serde_json::to_value(&recovered.pending[0]).unwrap(),
                serde_json::to_value(delivery(41)).unwrap()
            );
            assert_eq!(recovered.next_id, 42);
            assert_eq!(schema_version(&store), SCHEMA_VERSION);
            let outbox_empty = store.db.with(|db| {
                let txn = db.begin_read().map_err(io)?;
                txn.open_table(OUTBOX).map_err(io)?.is_empty().map_err(io)
            });
            assert!(outbox_empty.unwrap());
            // New records go to the journal too; both survive a restart.
            write(&store, vec![put(42)]);
            let (store, ids, recovered) = reopen(store, &path);
            assert_eq!(ids, vec![41, 42]);
            assert_eq!(recovered.next_id, 43);
            store.close();
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    #[test]
    fn a_backlog_past_the_resident_limit_is_recovered_without_its_messages() {
        let path = temp("backlog");
        let (store, _) = Store::open(&path).unwrap();
        let big = "x".repeat(200_000);
        let ops = (1..=8)
            .map(|id| {
                let mut d = delivery(id);
                d.message.body = big.clone();
                Op::put(&mut d).unwrap()
            })
            .collect();
        write(&store, ops);
        let (store, ids, recovered) = reopen(store, &path);
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
        // Records are decoded whole until 1 MB is reached (the sixth of 200 KB crosses it).
        let whole: Vec<u64> = recovered
            .pending
            .iter()
            .filter(|d| d.message.body == big)
            .map(|d| d.id)
            .collect();
        assert_eq!(whole, (1..=6).collect::<Vec<_>>());
        assert_eq!(recovered.stored, [7, 8].into());
        for d in recovered.pending.iter().filter(|d| d.id > 6) {
            assert!(d.message.body.is_empty());
            assert_eq!((d.attempts, d.next_ms, d.actions.len()), (1, 6, 1));
            let read = store.read_pending(d.id).unwrap().unwrap();
            assert_eq!(read.message.body, big);
        }
        store.close();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn deliveries_end_as_removed_or_dead_and_ids_are_never_reused() {
        let path = temp("ops");
        let (store, _) = Store::open(&path).unwrap();
        let mut ops = Vec::new();
        for id in 1..=3 {
            ops.push(put(id));
        }
        write(&store, ops);
        write(&store, vec![Op::RemoveDelivery(1), kill(2)]);
        assert_eq!(store.dead_letters().unwrap().len(), 1);
        let (store, ids, recovered) = reopen(store, &path);
        assert_eq!(ids, vec![3]);
        assert_eq!(recovered.dead, 1);
        // Replaying the dead letter puts it back in the same commit that drops it from `dead`.
        write(
            &store,
            vec![Op::RemoveDelivery(3), put(2), Op::RemoveDead(2)],
        );
        let (store, ids, recovered) = reopen(store, &path);
        assert_eq!(ids, vec![2]);
        assert_eq!(recovered.dead, 0);
        assert_eq!(recovered.next_id, 4);
        // Killed and replayed within one group commit: the kill's removal comes first.
        write(&store, vec![kill(2), put(2), Op::RemoveDead(2)]);
        let (store, ids, recovered) = reopen(store, &path);
        assert_eq!(ids, vec![2]);
        assert_eq!(recovered.dead, 0);
        store.close();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_crash_between_dead_letter_and_journal_resumes_it_as_dead_only() {
        let path = temp("kill-crash");
        let (store, _) = Store::open(&path).unwrap();
        write(&store, vec![put(5)]);
        // The redb half of a kill, without the journal removal that follows it.
        store.db.with(|db| write_db(db, vec![kill(5)])).unwrap();
        let (store, ids, recovered) = reopen(store, &path);
        assert!(ids.is_empty());
        assert_eq!(recovered.dead, 1);
        let (store, ids, _) = reopen(store, &path);
        assert!(ids.is_empty());
        store.close();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_newer_store_is_refused() {
        let path = temp("v5");
        write_version(&path, 5);
        let err = Store::open(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("schema version 5")),
            "{err:?}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Damages the redb file at `path` the ways a disk or a person might.
    fn damage(path: &Path, how: &str) {
        let mut bytes = std::fs::read(path).unwrap();
        match how {
            "header" => bytes[..512].iter_mut().for_each(|b| *b ^= 0xA5),
            "truncated" => bytes.truncate(100),
            "zeroed" => bytes.iter_mut().for_each(|b| *b = 0),
            _ => unreachable!(),
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_damaged_redb_file_says_what_to_do_and_doing_it_recovers_every_pending_delivery() {
        for how in ["header", "truncated", "zeroed"] {
            let path = temp(&format!("damaged-{how}"));
            let (store, _) = Store::open(&path).unwrap();
            write(&store, (1..=4).map(put).collect());
            write(
                &store,
                vec![
                    kill(4),
                    Op::PutDedup {
                        key: "k".into(),
                        expires_ms: u64::MAX,
                    },
                ],
            );
            store.close();
            damage(&path, how);
            let err = Store::open(&path).err().map(|e| e.to_string());
            let err = err.unwrap_or_else(|| panic!("{how}: a damaged file was opened"));
            let aside = format!("{}.damaged", path.display());
            assert!(
                err.contains(&format!("mv {} {aside}", path.display())),
                "{how}: {err}"
            );
            assert!(
                err.contains("pending deliveries are in the journal"),
                "{how}: {err}"
            );
            // What the message says: moved aside, every pending delivery comes back; the dead
            // letter and the dedup key do not.
            std::fs::rename(&path, &aside).unwrap();
            let (store, recovered) = Store::open(&path).unwrap();
            let ids: Vec<u64> = recovered.pending.iter().map(|d| d.id).collect();
            assert_eq!(ids, vec![1, 2, 3], "{how}");
            assert_eq!((recovered.dead, recovered.dedup.len()), (0, 0), "{how}");
            assert!(recovered.next_id > 4, "{how}");
            store.close();
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    #[test]
    fn the_redb_file_is_opened_again_after_a_failed_write() {
        let fs = super::super::journal::tests::Tmpfs::mount("redb-full", "4m");
        let path = fs.path().join("state.redb");
        let (store, _) = Store::open(&path).unwrap();
        write(&store, (1..=3).map(put).collect());
        let filler = fs.path().join("filler");
        super::super::journal::tests::fill(&filler);
        // Dead letters go to redb; it needs room for them, and has none.
        let big = |id: u64| {
            let mut d = delivery(id);
            d.message.body = "x".repeat(512 << 10);
            Op::Kill(DeadLetter {
                delivery: d,
                error: "HTTP 400".into(),
                died_ms: 7,
                unrendered: false,
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        store.write(vec![big(1)], Some(Box::new(move |r| tx.send(r).unwrap())));
        assert!(rx.recv().unwrap().is_err(), "the disk was not full");
        std::fs::remove_file(&filler).unwrap();
        write(&store, vec![big(2)]);
        assert_eq!(store.dead_letters().unwrap().len(), 1);
        let (store, ids, recovered) = reopen(store, &path);
        // The failed kill stays pending (it resumes), the other is dead.
        assert_eq!((ids, recovered.dead), (vec![1, 3], 1));
        store.close();
    }
}
