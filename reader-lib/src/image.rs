//! The read image: an immutable, memory-mapped file of every document of a mount at one
//! point, shared by all reader processes of a host through the page cache.
//!
//! Layout (little endian; `docs/READER.md`, "The read image"):
//! - header, 64 bytes: magic `IKVIMG02`, entry count, offsets of the state, the slots and the
//!   directory, the directory's bit width, and a CRC32C of the header.
//! - entries from byte 64: `[crc32c u32][key length: varint][document length: varint][key]
//!   [document]` (the document in the `doc.rs` format; the CRC covers everything after
//!   itself).
//! - the state: JSON of each partition's applied delta, snapshot and drop state (sealed with
//!   a checksum member).
//! - slots, 8-aligned, one u64 per key sorted by the key's xxh3 hash: the 24 bits of the hash
//!   that follow the directory's `bits` (the tag) above the entry's offset (40 bits: images
//!   up to 1 TiB). A lookup compares tags, then the entry's key: the bucket and the tag are
//!   46 bits of hash at 20M keys, so another key's entry is read about once in 4M misses.
//! - the directory: `2^bits + 1` slot indexes (u64); the slots of the hashes whose top `bits`
//!   bits are `b` are `directory[b]..directory[b + 1]`, about four per bucket.
//! - CRC32Cs of the slots and directory, one per MiB.
//!
//! Invariants: an image is written beside its final name and renamed into place after an
//! fsync, so a published image is complete; every byte a lookup trusts is checked (header,
//! slots and directory at open, an entry's CRC at each read), so damage is reported, never
//! served. Slots damaged after open (a bit flip in the page cache, a write to the file) can
//! only turn a hit into a miss: a miss checks the CRC blocks of the slots and directory words
//! it read, at the first miss in a block and every `MISS_CHECK_EVERY`th after, so such damage
//! is reported (and the owner rebuilds) instead of answering "not found" for ever.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ikv_core::checksum::crc32c;

use crate::varint;
use ikv_core::{Error, Result};
use memmap2::Mmap;

const MAGIC: &[u8; 8] = b"IKVIMG02";
const HEADER_LEN: u64 = 64;
/// Bytes of a slot.
const SLOT: usize = 8;
const OFFSET_BITS: u32 = 40;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const CRC_BLOCK: usize = 1 << 20;
/// Misses in a CRC block of slots between two checks of it (a miss-heavy workload pays one
/// block's CRC, about 50 µs, per this many misses in the block; damage is found within as
/// many). Counted, not timed: the same lookups check the same blocks.
const MISS_CHECK_EVERY: u64 = 1024;
/// A block's miss count once a check found it damaged.
const FOUND_DAMAGED: u64 = u64::MAX;
/// Most keys [`Image::prefetch`] warms at once (their lines fit the L1 and L2 caches).
pub const PREFETCH_MAX: usize = 32;

/// An entry's key, its document and where the next entry starts.
pub type WalkedEntry<'a> = (&'a [u8], &'a [u8], usize);

/// The hash that places a key among the slots: xxh3, the same in every process and version.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

