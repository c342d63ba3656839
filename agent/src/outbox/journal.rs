//! The delivery journal: pending deliveries as an append-only log of segment files, so that a
//! group commit is one sequential write and one `fdatasync`, not a B-tree insert and delete per
//! delivery.
//!
//! Each entry is `len: u32 LE | crc32c: u32 LE | segment: u32 LE | kind: u8 | id: u64 LE |
//! record`, the CRC over everything after it and `len` counting it too. `Put` stores a delivery's
//! record (a later `Put` of the same id replaces it: a reschedule); `Remove` ends it; `Oldest`
//! (its id field a segment number, no record) says which segment is the oldest that must still
//! exist. Replaying the segments in order gives the pending set. Each write ends with a zero
//! `len`, which the next write overwrites: replay stops there.
//!
//! Segments are `NNNNNNNNNNNNNNNN.log` in `<state>/hooker.journal/`. Writes go to the newest; past
//! [`SEGMENT_BYTES`] a new one starts. The oldest segments are retired once nothing pending lives
//! in them (oldest first keeps every `Remove` older than the `Put`s it could revive). Past
//! [`MAX_SEGMENTS`], the oldest segment's live records are copied forward and it is retired, so
//! one delivery retrying for hours does not pin the log behind it.
//!
//! Retired segments are renamed `NNNNNNNNNNNNNNNN.spare` and reused for new segments: writing
//! over a file's existing blocks lets `fdatasync` skip the file-system metadata write an append
//! needs (0.3 against 0.8 ms per write + `fdatasync` here, measured). The `segment` field tells a
//! reused file's entries from what a previous use left behind. Until retired segments supply
//! spares (a fresh state directory), a background thread writes a zero-filled one, and the
//! writer moves to it as soon as it is ready.
//!
//! - **Invariant:** a staged entry counts only after its `fdatasync`; a failed write is cut off
//!   again, so the next commit never follows garbage.
//! - **Invariant:** nothing is truncated or rewritten in place. At start, a damaged entry is
//!   skipped and replay goes on at the next intact one (found by its checksum), so damage loses
//!   only the entries it hit: they are logged (segment, offset, bytes, entries) and counted
//!   ([`JournalDamage`]). Damage with nothing intact after it ends its segment: a torn write (a
//!   crash mid-write, never acknowledged) looks the same. Writing never follows a damaged end: it
//!   goes on in a new segment; the damaged one is deleted like any other once nothing in it is
//!   pending.
//! - **Invariant:** the segments from the newest `Oldest` entry's to the newest are all on disk:
//!   every new segment starts with one, and a segment is retired only after an `Oldest` entry past
//!   it is written (unless the disk is full: freeing space comes first). A number missing from
//!   that range is a segment lost, logged and counted.
//! - **Invariant:** a failed write (a full disk) loses nothing that was acknowledged and leaves
//!   nothing behind: its removals are kept (in memory at once, so emptied segments can still be
//!   retired to make room) and written with the next commit, a failed spare is deleted, and the
//!   journal moves to a segment that can be written (a spare's allocated blocks, or a new file once
//!   the old ones are retired), so writes resume by themselves once there is room.
//! - [`JournalReader`] reads a pending record while the writer goes on (the outbox keeps only
//!   part of a backlog in memory). It shares the writer's map of where each record is and checks
//!   the entry it reads (checksum, segment, id), so a record moved or a file retired meanwhile is
//!   looked up again, never misread.
//! - Rotating and retiring segments is housekeeping: if it fails, the commit that triggered it
//!   still succeeded (its entries are on disk), and it is tried again at the next one.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, mpsc};

/// A segment is closed past this size.
pub const SEGMENT_BYTES: u64 = 8 << 20;
/// Past this many segments the oldest is compacted forward.
pub const MAX_SEGMENTS: usize = 8;

const HEADER: usize = 8;
/// `segment`, `kind` and `id`, before the record.
const PREFIX: usize = 13;
/// Retired segment files kept for reuse.
const MAX_SPARES: usize = 2;
const PUT: u8 = 1;
const REMOVE: u8 = 2;
/// The oldest segment that must exist (in the id field).
const OLDEST: u8 = 3;
/// A spare is prepared only while the file system has this many segments' worth free (a spare is
/// an optimisation: it must not take the last room from the journal's own writes).
const PREPARE_ROOM: u64 = 4;
/// After a spare could not be prepared, the next try waits this long.
const PREPARE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);
/// What the write buffer keeps between group commits.
const STAGED_KEEP: usize = 1 << 20;
/// Records this large are written from their own buffer ([`Journal::put_owned`]).
const SPLICE_AT: usize = 64 << 10;
/// Larger entries are damage, not records (the intake bounds bodies far below this).
const MAX_ENTRY: u32 = 256 << 20;

