//! The overlay: what changed since a read image, as an append-only, memory-mapped file that
//! the owner writes and every reader process of the host tails.
//!
//! Layout (little endian; `docs/READER.md`, "The overlay"):
//! - header page: magic `IKVOVL01`, capacity (the file's fixed, sparse size), the committed
//!   length of the records (an atomic word), the generation that superseded this one (an
//!   atomic word, 0 while current), the partition count, the records' start, then one atomic
//!   word per partition: the time (ms since the epoch) its owner last found it caught up.
//! - records from the records' start: `[body length u32][crc32c of body u32][body]`, where a
//!   body is an entry (`1`, key length u32, key, present u8, document) or a commit (`2`,
//!   partition u32, sequence u64, the partition's drop state as JSON).
//!
//! Invariants:
//! - Only the owner writes, only past the committed length, and it publishes one delta's
//!   records (its entries, then its commit) by storing the new committed length with release
//!   ordering. Readers load it with acquire ordering and never read past it, so a process sees
//!   a delta entirely or not at all.
//! - Committed bytes never change; every record is checked against its CRC before it is used.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ikv_core::checksum::crc32c;
use ikv_core::{Error, Result};
use memmap2::{MmapOptions, MmapRaw};

use crate::drops::DropState;

const MAGIC: &[u8; 8] = b"IKVOVL01";
const COMMITTED_AT: usize = 16;
const SUPERSEDED_AT: usize = 24;
const PARTITIONS_AT: usize = 32;
const RECORDS_AT: usize = 36;
const CAUGHT_UP_AT: usize = 40;
const PAGE: usize = 4096;
const ENTRY: u8 = 1;
const COMMIT: u8 = 2;

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn damaged(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: format!("overlay {}", path.display()),
        reason: reason.to_string(),
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    /// A document's new entry (`None`: deleted). `at` locates the document in the file.
    Entry {
        key: &'a [u8],
        doc: Option<&'a [u8]>,
        at: (usize, usize),
    },
    Commit {
        partition: u32,
        sequence: u64,
        drops: DropState,
    },
}

/// A mapped overlay file, shared by the threads of one process.
pub struct Overlay {
    path: PathBuf,
    map: MmapRaw,
    records_at: usize,
    partitions: u32,
    writable: bool,
    /// The owner's handle of the file, to give it blocks before records are written through
    /// the mapping (`None` when mapped read-only).
    file: Option<File>,
    /// Bytes from the file's start known to have blocks on disk. The file is sparse: a write
    /// through the mapping into a hole on a full disk would kill the process (SIGBUS), so
    /// the owner allocates ahead of its appends, where a full disk is an error.
    allocated: AtomicU64,
}

/// Blocks the owner allocates at a time ahead of its appends.
const ALLOCATE_AHEAD: u64 = 4 << 20;

/// Gives `file` blocks for `len` bytes from `offset`: afterwards writes there through a
/// mapping cannot fail for want of space.
fn allocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: a plain system call on an open descriptor.
    let rc = unsafe {
        libc::posix_fallocate(file.as_raw_fd(), offset as libc::off_t, len as libc::off_t)
    };
    if rc != 0 {
        return Err(io_err(
            path,
            format!(
                "cannot allocate {len} bytes of the overlay: {}",
                std::io::Error::from_raw_os_error(rc)
            ),
        ));
    }
    Ok(())
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay").field("path", &self.path).finish()
    }
}

// SAFETY: the mapping is shared memory; all mutation goes through atomics or the owner's
// single appending thread past the committed length, which readers never touch.
unsafe impl Send for Overlay {}
unsafe impl Sync for Overlay {}