fn damaged(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: format!("read image {}", path.display()),
        reason: reason.to_string(),
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Local {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes an image: entries in any order, then [`ImageWriter::finish`].
pub struct ImageWriter {
    path: PathBuf,
    temp: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    /// (hash, offset) of every entry.
    slots: Vec<(u64, u64)>,
}

impl ImageWriter {
    /// Starts `path` (written as `path.tmp` until finished).
    pub fn create(path: &Path) -> Result<ImageWriter> {
        let temp = path.with_extension("tmp");
        let mut file = File::create(&temp).map_err(|e| io_err(&temp, e))?;
        file.write_all(&[0; HEADER_LEN as usize])
            .map_err(|e| io_err(&temp, e))?;
        Ok(ImageWriter {
            path: path.to_owned(),
            temp,
            out: BufWriter::with_capacity(1 << 20, file),
            offset: HEADER_LEN,
            slots: Vec::new(),
        })
    }

    /// Adds one document; every key at most once.
    pub fn add(&mut self, key: &[u8], doc: &[u8]) -> Result<()> {
        if self.offset > OFFSET_MASK {
            return Err(io_err(&self.temp, "a read image is limited to 1 TiB"));
        }
        let mut lengths = [0u8; 20];
        let (k, kn) = varint::encode(key.len() as u64);
        let (d, dn) = varint::encode(doc.len() as u64);
        lengths[..kn].copy_from_slice(&k[..kn]);
        lengths[kn..kn + dn].copy_from_slice(&d[..dn]);
        let lengths = &lengths[..kn + dn];
        let mut crc = crc32c::crc32c(lengths);
        crc = crc32c::crc32c_append(crc, key);
        crc = crc32c::crc32c_append(crc, doc);
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&crc.to_le_bytes())?;
            out.write_all(lengths)?;
            out.write_all(key)?;
            out.write_all(doc)
        };
        write(&mut self.out).map_err(|e| io_err(&self.temp, e))?;
        self.slots.push((key_hash(key), self.offset));
        self.offset += (4 + lengths.len() + key.len() + doc.len()) as u64;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Writes the state, slots and directory, syncs, and renames the image into place.
    pub fn finish(mut self, state: &[u8]) -> Result<()> {
        let temp = self.temp.clone();
        let err = |e: std::io::Error| io_err(&temp, e);
        let state_offset = self.offset;
        self.out.write_all(state).map_err(err)?;
        let mut at = state_offset + state.len() as u64;
        let pad = (8 - at % 8) % 8;
        self.out.write_all(&[0; 8][..pad as usize]).map_err(err)?;
        at += pad;
        let slots_offset = at;
        self.slots.sort_unstable();
        let count = self.slots.len() as u64;
        // About four slots per bucket: a lookup reads one directory word and one or two
        // cache lines of slots.
        let bits = (count / 4).max(1).ilog2().min(40);
        let mut directory = Vec::with_capacity((1usize << bits) + 1);
        let mut next = 0usize;
        for bucket in 0..(1u64 << bits) {
            while next < self.slots.len() && bucket_of(self.slots[next].0, bits) < bucket {
                next += 1;
            }
            directory.push(next as u64);
        }
        directory.push(count);
        let mut tail = Vec::with_capacity((self.slots.len() + directory.len()) * 8);
        for (hash, offset) in &self.slots {
            tail.extend_from_slice(&slot_of(*hash, bits, *offset).to_le_bytes());
        }
        for index in &directory {
            tail.extend_from_slice(&index.to_le_bytes());
        }
        let directory_offset = slots_offset + count * SLOT as u64;
        let crcs_offset = slots_offset + tail.len() as u64;
        let crcs: Vec<u32> = tail.chunks(CRC_BLOCK).map(crc32c).collect();
        for crc in crcs {
            tail.extend_from_slice(&crc.to_le_bytes());
        }
        self.out.write_all(&tail).map_err(err)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        for word in [
            count,
            state_offset,
            state.len() as u64,
            slots_offset,
            directory_offset,
            crcs_offset,
        ] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        header.extend_from_slice(&bits.to_le_bytes());
        let crc = crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&temp, e.error()))?;
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        file.write_all(&header).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(|e| io_err(&self.path, e))?;
        // The rename synced too: the durable state may name this image as its base next.
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, e))?;
        }
        Ok(())
    }

    /// Removes the unfinished file.
    pub fn abandon(self) {
        let temp = self.temp.clone();
        drop(self);
        let _ = std::fs::remove_file(temp);
    }
}

fn bucket_of(hash: u64, bits: u32) -> u64 {
    if bits == 0 { 0 } else { hash >> (64 - bits) }
}

/// The 24 bits of `hash` after the bucket's `bits` (at most 40).
fn tag_of(hash: u64, bits: u32) -> u64 {
    (hash << bits) >> OFFSET_BITS
}

