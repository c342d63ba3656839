//! The on-disk state: pending deliveries, dead letters, dedup keys and aggregation buffers, in one
//! redb file. All writes go through one writer thread that commits whatever has queued up in a
//! single transaction (group commit), so durability costs one fsync per batch, not per event.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::message::Message;

/// Bump with a migration (and a test opening the previous format) when a record shape changes.
/// Version 2: pending deliveries are `record.rs` records instead of JSON documents (a version 1
/// store is read as it is and marked version 2; older Hookers then refuse it instead of skipping
/// records they cannot read).
pub const SCHEMA_VERSION: u64 = 2;

/// redb's page cache. Its default (1 GiB) would let a busy node's agent grow to that size; the
/// store is written far more than read (reads happen at start-up and for dead-letter commands),
/// so a small cache costs little.
const CACHE_BYTES: usize = 16 << 20;

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
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state store {path}: {message}")]
    Open { path: PathBuf, message: String },
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
    /// Encodes `delivery` for [`Op::PutDelivery`] and notes the record's size in it; `encoder`
    /// encodes an event shared by several deliveries once.
    pub fn put(
        delivery: &mut Delivery,
        encoder: &mut super::record::Encoder,
    ) -> Result<Op, StoreError> {
        let mut record = Vec::new();
        super::record::encode(delivery, encoder, &mut record).map_err(io)?;
        delivery.stored_bytes = record.len() as u64;
        Ok(Op::PutDelivery {
            id: delivery.id,
            record,
        })
    }
}

type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Batch {
    ops: Vec<Op>,
    done: Option<Completion>,
}

/// What a restart finds on disk.
pub struct Recovered {
    pub pending: Vec<Delivery>,
    pub dead: usize,
    pub dedup: Vec<(String, u64)>,
    pub aggregate: Vec<(String, u64, Message)>,
    pub next_id: u64,
}

/// A handle to the writer thread, and read access for the dead-letter commands.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::SyncSender<Batch>,
    db: std::sync::Arc<Database>,
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
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let txn = db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let found = meta.get("schema_version").map_err(io)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(1) => {
                    tracing::info!(path = %path.display(), "State store upgraded from schema version 1.");
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: path.to_path_buf(),
                        found,
                    });
                }
            }
            txn.open_table(OUTBOX).map_err(io)?;
            txn.open_table(DEAD).map_err(io)?;
            txn.open_table(DEDUP).map_err(io)?;
            txn.open_table(AGGREGATE).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        let recovered = recover(&db)?;
        let db = std::sync::Arc::new(db);
        let (tx, rx) = mpsc::sync_channel::<Batch>(4096);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("hooker-store".into())
            .spawn(move || write_loop(&writer_db, rx))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok((Store { tx, db }, recovered))
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
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(DEAD).map_err(io)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(io)? {
            let (_, value) = entry.map_err(io)?;
            if let Ok(dead) = serde_json::from_slice::<DeadLetter>(value.value()) {
                out.push(dead);
            }
        }
        Ok(out)
    }

    /// Size of the store file on disk.
    pub fn disk_bytes(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

fn recover(db: &Database) -> Result<Recovered, StoreError> {
    let txn = db.begin_read().map_err(io)?;
    let mut pending = Vec::new();
    let mut next_id = 1;
    for entry in txn.open_table(OUTBOX).map_err(io)?.iter().map_err(io)? {
        let (key, value) = entry.map_err(io)?;
        next_id = next_id.max(key.value() + 1);
        match super::record::decode(key.value(), value.value()) {
            Ok(mut delivery) => {
                delivery.stored_bytes = value.value().len() as u64;
                pending.push(delivery)
            }
            Err(err) => {
                tracing::error!(id = key.value(), %err, "Unreadable pending delivery skipped.")
            }
        }
    }
    let dead_table = txn.open_table(DEAD).map_err(io)?;
    for entry in dead_table.iter().map_err(io)? {
        let (key, _) = entry.map_err(io)?;
        next_id = next_id.max(key.value() + 1);
    }
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
        dead,
        dedup,
        aggregate,
        next_id,
    })
}

/// The writer: one transaction for everything queued, then the completions.
fn write_loop(db: &Database, rx: mpsc::Receiver<Batch>) {
    const MAX_BATCHES: usize = 4096;
    while let Some(mut batches) = crate::batch::recv_batch(&rx, MAX_BATCHES) {
        let result = apply(db, &mut batches).map_err(|e| e.to_string());
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

fn apply(db: &Database, batches: &mut [Batch]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(io)?;
    {
        let mut outbox = txn.open_table(OUTBOX).map_err(io)?;
        let mut dead = txn.open_table(DEAD).map_err(io)?;
        let mut dedup = txn.open_table(DEDUP).map_err(io)?;
        let mut aggregate = txn.open_table(AGGREGATE).map_err(io)?;
        for batch in batches.iter_mut() {
            for op in batch.ops.drain(..) {
                match op {
                    Op::PutDelivery { id, record } => {
                        outbox.insert(id, record.as_slice()).map_err(io)?;
                    }
                    Op::RemoveDelivery(id) => {
                        outbox.remove(id).map_err(io)?;
                    }
                    Op::Kill(letter) => {
                        outbox.remove(letter.delivery.id).map_err(io)?;
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
                url: None,
                fields: Default::default(),
                owners: vec![],
                event: std::sync::Arc::new(serde_json::json!({"n": 1})),
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

    #[test]
    fn a_version_1_store_resumes_and_is_marked_version_2() {
        let path = temp("v1");
        write_version(&path, 1);
        let (store, recovered) = Store::open(&path).unwrap();
        assert_eq!(recovered.pending.len(), 1);
        assert_eq!(
            serde_json::to_value(&recovered.pending[0]).unwrap(),
            serde_json::to_value(delivery(41)).unwrap()
        );
        assert_eq!(recovered.next_id, 42);
        // New records are written in the new format and read back.
        let (tx, rx) = std::sync::mpsc::channel();
        store.write(
            vec![Op::put(&mut delivery(42), &mut Default::default()).unwrap()],
            Some(Box::new(move |r| tx.send(r).unwrap())),
        );
        rx.recv().unwrap().unwrap();
        let txn = store.db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("schema_version").unwrap().unwrap().value(), 2);
        let recovered = recover(&store.db).unwrap();
        assert_eq!(recovered.pending.len(), 2);
        assert_eq!(recovered.pending[1].id, 42);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_newer_store_is_refused() {
        let path = temp("v3");
        write_version(&path, 3);
        let err = Store::open(&path).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("schema version 3")),
            "{err:?}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