impl Overlay {
    /// Creates an empty overlay of `capacity` record bytes for `partitions` partitions
    /// (replacing any file at `path`), mapped for writing.
    pub fn create(path: &Path, partitions: u32, capacity: u64) -> Result<Overlay> {
        let records_at = (CAUGHT_UP_AT + 8 * partitions as usize).div_ceil(PAGE) * PAGE;
        let size = records_at as u64 + capacity;
        let temp = path.with_extension("tmp");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| io_err(&temp, e))?;
        file.set_len(size).map_err(|e| io_err(&temp, e))?;
        allocate(&file, &temp, 0, records_at as u64)?;
        let mut header = Vec::with_capacity(CAUGHT_UP_AT);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&size.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        header.extend_from_slice(&partitions.to_le_bytes());
        header.extend_from_slice(&(records_at as u32).to_le_bytes());
        std::os::unix::fs::FileExt::write_all_at(&file, &header, 0)
            .map_err(|e| io_err(&temp, e))?;
        file.sync_all().map_err(|e| io_err(&temp, e))?;
        std::fs::rename(&temp, path).map_err(|e| io_err(path, e))?;
        Overlay::map(path, true)
    }

    /// Maps an existing overlay (`writable` for its owner).
    pub fn open(path: &Path, writable: bool) -> Result<Overlay> {
        Overlay::map(path, writable)
    }

    fn map(path: &Path, writable: bool) -> Result<Overlay> {
        let file = File::options()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        if len < PAGE as u64 {
            return Err(damaged(path, "shorter than its header"));
        }
        let map = if writable {
            MmapOptions::new().map_raw(&file)
        } else {
            MmapOptions::new().map_raw_read_only(&file)
        }
        .map_err(|e| io_err(path, e))?;
        let mut overlay = Overlay {
            path: path.to_owned(),
            map,
            records_at: 0,
            partitions: 0,
            writable,
            file: None,
            allocated: AtomicU64::new(0),
        };
        // SAFETY: the header is written once before the file is renamed into place.
        let header = unsafe { std::slice::from_raw_parts(overlay.map.as_ptr(), CAUGHT_UP_AT) };
        if &header[..8] != MAGIC {
            return Err(damaged(path, "not an ikv overlay"));
        }
        let size = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let partitions = u32::from_le_bytes(
            header[PARTITIONS_AT..PARTITIONS_AT + 4]
                .try_into()
                .unwrap_or_default(),
        );
        let records_at = u32::from_le_bytes(
            header[RECORDS_AT..RECORDS_AT + 4]
                .try_into()
                .unwrap_or_default(),
        ) as usize;
        if size != len
            || records_at < CAUGHT_UP_AT + 8 * partitions as usize
            || records_at as u64 > len
        {
            return Err(damaged(path, "header is inconsistent with the file"));
        }
        overlay.records_at = records_at;
        overlay.partitions = partitions;
        if overlay.committed() > overlay.capacity() {
            return Err(damaged(path, "committed length is past the file's end"));
        }
        if writable {
            // What is committed was written, so it has blocks; what follows gets them before
            // it is written.
            overlay
                .allocated
                .store(records_at as u64 + overlay.committed(), Ordering::SeqCst);
            overlay.file = Some(file);
        }
        Ok(overlay)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is an 8-aligned offset inside the header page (the mapping is
        // page-aligned), and these words are only ever accessed atomically.
        unsafe { &*(self.map.as_ptr().add(at) as *const AtomicU64) }
    }

    /// Record bytes the file can hold.
    pub fn capacity(&self) -> u64 {
        self.map.len() as u64 - self.records_at as u64
    }

    /// Record bytes committed so far.
    pub fn committed(&self) -> u64 {
        self.word(COMMITTED_AT).load(Ordering::Acquire)
    }

    /// The generation that replaced this one, once the owner has published it.
    pub fn superseded_by(&self) -> Option<u64> {
        match self.word(SUPERSEDED_AT).load(Ordering::Acquire) {
            0 => None,
            g => Some(g),
        }
    }

    /// When the owner last found `partition` caught up (ms since the epoch; 0: not yet).
    pub fn caught_up_ms(&self, partition: u32) -> u64 {
        if partition >= self.partitions {
            return 0;
        }
        self.word(CAUGHT_UP_AT + 8 * partition as usize)
            .load(Ordering::Acquire)
    }

    /// The committed bytes in `from..to` (record offsets).
    fn committed_slice(&self, from: u64, to: u64) -> &[u8] {
        // SAFETY: committed bytes are never written again; `to` is at most the committed
        // length loaded with acquire ordering, so the writes that made them are visible.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.records_at + from as usize),
                (to - from) as usize,
            )
        }
    }

    /// The document bytes a [`Record::Entry`] located.
    pub fn doc_at(&self, at: (usize, usize)) -> &[u8] {
        self.committed_slice(at.0 as u64, (at.0 + at.1) as u64)
    }

    /// Records committed in `from..to` (record offsets; `from` must be a record boundary,
    /// as returned by an earlier read), each checked.
    pub fn records(&self, from: u64, to: u64) -> Result<Vec<Record<'_>>> {
        let bytes = self.committed_slice(from, to);
        let mut out = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            if bytes.len() - at < 8 {
                return Err(damaged(&self.path, "a record header is cut"));
            }
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
            let body_at = at + 8;
            let Some(body) = bytes.get(body_at..body_at + len) else {
                return Err(damaged(
                    &self.path,
                    "a record runs past the committed length",
                ));
            };
            if crc32c(body) != crc {
                return Err(damaged(&self.path, "record checksum mismatch"));
            }
            out.push(self.decode(body, from as usize + body_at)?);
            at = body_at + len;
        }
        Ok(out)
    }

    fn decode<'a>(&self, body: &'a [u8], body_at: usize) -> Result<Record<'a>> {
        let bad = || damaged(&self.path, "a record is malformed");
        let u32_at = |at: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                body.get(at..at + 4)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ))
        };
        match body.first() {
            Some(&ENTRY) => {
                let key_len = u32_at(1)? as usize;
                let key = body.get(5..5 + key_len).ok_or_else(bad)?;
                let present = *body.get(5 + key_len).ok_or_else(bad)?;
                let doc_at = 6 + key_len;
                let doc = match present {
                    0 if body.len() == doc_at => None,
                    1 => Some(&body[doc_at..]),
                    _ => return Err(bad()),
                };
                Ok(Record::Entry {
                    key,
                    doc,
                    at: (body_at + doc_at, body.len() - doc_at),
                })
            }
            Some(&COMMIT) => {
                let partition = u32_at(1)?;
                let sequence = u64::from_le_bytes(
                    body.get(5..13)
                        .ok_or_else(bad)?
                        .try_into()
                        .map_err(|_| bad())?,
                );
                let drops = serde_json::from_slice(&body[13..]).map_err(|_| bad())?;
                Ok(Record::Commit {
                    partition,
                    sequence,
                    drops,
                })
            }
            _ => Err(bad()),
        }
    }

    /// Appends one delta's records and commits them; `false` (nothing written) when they do
    /// not fit. Owner only.
    pub fn append(
        &self,
        entries: &[(Vec<u8>, Option<Vec<u8>>)],
        partition: u32,
        sequence: u64,
        drops: &DropState,
    ) -> Result<bool> {
        if !self.writable {
            return Err(io_err(&self.path, "the overlay is mapped read-only"));
        }
        let mut out = Vec::new();
        for (key, doc) in entries {
            let mut body = Vec::with_capacity(6 + key.len() + doc.as_ref().map_or(0, Vec::len));
            body.push(ENTRY);
            body.extend_from_slice(&(key.len() as u32).to_le_bytes());
            body.extend_from_slice(key);
            match doc {
                Some(doc) => {
                    body.push(1);
                    body.extend_from_slice(doc);
                }
                None => body.push(0),
            }
            push_record(&mut out, &body);
        }
        let mut body = vec![COMMIT];
        body.extend_from_slice(&partition.to_le_bytes());
        body.extend_from_slice(&sequence.to_le_bytes());
        body.extend_from_slice(&serde_json::to_vec(drops).unwrap_or_default());
        push_record(&mut out, &body);
        let committed = self.committed();
        if committed + out.len() as u64 > self.capacity() {
            return Ok(false);
        }
        let end = self.records_at as u64 + committed + out.len() as u64;
        let allocated = self.allocated.load(Ordering::SeqCst);
        if end > allocated
            && let Some(file) = &self.file
        {
            let to = end
                .max(allocated + ALLOCATE_AHEAD)
                .min(self.records_at as u64 + self.capacity());
            allocate(file, &self.path, allocated, to - allocated)?;
            self.allocated.store(to, Ordering::SeqCst);
        }
        // SAFETY: past the committed length nobody reads; the owner's poller is the one
        // writer (see the module's invariants).
        unsafe {
            std::ptr::copy_nonoverlapping(
                out.as_ptr(),
                self.map
                    .as_mut_ptr()
                    .add(self.records_at + committed as usize),
                out.len(),
            );
        }
        self.word(COMMITTED_AT)
            .store(committed + out.len() as u64, Ordering::Release);
        Ok(true)
    }

    /// Appends to `to` the deltas committed here from record offset `from` on, delta by
    /// delta (a background fold's image holds what came before); `false` when they do not
    /// fit. Owner only.
    pub fn carry_to(&self, from: u64, to: &Overlay) -> Result<bool> {
        let mut entries = Vec::new();
        for record in self.records(from, self.committed())? {
            match record {
                Record::Entry { key, doc, .. } => {
                    entries.push((key.to_vec(), doc.map(<[u8]>::to_vec)));
                }
                Record::Commit {
                    partition,
                    sequence,
                    drops,
                } => {
                    if !to.append(&entries, partition, sequence, &drops)? {
                        return Ok(false);
                    }
                    entries.clear();
                }
            }
        }
        Ok(true)
    }

    /// Records that the owner found `partition` caught up at `ms`. Owner only.
    pub fn set_caught_up(&self, partition: u32, ms: u64) {
        if self.writable && partition < self.partitions {
            self.word(CAUGHT_UP_AT + 8 * partition as usize)
                .store(ms, Ordering::Release);
        }
    }

    /// Tells the readers of this overlay that `generation` replaced it. Owner only.
    pub fn supersede(&self, generation: u64) {
        if self.writable {
            self.word(SUPERSEDED_AT)
                .store(generation, Ordering::Release);
        }
    }
}