fn slot_of(hash: u64, bits: u32, offset: u64) -> u64 {
    (tag_of(hash, bits) << OFFSET_BITS) | offset
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn half(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// A mapped, checked image.
pub struct Image {
    path: PathBuf,
    map: Mmap,
    count: u64,
    state: (usize, usize),
    slots: usize,
    directory: usize,
    bits: u32,
    entries_end: usize,
    crcs: usize,
    /// Per CRC block of the slots and directory: misses that read it so far.
    misses: Vec<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("count", &self.count)
            .finish()
    }
}

impl Image {
    /// Maps `path` read-only and checks its header, slots and directory.
    pub fn open(path: &Path) -> Result<Image> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        // SAFETY: an image is never written after it is renamed into place (writers make a
        // new file), so the mapping does not change under the slices made from it.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
        // Lookups touch one entry at random: read-ahead around a fault would only push other
        // pages out when the image is larger than the memory it is given.
        if let Err(e) = map.advise(memmap2::Advice::Random) {
            tracing::debug!(error = %e, "madvise(RANDOM) on the read image failed");
        }
        let len = map.len();
        if len < HEADER_LEN as usize || &map[..8] != MAGIC {
            return Err(damaged(path, "not an ikv read image"));
        }
        let header = &map[..HEADER_LEN as usize];
        if crc32c(&header[..60]) != half(header, 60) {
            return Err(damaged(path, "header checksum mismatch"));
        }
        let count = word(header, 8);
        let (state_offset, state_len) = (word(header, 16), word(header, 24));
        let (slots, directory, crcs) = (word(header, 32), word(header, 40), word(header, 48));
        let bits = half(header, 56);
        let directory_len = (1u64 << bits.min(40)) + 1;
        let consistent = bits <= 40
            && state_offset >= HEADER_LEN
            && state_offset
                .checked_add(state_len)
                .is_some_and(|e| e <= slots)
            && count
                .checked_mul(SLOT as u64)
                .and_then(|s| s.checked_add(slots))
                == Some(directory)
            && directory.checked_add(directory_len * 8) == Some(crcs)
            && crcs <= len as u64;
        if !consistent {
            return Err(damaged(path, "header offsets are inconsistent"));
        }
        let tail = &map[slots as usize..crcs as usize];
        let blocks = tail.len().div_ceil(CRC_BLOCK);
        if (crcs as usize) + blocks * 4 != len {
            return Err(damaged(path, "truncated or extended"));
        }
        for (i, block) in tail.chunks(CRC_BLOCK).enumerate() {
            if crc32c(block) != half(&map, crcs as usize + i * 4) {
                return Err(damaged(path, "slot checksum mismatch"));
            }
        }
        let image = Image {
            path: path.to_owned(),
            count,
            state: (state_offset as usize, state_len as usize),
            slots: slots as usize,
            directory: directory as usize,
            bits,
            entries_end: state_offset as usize,
            crcs: crcs as usize,
            misses: (0..blocks)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
            map,
        };
        // The directory must be ascending and end at the count, or a lookup could read
        // past the slots.
        if image.dir(directory_len as usize - 1) != count
            || (1..directory_len as usize).any(|i| image.dir(i - 1) > image.dir(i))
        {
            return Err(damaged(path, "the slot directory is inconsistent"));
        }
        Ok(image)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Documents in the image.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The state JSON written with the image.
    pub fn state(&self) -> &[u8] {
        &self.map[self.state.0..self.state.0 + self.state.1]
    }

    fn dir(&self, bucket: usize) -> u64 {
        word(&self.map, self.directory + bucket * 8)
    }

    /// The document of `key`, checked against its CRC.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        let hash = key_hash(key);
        let bucket = bucket_of(hash, self.bits) as usize;
        let tag = tag_of(hash, self.bits);
        let (from, to) = (self.dir(bucket) as usize, self.dir(bucket + 1) as usize);
        for slot in from..to {
            let word = word(&self.map, self.slots + slot * SLOT);
            let slot_tag = word >> OFFSET_BITS;
            if slot_tag < tag {
                continue;
            }
            if slot_tag > tag {
                break;
            }
            let (entry_key, doc) = self.entry(word & OFFSET_MASK)?;
            if entry_key == key {
                return Ok(Some(doc));
            }
        }
        let dir_at = self.directory + bucket * 8;
        self.check_tail(dir_at, dir_at + 16)?;
        if to > from {
            self.check_tail(self.slots + from * SLOT, self.slots + to * SLOT)?;
        }
        Ok(None)
    }

    /// Checks the CRC blocks of the slots-and-directory tail covering bytes `start..end` of
    /// the file, at a block's first miss and every `MISS_CHECK_EVERY`th after.
    fn check_tail(&self, start: usize, end: usize) -> Result<()> {
        use std::sync::atomic::Ordering;
        let first = (start - self.slots) / CRC_BLOCK;
        let last = (end - 1 - self.slots) / CRC_BLOCK;
        for block in first..=last {
            let Some(misses) = self.misses.get(block) else {
                continue;
            };
            if misses.load(Ordering::Relaxed) != FOUND_DAMAGED {
                if !misses
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(MISS_CHECK_EVERY)
                {
                    continue;
                }
                let from = self.slots + block * CRC_BLOCK;
                let to = (from + CRC_BLOCK).min(self.crcs);
                if crc32c(&self.map[from..to]) == half(&self.map, self.crcs + block * 4) {
                    continue;
                }
                // Every later miss in the block is an error too, without checking again.
                misses.store(FOUND_DAMAGED, Ordering::Relaxed);
            }
            return Err(damaged(
                &self.path,
                "slot checksum mismatch (found by a miss)",
            ));
        }
        Ok(())
    }

    /// Brings the directory words, slots and entry heads that lookups of `keys` will read
    /// into the CPU cache, in three passes of independent loads, so that a batch waits on
    /// memory about three times rather than three times per key. Changes no result.
    pub fn prefetch<K: AsRef<[u8]>>(&self, keys: &[K]) {
        let mut work: [(u64, usize); PREFETCH_MAX] = [(0, 0); PREFETCH_MAX];
        let keys = &keys[..keys.len().min(PREFETCH_MAX)];
        for (w, k) in work.iter_mut().zip(keys) {
            let hash = key_hash(k.as_ref());
            let bucket = bucket_of(hash, self.bits) as usize;
            self.prefetch_at(self.directory + bucket * 8);
            *w = (tag_of(hash, self.bits), bucket);
        }
        for w in work.iter_mut().take(keys.len()) {
            let from = self.dir(w.1) as usize;
            self.prefetch_at(self.slots + from * SLOT);
            w.1 = from;
        }
        for &(tag, from) in work.iter().take(keys.len()) {
            let mut slot = from;
            while slot < self.count as usize {
                let word = word(&self.map, self.slots + slot * SLOT);
                let slot_tag = word >> OFFSET_BITS;
                if slot_tag > tag {
                    break;
                }
                if slot_tag == tag {
                    let entry = (word & OFFSET_MASK) as usize;
                    self.prefetch_at(entry);
                    self.prefetch_at(entry + 64);
                    self.prefetch_at(entry + 128);
                    self.prefetch_at(entry + 192);
                }
                slot += 1;
            }
        }
    }

    fn prefetch_at(&self, at: usize) {
        if at < self.map.len() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch is a hint: it never faults and writes nothing; the address is
            // inside the mapping.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.map.as_ptr().add(at) as *const i8,
                );
            }
        }
    }

    /// The checked key and document of the entry at `offset`.
    fn entry(&self, offset: u64) -> Result<(&[u8], &[u8])> {
        self.entry_at(offset as usize).map(|(k, d, _)| (k, d))
    }

    /// The first entry: where [`Image::entry_at`] starts a walk of every entry in file order.
    pub fn first_entry(&self) -> usize {
        HEADER_LEN as usize
    }

    /// The entry at byte `start` (checked) and where the next one starts; `None` past the
    /// last. A walk from [`Image::first_entry`] reads the entries sequentially (a scan),
    /// each once, whatever the slots say.
    pub fn next_entry(&self, start: usize) -> Result<Option<WalkedEntry<'_>>> {
        if start >= self.entries_end {
            return Ok(None);
        }
        self.entry_at(start).map(Some)
    }

    fn entry_at(&self, start: usize) -> Result<WalkedEntry<'_>> {
        let offset = start as u64;
        if offset < HEADER_LEN || start + 4 > self.entries_end {
            return Err(damaged(&self.path, "a slot points outside the entries"));
        }
        let crc = half(&self.map, start);
        let entries = &self.map[..self.entries_end];
        let past = || damaged(&self.path, "an entry runs past the entries");
        let (key_len, kn) = varint::get(&entries[start + 4..]).ok_or_else(past)?;
        let (doc_len, dn) = varint::get(&entries[start + 4 + kn..]).ok_or_else(past)?;
        let body = start + 4 + kn + dn;
        let end = usize::try_from(key_len)
            .ok()
            .zip(usize::try_from(doc_len).ok())
            .and_then(|(k, d)| body.checked_add(k)?.checked_add(d))
            .filter(|e| *e <= self.entries_end)
            .ok_or_else(past)?;
        if crc32c(&self.map[start + 4..end]) != crc {
            return Err(damaged(&self.path, "entry checksum mismatch"));
        }
        let key_end = body + key_len as usize;
        Ok((&self.map[body..key_end], &self.map[key_end..end], end))
    }

    /// Every entry in file order (checked), for tests and rebuilding.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = Result<(&[u8], &[u8])>> + '_ {
        (0..self.count as usize)
            .map(move |slot| self.entry(word(&self.map, self.slots + slot * SLOT) & OFFSET_MASK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(dir: &Path, n: u32) -> PathBuf {
        let path = dir.join("image-1");
        let mut w = ImageWriter::create(&path).unwrap();
        for i in 0..n {
            w.add(format!("key{i}").as_bytes(), format!("doc{i}").as_bytes())
                .unwrap();
        }
        w.finish(b"{\"state\":1}").unwrap();
        path
    }

    #[test]
    fn every_key_is_found_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0u32, 1, 7, 5000] {
            let image = Image::open(&build(dir.path(), n)).unwrap();
            assert_eq!(image.len(), n as u64);
            assert_eq!(image.state(), b"{\"state\":1}");
            for i in 0..n {
                let doc = image.get(format!("key{i}").as_bytes()).unwrap();
                assert_eq!(doc, Some(format!("doc{i}").as_bytes()));
            }
            assert_eq!(image.get(b"key-absent").unwrap(), None);
            assert_eq!(image.entries().count(), n as usize);
            let mut at = image.first_entry();
            let mut walked = Vec::new();
            while let Some((k, d, next)) = image.next_entry(at).unwrap() {
                walked.push((k.to_vec(), d.to_vec()));
                at = next;
            }
            let want: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                .map(|i| {
                    (
                        format!("key{i}").into_bytes(),
                        format!("doc{i}").into_bytes(),
                    )
                })
                .collect();
            assert_eq!(
                walked, want,
                "a walk reads every entry in the order written"
            );
            // Warming the cache for any keys, present or not, more than one window of them
            // or none, changes no answer.
            let mut keys: Vec<String> = (0..n.min(100)).map(|i| format!("key{i}")).collect();
            keys.extend((0..50).map(|i| format!("absent{i}")));
            for window in [&keys[..], &keys[..0], &keys[..1]] {
                image.prefetch(window);
            }
            for k in &keys {
                let want = k
                    .strip_prefix("key")
                    .map(|i| format!("doc{i}").into_bytes());
                assert_eq!(image.get(k.as_bytes()).unwrap().map(<[u8]>::to_vec), want);
            }
        }
    }

    /// Damage to the slots after the image was opened and checked (a write to the file, a bit
    /// flip in the page cache): a key that is there is never answered "not found" without an
    /// error.
    #[test]
    fn slots_damaged_after_open_are_found_by_a_miss() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), 3000);
        let good = std::fs::read(&path).unwrap();
        let header = &good[..64];
        let (slots, crcs) = (word(header, 32) as usize, word(header, 48) as usize);
        let mut errors = 0;
        for at in (slots..crcs).step_by(37) {
            let image = Image::open(&path).unwrap();
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut byte = [0u8];
            file.seek(SeekFrom::Start(at as u64)).unwrap();
            file.read_exact(&mut byte).unwrap();
            file.seek(SeekFrom::Start(at as u64)).unwrap();
            file.write_all(&[byte[0] ^ 0x08]).unwrap();
            for i in 0..3000 {
                match image.get(format!("key{i}").as_bytes()) {
                    Ok(Some(doc)) => assert_eq!(doc, format!("doc{i}").as_bytes(), "byte {at}"),
                    Ok(None) => panic!("byte {at}: key{i} vanished without an error"),
                    Err(e) => {
                        assert_eq!(e.kind(), ikv_core::ErrorKind::Corrupt, "{e}");
                        if e.to_string().contains("found by a miss") {
                            errors += 1;
                        }
                    }
                }
            }
            file.seek(SeekFrom::Start(at as u64)).unwrap();
            file.write_all(&byte).unwrap();
        }
        assert!(errors > 0, "misses found some of the damage");
    }

    #[test]
    fn any_flipped_byte_is_an_error_never_a_wrong_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = build(dir.path(), 300);
        let good = std::fs::read(&path).unwrap();
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            let broken = dir.path().join("broken");
            std::fs::write(&broken, &bad).unwrap();
            let Ok(image) = Image::open(&broken) else {
                continue; // refused at open: fine
            };
            for i in 0..300 {
                let key = format!("key{i}");
                match image.get(key.as_bytes()) {
                    Ok(Some(doc)) => assert_eq!(doc, format!("doc{i}").as_bytes(), "byte {at}"),
                    // A flipped state byte is not the slots' business.
                    Ok(None) => panic!("byte {at}: key{i} vanished without an error"),
                    Err(_) => {}
                }
            }
        }
        // Truncated: refused.
        for cut in [0, 10, 63, 64, good.len() / 2, good.len() - 1] {
            let broken = dir.path().join("cut");
            std::fs::write(&broken, &good[..cut]).unwrap();
            assert!(Image::open(&broken).is_err(), "cut at {cut}");
        }
    }
}