/// Where one pending delivery's newest record is.
#[derive(Debug, Clone, Copy)]
struct Place {
    segment: u64,
    /// Offset of the record bytes (after the entry header, kind and id).
    offset: u64,
    len: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Segment {
    /// Pending deliveries whose newest record is here.
    live: usize,
}

/// The journal, owned by the store's writer thread.
pub struct Journal {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    current: u64,
    len: u64,
    segments: BTreeMap<u64, Segment>,
    /// Shared with [`JournalReader`]s, which only read it.
    live: Arc<RwLock<HashMap<u64, Place>>>,
    /// Entries written since the last sync: (kind, id, record offset within what is written, len).
    pending: Vec<(u8, u64, usize, u32)>,
    staged: Vec<u8>,
    /// Large records, written from their own buffers instead of being copied into `staged`: each
    /// goes after `staged[..at]` (and the spliced records before it).
    spliced: Vec<(usize, Vec<u8>)>,
    /// Bytes in `spliced`.
    spliced_len: usize,
    /// The highest delivery id any entry ever named (ids are never reused).
    max_id: u64,
    /// Retired or prepared segment files waiting for reuse, by number.
    spares: Vec<u64>,
    /// Whether the current segment's blocks are all written already (a reused or prepared file).
    allocated: bool,
    /// Spares the background preparer finished (`None`: it failed, and removed its file).
    prepared: mpsc::Receiver<Option<u64>>,
    prepared_tx: mpsc::Sender<Option<u64>>,
    /// A preparer is at work.
    preparing: bool,
    /// No spare is prepared before this (set when one could not be).
    prepare_after: Option<std::time::Instant>,
    /// Removals whose write failed: already applied to `live`, written with the next commit.
    carried: Vec<u64>,
    /// What open found damaged or missing.
    damage: JournalDamage,
    /// The number of the next prepared spare (above any segment number).
    next_prepared: u64,
    /// Whether to prepare spares at all (tests turn it off to keep segment changes predictable).
    prepare: bool,
}

/// Prepared spares are numbered from here, apart from segment numbers.
const PREPARED: u64 = 9_000_000_000_000_000;

/// What [`Journal::open`] found damaged or missing (each already logged with where it was).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalDamage {
    /// Damaged entries skipped with intact entries after them. Each was a pending delivery's
    /// record (that delivery is lost) or the end of one (it is sent again). At least one per
    /// damaged span; exact while the damaged entries' lengths are intact.
    pub entries: u64,
    /// Bytes in those spans.
    pub bytes: u64,
    /// Segments missing from the sequence: what was pending in them is lost (how much is not
    /// known).
    pub missing_segments: Vec<u64>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`; returns it and the pending records, by id.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, BTreeMap<u64, Vec<u8>>)> {
        Journal::open_with(dir, SEGMENT_BYTES, true)
    }

    /// [`Journal::open`] with another segment size, and spare preparation on or off (the
    /// property tests use small segments and no background thread).
    #[doc(hidden)]
    pub fn open_with(
        dir: &Path,
        segment_bytes: u64,
        prepare: bool,
    ) -> std::io::Result<(Journal, BTreeMap<u64, Vec<u8>>)> {
        std::fs::create_dir_all(dir)?;
        let mut numbers = Vec::new();
        let mut spares = Vec::new();
        for entry in std::fs::read_dir(dir)?.filter_map(|entry| entry.ok()) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(number) = segment_number(&name) {
                numbers.push(number);
            } else if let Some(number) = spare_number(&name) {
                spares.push(number);
            } else if file_number(&name, PREPARING).is_some() {
                // A preparation cut short by a stop.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        numbers.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut live: HashMap<u64, Place> = HashMap::new();
        let mut contents: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut last_damaged = false;
        let mut last_end = 0;
        let mut max_id = 0;
        let mut damage = JournalDamage::default();
        let mut oldest = None;
        for &number in &numbers {
            let path = segment_path(dir, number);
            let bytes = std::fs::read(&path)?;
            segments.insert(number, Segment::default());
            let replayed = replay(&bytes, number, &mut live, &mut segments, &mut max_id);
            for span in &replayed.damaged {
                damage.entries += span.entries;
                damage.bytes += span.bytes as u64;
                tracing::warn!(segment = %path.display(), offset = span.offset, bytes = span.bytes, entries = span.entries, damage = %span.why, "Delivery journal damaged: the damaged entries are skipped and reading goes on at the next intact one. Each was a pending delivery (lost) or the end of one (sent again).");
            }
            if let Some((offset, why)) = &replayed.tail {
                tracing::warn!(segment = %path.display(), offset, bytes = bytes.len() - offset, damage = %why, "Delivery journal entry incomplete or damaged with nothing intact after it: the rest of this segment is skipped. A write cut short by a crash (never acknowledged) looks like this; so does damage to a segment's last entries.");
            }
            oldest = replayed.oldest.or(oldest);
            last_damaged = replayed.tail.is_some();
            last_end = replayed.end as u64;
            contents.insert(number, bytes);
        }
        if let (Some(&first), Some(&newest)) = (numbers.first(), numbers.last()) {
            // Without an `Oldest` entry (a journal from before them, or it was lost) only gaps
            // between the segments on disk tell.
            let from = oldest.unwrap_or(first).min(newest);
            damage.missing_segments = (from..newest)
                .filter(|n| numbers.binary_search(n).is_err())
                .collect();
            for &number in &damage.missing_segments {
                tracing::error!(segment = %segment_path(dir, number).display(), "Delivery journal segment missing: the pending deliveries it held are lost.");
            }
        }
        let mut records = BTreeMap::new();
        for (&id, place) in &live {
            let bytes = contents.get(&place.segment).and_then(|b| {
                b.get(place.offset as usize..place.offset as usize + place.len as usize)
            });
            if let Some(bytes) = bytes {
                records.insert(id, bytes.to_vec());
            }
        }
        // Append to the newest segment unless it ends in damage (never write after garbage).
        let current = match numbers.last() {
            Some(&number) if !last_damaged => number,
            newest => newest.map_or(1, |n| n + 1),
        };
        let fresh = !segments.contains_key(&current);
        segments.entry(current).or_default();
        let next_prepared = spares
            .iter()
            .filter(|&&n| n >= PREPARED)
            .max()
            .map_or(PREPARED, |n| n + 1);
        let file = create_segment(dir, current, &mut spares)?;
        let allocated = file.metadata()?.len() >= segment_bytes;
        let (prepared_tx, prepared) = mpsc::channel();
        let len = if numbers.last() == Some(&current) {
            last_end
        } else {
            0
        };
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            segment_bytes,
            file,
            current,
            len,
            segments,
            live: Arc::new(RwLock::new(live)),
            pending: Vec::new(),
            staged: Vec::new(),
            spliced: Vec::new(),
            spliced_len: 0,
            max_id,
            spares,
            allocated,
            prepared,
            prepared_tx,
            preparing: false,
            next_prepared,
            prepare,
            prepare_after: None,
            carried: Vec::new(),
            damage,
        };
        if fresh {
            journal.start_segment();
        }
        journal.reclaim();
        Ok((journal, records))
    }

    /// Stages a delivery's record (written at the next [`Journal::sync`]).
    pub fn put(&mut self, id: u64, record: &[u8]) {
        self.stage(PUT, id, record);
    }

    /// Like [`Journal::put`], taking the record: a large one is written from its own buffer, so a
    /// 15 MB event is not copied once more on its way to the disk.
    pub fn put_owned(&mut self, id: u64, record: Vec<u8>) {
        if record.len() < SPLICE_AT {
            return self.stage(PUT, id, &record);
        }
        for carried in std::mem::take(&mut self.carried) {
            self.stage_entry(REMOVE, carried, &[]);
        }
        let start = self.staged.len();
        self.stage_prefix(PUT, id, &record);
        let written = start + self.spliced_len;
        self.pending
            .push((PUT, id, written + HEADER + PREFIX, record.len() as u32));
        self.max_id = self.max_id.max(id);
        self.spliced_len += record.len();
        self.spliced.push((self.staged.len(), record));
    }

    /// Stages the end of a delivery.
    pub fn remove(&mut self, id: u64) {
        self.stage(REMOVE, id, &[]);
    }

    /// A reader of pending records, for other threads.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            dir: self.dir.clone(),
            live: self.live.clone(),
        }
    }

    /// The highest delivery id the journal has seen, pending or not.
    pub fn max_id(&self) -> u64 {
        self.max_id
    }

    fn stage(&mut self, kind: u8, id: u64, record: &[u8]) {
        // Removals a failed write left come first: a later entry may put the same id again.
        for carried in std::mem::take(&mut self.carried) {
            self.stage_entry(REMOVE, carried, &[]);
        }
        self.stage_entry(kind, id, record);
    }

    fn stage_entry(&mut self, kind: u8, id: u64, record: &[u8]) {
        let start = self.staged.len();
        self.stage_prefix(kind, id, record);
        self.staged.extend_from_slice(record);
        self.pending.push((
            kind,
            id,
            start + self.spliced_len + HEADER + PREFIX,
            record.len() as u32,
        ));
        if kind != OLDEST {
            self.max_id = self.max_id.max(id);
        }
    }

    /// Stages an entry's header and prefix, with the checksum of the prefix and `record`.
    fn stage_prefix(&mut self, kind: u8, id: u64, record: &[u8]) {
        let start = self.staged.len();
        let len = (PREFIX + record.len()) as u32;
        self.staged.extend_from_slice(&len.to_le_bytes());
        self.staged.extend_from_slice(&[0; 4]);
        self.staged
            .extend_from_slice(&(self.current as u32).to_le_bytes());
        self.staged.push(kind);
        self.staged.extend_from_slice(&id.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c(&self.staged[start + HEADER..]), record);
        self.staged[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    /// Writes `staged` with the spliced records in their places, from `at` in the file.
    fn write_pieces(&self, at: u64) -> std::io::Result<()> {
        let mut offset = at;
        let mut from = 0;
        for (splice_at, record) in &self.spliced {
            self.file
                .write_all_at(&self.staged[from..*splice_at], offset)?;
            offset += (*splice_at - from) as u64;
            self.file.write_all_at(record, offset)?;
            offset += record.len() as u64;
            from = *splice_at;
        }
        self.file.write_all_at(&self.staged[from..], offset)
    }

    /// Stages the first entry of a new segment: which segment is the oldest on disk.
    fn start_segment(&mut self) {
        let oldest = self.segments.keys().next().copied().unwrap_or(self.current);
        self.stage(OLDEST, oldest, &[]);
    }

    /// What open found damaged or missing.
    pub fn damage(&self) -> &JournalDamage {
        &self.damage
    }

    /// Writes what is staged and waits for the disk; then, past the segment size, starts a new
    /// segment and retires old ones. When the write fails, makes room for the next one (see the
    /// module doc) before returning the error.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() && self.carried.is_empty() {
            // Nothing written: nothing to rotate, and no reason to prepare a spare (a command
            // that only reads the store must not start filling one).
            return Ok(());
        }
        // Removals a failed write left are written now even when nothing else is.
        for carried in std::mem::take(&mut self.carried) {
            self.stage_entry(REMOVE, carried, &[]);
        }
        self.take_prepared();
        if let Err(error) = self.write_staged() {
            self.make_room();
            return Err(error);
        }
        // A segment that grows the file pays for it at every sync: leave it once a spare exists.
        if self.len >= self.segment_bytes || (!self.allocated && !self.spares.is_empty()) {
            self.rotate();
        }
        if self.prepare
            && self.spares.is_empty()
            && !self.preparing
            && self
                .prepare_after
                .is_none_or(|after| std::time::Instant::now() >= after)
            && room_for(&self.dir, PREPARE_ROOM * self.segment_bytes)
        {
            self.prepare_spare();
        }
        Ok(())
    }

    /// Takes the spares the preparer finished, and notes one that failed.
    fn take_prepared(&mut self) {
        while let Ok(prepared) = self.prepared.try_recv() {
            self.preparing = false;
            match prepared {
                Some(number) => self.spares.push(number),
                None => {
                    self.prepare_after = Some(std::time::Instant::now() + PREPARE_BACKOFF);
                }
            }
        }
    }

    /// After a failed write: retires what the removals (applied in memory) emptied, and moves to
    /// a segment the next write can fill: a spare, whose blocks are allocated already, or, when
    /// nothing pending is left in the current segment, a new file (retiring the current one gives
    /// back the room it needs).
    fn make_room(&mut self) {
        self.take_prepared();
        let current_empty = self
            .segments
            .get(&self.current)
            .is_some_and(|segment| segment.live == 0);
        if (!self.allocated && !self.spares.is_empty()) || (current_empty && self.len > 0) {
            self.rotate();
        } else {
            self.reclaim();
        }
    }

    /// Starts writing a zero-filled spare segment on another thread.
    fn prepare_spare(&mut self) {
        let (dir, number, bytes) = (self.dir.clone(), self.next_prepared, self.segment_bytes);
        let done = self.prepared_tx.clone();
        let started = std::thread::Builder::new()
            .name("hooker-journal-prepare".into())
            .spawn(move || match prepare_spare(&dir, number, bytes) {
                Ok(()) => {
                    let _ = done.send(Some(number));
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "Cannot prepare a spare delivery journal segment; its file is removed, new segments grow as they are written, and another is tried later.");
                    let _ = done.send(None);
                }
            });
        if started.is_ok() {
            self.preparing = true;
            self.next_prepared += 1;
        }
    }

    fn write_staged(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let entries = self.staged.len();
        // The end mark; the next write starts on it.
        self.staged.extend_from_slice(&[0; HEADER]);
        let written = self
            .write_pieces(self.len)
            .and_then(|()| self.file.sync_data());
        self.staged.truncate(entries);
        if let Err(err) = written {
            // Not counted: the next write goes over whatever reached the file. Its puts are
            // refused to their intakes (which send again); its removals still hold, so they are
            // applied now and written with the next commit.
            let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
            for (kind, id, _, _) in self.pending.drain(..) {
                if kind == REMOVE {
                    forget(id, &mut live, &mut self.segments);
                    self.carried.push(id);
                }
            }
            drop(live);
            self.staged.clear();
            self.spliced.clear();
            self.spliced_len = 0;
            return Err(err);
        }
        let base = self.len;
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        for (kind, id, offset, len) in std::mem::take(&mut self.pending) {
            let place = Place {
                segment: self.current,
                offset: base + offset as u64,
                len,
            };
            apply(kind, id, place, &mut live, &mut self.segments);
        }
        drop(live);
        self.len += (self.staged.len() + self.spliced_len) as u64;
        self.staged.clear();
        self.spliced.clear();
        self.spliced_len = 0;
        // One large group commit (a burst) must not keep its buffer for good.
        self.staged.shrink_to(STAGED_KEEP);
        Ok(())
    }

    /// Starts a new segment, then retires or compacts old ones. On failure writing goes on in
    /// the current segment.
    fn rotate(&mut self) {
        let next = self.current + 1;
        match create_segment(&self.dir, next, &mut self.spares) {
            Ok(file) => {
                self.allocated = file.metadata().is_ok_and(|m| m.len() >= self.segment_bytes);
                self.file = file;
                self.current = next;
                self.len = 0;
                self.segments.insert(next, Segment::default());
                self.start_segment();
                self.reclaim();
            }
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "Cannot start a new delivery journal segment; writing goes on in the current one.");
            }
        }
    }

    /// Deletes the oldest segments nothing pending lives in; past [`MAX_SEGMENTS`], copies the
    /// oldest one's live records forward first. Before any goes, an `Oldest` entry naming the
    /// first that stays is written, so that at the next start a missing segment is told from a
    /// retired one; when that write fails (a full disk) they go all the same, since freeing
    /// room comes first.
    fn reclaim(&mut self) {
        let segments: Vec<(u64, usize)> = self
            .segments
            .iter()
            .map(|(&number, segment)| (number, segment.live))
            .collect();
        let mut retiring = Vec::new();
        for (i, &(number, live)) in segments.iter().enumerate() {
            if number == self.current {
                break;
            }
            if live > 0 {
                if segments.len() - i <= MAX_SEGMENTS {
                    break;
                }
                if let Err(error) = self.copy_forward(number) {
                    tracing::warn!(segment = number, %error, "Cannot compact a delivery journal segment; it stays.");
                    break;
                }
            }
            retiring.push(number);
        }
        let Some(&last) = retiring.last() else {
            return;
        };
        let oldest = self
            .segments
            .range(last + 1..)
            .next()
            .map_or(self.current, |(&number, _)| number);
        self.stage(OLDEST, oldest, &[]);
        if let Err(error) = self.write_staged() {
            tracing::warn!(dir = %self.dir.display(), %error, "Cannot note the oldest delivery journal segment; emptied segments are retired all the same to make room.");
        }
        for number in retiring {
            let path = segment_path(&self.dir, number);
            let retired = if self.spares.len() < MAX_SPARES {
                std::fs::rename(&path, spare_path(&self.dir, number))
                    .map(|()| self.spares.push(number))
            } else {
                std::fs::remove_file(&path)
            };
            match retired {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(segment = number, %error, "Cannot retire a delivery journal segment; it stays.");
                    return;
                }
            }
            self.segments.remove(&number);
        }
    }

    fn copy_forward(&mut self, segment: u64) -> std::io::Result<()> {
        let file = File::open(segment_path(&self.dir, segment))?;
        let mut moving: Vec<(u64, Place)> = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, place)| place.segment == segment)
            .map(|(&id, &place)| (id, place))
            .collect();
        moving.sort_unstable_by_key(|(id, _)| *id);
        let mut record = Vec::new();
        for (id, place) in moving {
            record.resize(place.len as usize, 0);
            file.read_exact_at(&mut record, place.offset)?;
            self.put(id, &record);
        }
        // On disk in the current segment before the old one goes (no rotation in between: the
        // next commit rotates if this one overfilled the segment).
        self.write_staged()
    }

    /// Bytes of all segment files on disk, spares included.
    pub fn disk_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        segment_number(&name).is_some() || spare_number(&name).is_some()
                    })
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Pending deliveries in the journal.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Segment files in use.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

/// Reads pending records from another thread than the writer's.
#[derive(Clone)]
pub struct JournalReader {
    dir: PathBuf,
    live: Arc<RwLock<HashMap<u64, Place>>>,
}

impl JournalReader {
    /// The newest record of delivery `id`, or `None` when it is not pending (or not yet on disk).
    pub fn read(&self, id: u64) -> std::io::Result<Option<Vec<u8>>> {
        // A record is looked up again when it moved (copied forward) or its file was retired
        // between the lookup and the read; more than a few moves in a row is not plausible.
        for _ in 0..4 {
            let place = self
                .live
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .copied();
            let Some(place) = place else {
                return Ok(None);
            };
            match read_entry(&self.dir, place, id) {
                Ok(Some(record)) => return Ok(Some(record)),
                Ok(None) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Err(std::io::Error::other(format!(
            "the record of delivery {id} kept moving while being read"
        )))
    }
}

/// Reads the `Put` entry of `id` at `place`; `None` when the entry there is no longer it.
fn read_entry(dir: &Path, place: Place, id: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = File::open(segment_path(dir, place.segment))?;
    let Some(start) = place.offset.checked_sub((HEADER + PREFIX) as u64) else {
        return Ok(None);
    };
    let mut entry = vec![0; HEADER + PREFIX + place.len as usize];
    match file.read_exact_at(&mut entry, start) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let len = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let crc = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
    let body = &entry[HEADER..];
    let same = len as usize == body.len()
        && crc32c(body) == crc
        && body[0..4] == (place.segment as u32).to_le_bytes()
        && body[4] == PUT
        && body[5..PREFIX] == id.to_le_bytes();
    if !same {
        return Ok(None);
    }
    // The record is the rest of the entry: shifted down in place, not copied out.
    entry.drain(..HEADER + PREFIX);
    Ok(Some(entry))
}

fn apply(
    kind: u8,
    id: u64,
    place: Place,
    live: &mut HashMap<u64, Place>,
    segments: &mut BTreeMap<u64, Segment>,
) {
    let old = match kind {
        PUT => live.insert(id, place),
        REMOVE => live.remove(&id),
        _ => return,
    };
    if let Some(old) = old
        && let Some(segment) = segments.get_mut(&old.segment)
    {
        segment.live = segment.live.saturating_sub(1);
    }
    if kind == PUT
        && let Some(segment) = segments.get_mut(&place.segment)
    {
        segment.live += 1;
    }
}

/// Ends delivery `id` in `live` (a removal not yet written).
fn forget(id: u64, live: &mut HashMap<u64, Place>, segments: &mut BTreeMap<u64, Segment>) {
    if let Some(old) = live.remove(&id)
        && let Some(segment) = segments.get_mut(&old.segment)
    {
        segment.live = segment.live.saturating_sub(1);
    }
}

/// A damaged span with intact entries after it.
#[derive(Debug)]
struct Damaged {
    offset: usize,
    bytes: usize,
    entries: u64,
    why: String,
}

/// What replaying one segment found.
#[derive(Debug, Default)]
struct Replayed {
    /// Where the readable entries end (where writing would go on).
    end: usize,
    damaged: Vec<Damaged>,
    /// Damage with nothing intact after it: where, and why.
    tail: Option<(usize, String)>,
    /// The last `Oldest` entry's segment number.
    oldest: Option<u64>,
}

/// One entry as found at an offset.
enum Entry {
    /// The end mark, or the end of the file.
    End,
    Intact {
        kind: u8,
        id: u64,
        len: u32,
    },
    Damaged(String),
}

/// Reads the entry of segment `number` at `at`.
fn entry_at(bytes: &[u8], at: usize, number: u64) -> Entry {
    if at >= bytes.len() {
        return Entry::End;
    }
    let Some(header) = bytes.get(at..at + HEADER) else {
        return Entry::Damaged("header cut short".into());
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Entry::End;
    }
    if !(PREFIX as u32..=MAX_ENTRY).contains(&len) {
        return Entry::Damaged(format!("impossible entry length {len}"));
    }
    let Some(body) = bytes.get(at + HEADER..at + HEADER + len as usize) else {
        return Entry::Damaged("entry cut short".into());
    };
    // The cheap checks first: resynchronising tries every offset.
    if body[0..4] != (number as u32).to_le_bytes() {
        return Entry::Damaged("entry left by a previous use of the file".into());
    }
    let kind = body[4];
    if !matches!(kind, PUT | REMOVE | OLDEST) {
        return Entry::Damaged(format!("unknown entry kind {kind}"));
    }
    if crc32c(body) != crc {
        return Entry::Damaged("checksum mismatch".into());
    }
    let mut id = [0; 8];
    id.copy_from_slice(&body[5..PREFIX]);
    Entry::Intact {
        kind,
        id: u64::from_le_bytes(id),
        len,
    }
}

/// The length a (possibly damaged) entry at `at` claims, when it fits in the file.
fn claimed_len(bytes: &[u8], at: usize) -> Option<usize> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let end = at + HEADER + len as usize;
    ((PREFIX as u32..=MAX_ENTRY).contains(&len) && end <= bytes.len()).then_some(end)
}

/// After damage at `at`: the next intact entry, and how many entries the damaged span held (by
/// their lengths when those add up to it exactly, else at least one).
fn resync(bytes: &[u8], at: usize, number: u64) -> Option<(usize, u64)> {
    // The damaged entry's own length usually survives and says where the next one starts.
    if let Some(next) = claimed_len(bytes, at)
        && matches!(entry_at(bytes, next, number), Entry::Intact { .. })
    {
        return Some((next, 1));
    }
    // Else every later offset is tried: an entry is intact only with this segment's number, a
    // known kind and its checksum.
    let next = (at + 1..bytes.len().saturating_sub(HEADER + PREFIX - 1))
        .find(|&p| matches!(entry_at(bytes, p, number), Entry::Intact { .. }))?;
    let mut entries = 0;
    let mut p = at;
    while p < next {
        match claimed_len(bytes, p) {
            Some(end) => p = end,
            None => break,
        }
        entries += 1;
    }
    Some((next, if p == next { entries } else { 1 }))
}

/// Replays one segment's entries into `live`, skipping damaged ones (see [`resync`]).
fn replay(
    bytes: &[u8],
    number: u64,
    live: &mut HashMap<u64, Place>,
    segments: &mut BTreeMap<u64, Segment>,
    max_id: &mut u64,
) -> Replayed {
    let mut out = Replayed::default();
    let mut at = 0;
    loop {
        match entry_at(bytes, at, number) {
            Entry::End => {
                out.end = at;
                return out;
            }
            Entry::Intact { kind, id, len } => {
                if kind == OLDEST {
                    out.oldest = Some(id);
                } else {
                    let place = Place {
                        segment: number,
                        offset: (at + HEADER + PREFIX) as u64,
                        len: len - PREFIX as u32,
                    };
                    apply(kind, id, place, live, segments);
                    *max_id = (*max_id).max(id);
                }
                at += HEADER + len as usize;
            }
            Entry::Damaged(why) => match resync(bytes, at, number) {
                Some((next, entries)) => {
                    out.damaged.push(Damaged {
                        offset: at,
                        bytes: next - at,
                        entries,
                        why,
                    });
                    at = next;
                }
                None => {
                    out.end = at;
                    out.tail = Some((at, why));
                    return out;
                }
            },
        }
    }
}

/// Segment files are `<16 digits>.log`; retired ones kept for reuse `<16 digits>.spare`; a spare
/// being zero-filled `<16 digits>.preparing`.
const LOG: &str = "log";
const SPARE: &str = "spare";
const PREPARING: &str = "preparing";

/// Whether the file system holding `dir` has `bytes` free for an unprivileged writer (true when
/// it cannot tell).
fn room_for(dir: &Path, bytes: u64) -> bool {
    nix::sys::statvfs::statvfs(dir).map_or(true, |stats| {
        stats
            .blocks_available()
            .saturating_mul(stats.fragment_size())
            >= bytes
    })
}

/// Writes a zero-filled file of `bytes` and makes it spare `number` once it is all on disk. On
/// failure (a full disk) what it wrote is deleted: it must not hold the room the journal's own
/// writes need.
fn prepare_spare(dir: &Path, number: u64, bytes: u64) -> std::io::Result<()> {
    let temp = file_path(dir, number, PREPARING);
    let file = File::create(&temp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    let written = (|| {
        while at < bytes {
            let chunk = (bytes - at).min(zeros.len() as u64);
            file.write_all_at(&zeros[..chunk as usize], at)?;
            at += chunk;
        }
        file.sync_data()?;
        std::fs::rename(&temp, spare_path(dir, number))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn file_number(name: &str, extension: &str) -> Option<u64> {
    let (digits, ext) = name.split_once('.')?;
    if ext != extension || digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn file_path(dir: &Path, number: u64, extension: &str) -> PathBuf {
    dir.join(format!("{number:016}.{extension}"))
}

fn segment_number(name: &str) -> Option<u64> {
    file_number(name, LOG)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    file_path(dir, number, LOG)
}

fn spare_number(name: &str) -> Option<u64> {
    file_number(name, SPARE)
}

fn spare_path(dir: &Path, number: u64) -> PathBuf {
    file_path(dir, number, SPARE)
}

/// Opens segment `number` for writing: as it is if it exists, else a spare renamed to it, else
/// a new file; a new name is made durable in the directory before anything is written to it.
fn create_segment(dir: &Path, number: u64, spares: &mut Vec<u64>) -> std::io::Result<File> {
    let path = segment_path(dir, number);
    let existed = path.exists();
    if !existed
        && let Some(spare) = spares.pop()
        && let Err(error) = std::fs::rename(spare_path(dir, spare), &path)
    {
        tracing::warn!(spare, %error, "Cannot reuse a spare delivery journal segment.");
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)?;
    if !existed {
        // Without this a crash could lose the new file, and with it acknowledged entries.
        if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
    }
    Ok(file)
}

/// CRC-32C (Castagnoli) of `bytes`, with the CPU's CRC instructions where it has them (the
/// `crc32c` crate; a table-driven version read ~1.5 GB/s and was 7% of the agent's CPU time under
/// load).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;

    /// Opens with the default segment size and no spare preparation (predictable segments).
    fn open(dir: &Path) -> (Journal, BTreeMap<u64, Vec<u8>>) {
        Journal::open_with(dir, SEGMENT_BYTES, false).unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hooker-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros, and 32 bytes of 0xFF.
        assert_eq!(crc32c(&[0; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFF; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn puts_replace_removes_end_and_a_reopen_replays_them() {
        let dir = temp("replay");
        let (mut journal, records) = open(&dir);
        assert!(records.is_empty());
        journal.put(1, b"one");
        journal.put(2, b"two");
        journal.put(3, b"three");
        journal.sync().unwrap();
        journal.put(2, b"two, rescheduled");
        journal.remove(3);
        journal.remove(99);
        journal.sync().unwrap();
        assert_eq!(journal.live(), 2);
        drop(journal);
        let (journal, records) = open(&dir);
        assert_eq!(
            records.into_iter().collect::<Vec<_>>(),
            vec![(1, b"one".to_vec()), (2, b"two, rescheduled".to_vec())]
        );
        assert_eq!(journal.live(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn large_records_written_from_their_own_buffers_read_back_and_replay() {
        let dir = temp("spliced");
        let (mut journal, _) = open(&dir);
        let large = |id: u8| vec![id; SPLICE_AT + 17 * usize::from(id)];
        journal.put(1, b"one");
        journal.put_owned(2, large(2));
        journal.put_owned(3, b"three".to_vec());
        journal.put_owned(4, large(4));
        journal.put(5, b"five");
        journal.sync().unwrap();
        journal.put_owned(6, large(6));
        journal.remove(1);
        journal.sync().unwrap();
        let reader = journal.reader();
        for (id, record) in [(2, large(2)), (3, b"three".to_vec()), (4, large(4))] {
            assert_eq!(reader.read(id).unwrap(), Some(record), "record {id}");
        }
        assert_eq!(reader.read(5).unwrap(), Some(b"five".to_vec()));
        assert_eq!(reader.read(6).unwrap(), Some(large(6)));
        drop(journal);
        let (_, records) = open(&dir);
        assert_eq!(
            records.into_iter().collect::<Vec<_>>(),
            vec![
                (2, large(2)),
                (3, b"three".to_vec()),
                (4, large(4)),
                (5, b"five".to_vec()),
                (6, large(6))
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_torn_tail_is_skipped_and_writing_goes_on_in_a_new_segment() {
        let dir = temp("torn");
        let (mut journal, _) = open(&dir);
        journal.put(1, b"kept");
        journal.sync().unwrap();
        drop(journal);
        let path = segment_path(&dir, 1);
        // A crash in the middle of the next entry: its header and part of its record.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        let end = file.metadata().unwrap().len() - HEADER as u64;
        file.set_len(end).unwrap();
        file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 0, 0, 0, PUT, 2, 0])
            .unwrap();
        drop(file);
        let torn = std::fs::read(&path).unwrap();
        let (mut journal, records) = open(&dir);
        assert_eq!(records.len(), 1);
        journal.put(2, b"after");
        journal.sync().unwrap();
        // Nothing was written after the torn entry.
        assert_eq!(std::fs::read(&path).unwrap(), torn);
        assert!(segment_path(&dir, 2).exists());
        drop(journal);
        let (mut journal, records) = open(&dir);
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        // Once nothing in it is pending, the damaged segment is retired like any other.
        journal.remove(1);
        journal.sync().unwrap();
        journal.rotate();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_entry_in_the_middle_is_not_read_as_a_record() {
        let dir = temp("damaged");
        let (mut journal, _) = open(&dir);
        journal.put(1, b"first");
        journal.put(2, b"second");
        journal.sync().unwrap();
        drop(journal);
        let path = segment_path(&dir, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // The last byte of the second record (the end mark follows it).
        let last = bytes.len() - HEADER - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let (_, records) = open(&dir);
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![1]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_reused_segment_file_never_replays_what_its_previous_use_left() {
        let dir = temp("reuse");
        let segment_bytes = 4 << 10;
        let (mut journal, _) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        let record = vec![1u8; 1024];
        for id in 1..=40 {
            journal.put(id, &record);
            journal.sync().unwrap();
            journal.remove(id);
            journal.sync().unwrap();
        }
        journal.put(100, b"small");
        journal.sync().unwrap();
        // The current segment is a reused file: full of the entries of its previous use.
        let path = segment_path(&dir, journal.current);
        assert!(journal.current > MAX_SPARES as u64 + 2);
        assert!(std::fs::metadata(&path).unwrap().len() > segment_bytes);
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert!(files <= MAX_SPARES + 2, "{files} files");
        drop(journal);
        let (_, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(
            records.into_iter().collect::<Vec<_>>(),
            vec![(100, b"small".to_vec())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_fresh_journal_moves_to_a_prepared_segment_once_one_is_ready() {
        let dir = temp("prepare");
        let segment_bytes = 64 << 10;
        let (mut journal, _) = Journal::open_with(&dir, segment_bytes, true).unwrap();
        // A new file: each sync would also write its growing size.
        assert!(!journal.allocated);
        journal.put(1, b"first");
        journal.sync().unwrap();
        let spare = spare_path(&dir, PREPARED);
        for _ in 0..1000 {
            if spare.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(spare.exists(), "no spare prepared");
        journal.put(2, b"second");
        journal.sync().unwrap();
        journal.put(3, b"third");
        journal.sync().unwrap();
        assert!(journal.allocated);
        assert_eq!(journal.current, 2);
        assert_eq!(
            std::fs::metadata(segment_path(&dir, 2)).unwrap().len(),
            segment_bytes
        );
        drop(journal);
        let (_, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_reader_finds_records_while_they_move_and_files_are_reused() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = temp("reader");
        let segment_bytes = 64 << 10;
        let (mut journal, _) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        let reader = journal.reader();
        journal.put(1, b"long-lived");
        assert_eq!(reader.read(1).unwrap(), None, "staged is not on disk yet");
        journal.sync().unwrap();
        let place = |journal: &Journal| journal.live.read().unwrap()[&1];
        let first = place(&journal);
        // Another thread reads the long-lived record all along, while it is copied forward
        // and the files it was in are retired and reused.
        let stop = Arc::new(AtomicBool::new(false));
        let reading = {
            let reader = reader.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let record = reader.read(1).unwrap();
                    assert_eq!(record.as_deref(), Some(&b"long-lived"[..]));
                    reads += 1;
                }
                reads
            })
        };
        let big = vec![7u8; (segment_bytes / 4) as usize];
        for id in 2..(2 + MAX_SEGMENTS as u64 * 8) {
            journal.put(id, &big);
            journal.sync().unwrap();
            assert_eq!(reader.read(id).unwrap().as_deref(), Some(&big[..]));
            journal.remove(id);
            journal.sync().unwrap();
            assert_eq!(reader.read(id).unwrap(), None);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reading.join().unwrap() > 0);
        // It moved; where it was is gone or holds something else, which is never taken for it.
        let now = place(&journal);
        assert_ne!(now.segment, first.segment);
        match read_entry(&dir, first, 1) {
            Ok(None) => {}
            Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::NotFound),
            Ok(Some(_)) => panic!("a stale place was read"),
        }
        assert_eq!(read_entry(&dir, now, 2).unwrap(), None);
        assert!(read_entry(&dir, now, 1).unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn emptied_segments_are_deleted_and_old_live_records_move_forward() {
        let dir = temp("segments");
        let segment_bytes = 64 << 10;
        let (mut journal, _) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        let big = vec![7u8; (segment_bytes / 4) as usize];
        // The first delivery stays pending throughout; the others come and go.
        journal.put(1, b"long-lived");
        for id in 2..(2 + MAX_SEGMENTS as u64 * 8) {
            journal.put(id, &big);
            journal.sync().unwrap();
            journal.remove(id);
            journal.sync().unwrap();
        }
        assert!(
            journal.segments() <= MAX_SEGMENTS + 1,
            "{} segments",
            journal.segments()
        );
        assert!(journal.spares.len() <= MAX_SPARES);
        assert!(
            Journal::disk_bytes(&dir) <= (MAX_SEGMENTS + MAX_SPARES + 1) as u64 * 2 * segment_bytes
        );
        drop(journal);
        let (journal, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(
            records.into_iter().collect::<Vec<_>>(),
            vec![(1, b"long-lived".to_vec())]
        );
        assert_eq!(journal.live(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A small tmpfs mounted for one test and unmounted when dropped (the tests run as root; a
    /// full disk is only honest on a real file system).
    pub(in crate::outbox) struct Tmpfs(PathBuf);

    impl Tmpfs {
        pub(in crate::outbox) fn path(&self) -> &Path {
            &self.0
        }

        pub(in crate::outbox) fn mount(name: &str, size: &str) -> Tmpfs {
            let dir = temp(name);
            std::fs::create_dir_all(&dir).unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .status();
            assert!(
                mounted.as_ref().is_ok_and(|s| s.success()),
                "this test needs to mount a small tmpfs (as root, with mount(8)): {mounted:?}"
            );
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let unmounted = std::process::Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes `path` until the file system is full.
    pub(in crate::outbox) fn fill(path: &Path) {
        let mut file = File::create(path).unwrap();
        let chunk = vec![1u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // What is left is less than a chunk: take it too.
        while file.write_all(&chunk[..512]).is_ok() {}
        let _ = file.sync_all();
    }

    fn record(id: u64) -> Vec<u8> {
        format!("record {id}; ").repeat(12).into_bytes()
    }

    /// Where the entry holding delivery `id`'s record starts.
    fn entry_offset(journal: &Journal, id: u64) -> usize {
        let place = journal.live.read().unwrap()[&id];
        place.offset as usize - HEADER - PREFIX
    }

    #[test]
    fn damage_in_the_middle_of_a_segment_loses_only_the_damaged_entries_and_counts_them() {
        let dir = temp("resync");
        let (mut journal, _) = open(&dir);
        for id in 1..=300 {
            journal.put(id, &record(id));
            if id % 10 == 0 {
                journal.sync().unwrap();
            }
        }
        journal.remove(7);
        journal.sync().unwrap();
        let in_record = entry_offset(&journal, 128) + HEADER + PREFIX + 20;
        let length = entry_offset(&journal, 200);
        let entry_bytes = (HEADER + PREFIX + record(128).len()) as u64;
        drop(journal);
        let path = segment_path(&dir, 1);
        let clean = std::fs::read(&path).unwrap();
        // 16 bytes flipped inside one record (its length still says where the next entry is),
        // then 16 from the start of an entry (its length too: found again by scanning).
        for (case, at) in [("in a record", in_record), ("over a length", length)] {
            let mut bytes = clean.clone();
            bytes[at..at + 16].iter_mut().for_each(|b| *b ^= 0x5A);
            std::fs::write(&path, &bytes).unwrap();
            let (mut journal, records) = open(&dir);
            let lost = if at == in_record { 128 } else { 200 };
            let expected: Vec<u64> = (1..=300).filter(|&id| id != 7 && id != lost).collect();
            assert_eq!(
                records.keys().copied().collect::<Vec<_>>(),
                expected,
                "{case}"
            );
            assert_eq!(records[&299], record(299), "{case}");
            assert_eq!(
                journal.damage(),
                &JournalDamage {
                    entries: 1,
                    bytes: entry_bytes,
                    missing_segments: vec![],
                },
                "{case}"
            );
            // The segment's end is intact: writing goes on in it, after its last entry.
            journal.put(301, b"after");
            journal.sync().unwrap();
            assert_eq!(journal.current, 1, "{case}");
            drop(journal);
            let (journal, records) = open(&dir);
            assert_eq!(records.len(), 299, "{case}");
            assert_eq!(journal.damage().entries, 1, "{case}");
            drop(journal);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_segment_is_reported_and_a_retired_one_is_not() {
        let dir = temp("missing");
        let segment_bytes = 4 << 10;
        let (mut journal, _) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        let big = vec![3u8; 1000];
        for id in 1..=40 {
            journal.put(id, &big);
            journal.sync().unwrap();
        }
        // The first ten end: their segments are retired as the journal goes on.
        for id in 1..=10 {
            journal.remove(id);
        }
        journal.sync().unwrap();
        for id in 41..=50 {
            journal.put(id, &big);
            journal.sync().unwrap();
        }
        let on_disk: Vec<u64> = journal.segments.keys().copied().collect();
        assert!(on_disk[0] > 1, "some retired: {on_disk:?}");
        assert!(on_disk.len() >= 5, "{on_disk:?}");
        let place = |journal: &Journal, id: u64| journal.live.read().unwrap()[&id].segment;
        let in_oldest: Vec<u64> = (11..=50)
            .filter(|&id| place(&journal, id) == on_disk[0])
            .collect();
        let in_second: Vec<u64> = (11..=50)
            .filter(|&id| place(&journal, id) == on_disk[1])
            .collect();
        drop(journal);
        let (journal, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(
            journal.damage(),
            &JournalDamage::default(),
            "retired, not missing"
        );
        assert_eq!(records.len(), 40);
        drop(journal);
        // The oldest segment (no gap tells it) and the second one go.
        for number in &on_disk[..2] {
            std::fs::remove_file(segment_path(&dir, *number)).unwrap();
        }
        let (journal, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(journal.damage().missing_segments, on_disk[..2].to_vec());
        assert_eq!(records.len(), 40 - in_oldest.len() - in_second.len());
        drop(journal);
        // A gap in the middle.
        std::fs::remove_file(segment_path(&dir, on_disk[3])).unwrap();
        let (journal, _) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(
            journal.damage().missing_segments,
            vec![on_disk[0], on_disk[1], on_disk[3]]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_spare_that_cannot_be_written_is_removed() {
        let fs = Tmpfs::mount("spare-full", "1m");
        let failed = prepare_spare(&fs.0, PREPARED, 4 << 20);
        assert!(failed.is_err());
        let left: Vec<_> = std::fs::read_dir(&fs.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn on_a_full_disk_nothing_acknowledged_is_lost_and_writes_resume_once_the_backlog_drains() {
        let fs = Tmpfs::mount("disk-full", "512k");
        let dir = fs.0.join("journal");
        let segment_bytes = 64 << 10;
        let (mut journal, _) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        let big = vec![9u8; 8 << 10];
        let mut acknowledged = Vec::new();
        let mut refused = 0;
        for id in 1..=200 {
            journal.put(id, &big);
            match journal.sync() {
                Ok(()) => acknowledged.push(id),
                Err(_) => {
                    refused += 1;
                    if refused == 3 {
                        break;
                    }
                }
            }
        }
        assert_eq!(refused, 3, "the disk never filled");
        assert!(acknowledged.len() > 20, "{}", acknowledged.len());
        drop(journal);
        // Nothing acknowledged is lost.
        let (mut journal, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), acknowledged);
        // The backlog drains while the disk is still full: its removals may not be written...
        for &id in &acknowledged {
            journal.remove(id);
            let _ = journal.sync();
        }
        // ...but they free their segments, and writes resume without anything else freed.
        let mut resumed = None;
        for id in 1000..1020 {
            journal.put(id, &big);
            if journal.sync().is_ok() {
                resumed = Some(id);
                break;
            }
        }
        let resumed = resumed.expect("writes never resumed after the backlog drained");
        drop(journal);
        let (_, records) = Journal::open_with(&dir, segment_bytes, false).unwrap();
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![resumed]);
    }
}