fn push_record(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_only_committed_ones_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overlay-1");
        let owner = Overlay::create(&path, 2, 1 << 16).unwrap();
        let reader = Overlay::open(&path, false).unwrap();
        assert_eq!(reader.committed(), 0);
        let drops = DropState {
            all: 7,
            ..DropState::default()
        };
        let entries = vec![
            (b"a".to_vec(), Some(b"doc".to_vec())),
            (b"b".to_vec(), None),
        ];
        assert!(owner.append(&entries, 1, 9, &drops).unwrap());
        let records = reader.records(0, reader.committed()).unwrap();
        assert_eq!(records.len(), 3);
        let Record::Entry { key, doc, at } = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!((*key, *doc), (&b"a"[..], Some(&b"doc"[..])));
        assert_eq!(reader.doc_at(*at), b"doc");
        assert!(matches!(records[1], Record::Entry { doc: None, .. }));
        assert_eq!(
            records[2],
            Record::Commit {
                partition: 1,
                sequence: 9,
                drops: drops.clone()
            }
        );
        owner.set_caught_up(1, 1234);
        assert_eq!(reader.caught_up_ms(1), 1234);
        assert_eq!(reader.superseded_by(), None);
        owner.supersede(2);
        assert_eq!(reader.superseded_by(), Some(2));
        assert!(reader.append(&entries, 0, 1, &drops).is_err(), "read-only");
    }

    #[test]
    fn a_delta_that_does_not_fit_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Overlay::create(&dir.path().join("o"), 1, 64).unwrap();
        let big = vec![(vec![1u8; 10], Some(vec![2u8; 100]))];
        assert!(!owner.append(&big, 0, 1, &DropState::default()).unwrap());
        assert_eq!(owner.committed(), 0);
    }

    #[test]
    fn damaged_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o");
        let owner = Overlay::create(&path, 1, 1 << 12).unwrap();
        owner
            .append(
                &[(b"k".to_vec(), Some(b"v".to_vec()))],
                0,
                1,
                &DropState::default(),
            )
            .unwrap();
        let committed = owner.committed();
        drop(owner);
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let records_at = PAGE as u64;
        for at in 0..committed {
            let mut byte = [0u8];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, records_at + at).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x41], records_at + at)
                .unwrap();
            let reader = Overlay::open(&path, false).unwrap();
            assert!(reader.records(0, committed).is_err(), "byte {at}");
            std::os::unix::fs::FileExt::write_all_at(&file, &byte, records_at + at).unwrap();
        }
        assert!(
            Overlay::open(&path, false)
                .unwrap()
                .records(0, committed)
                .is_ok()
        );
    }
}
