//! Checksums of the objects ikv writes (docs/FORMAT.md, "Checksums"): every byte read from
//! the bucket is verified before it is decoded or served.
//!
//! - JSON objects (store configuration, manifests) end with a `"checksum"` member, the
//!   CRC32C of the document as it reads without that member.
//! - Deltas (Arrow IPC files) are followed by a 20-byte trailer: the sequence number the
//!   delta was committed at (u64 LE), the CRC32C of the IPC bytes and that number (u32 LE),
//!   and the magic `IKVDLT01`.
//! - Snapshot Parquet files are checked in blocks: the manifest that lists a file records its
//!   size and the CRC32C of each `block_size` bytes, so that ranged reads verify exactly the
//!   blocks they fetch.
//!
//! CRC32C (Castagnoli) is what S3's additional checksums offer and what SSE4.2 and ARMv8
//! compute in hardware (GB/s); it detects every burst error up to 32 bits, which is what bit
//! rot, torn writes and truncation produce. It is not a defence against a forger: whoever can
//! write the bucket can write valid checksums.
//!
//! Objects written before checksums existed (no member, no trailer, no block list) stay
//! readable, unverified; a delta whose metadata says it carries a trailer must have one.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Panics of a third-party decoder (Arrow, Parquet) on unverified bytes, caught and turned
/// into `Corrupt` errors since the process started. Verified bytes never get there; the
/// fuzz test reports this count for the legacy (unverified) objects it feeds.
static CONTAINED_DECODER_PANICS: AtomicU64 = AtomicU64::new(0);

/// Records one contained decoder panic (see [`contained_decoder_panics`]).
pub fn note_contained_panic() {
    CONTAINED_DECODER_PANICS.fetch_add(1, Ordering::Relaxed);
}

/// How many decoder panics on unverified bytes were contained so far.
pub fn contained_decoder_panics() -> u64 {
    CONTAINED_DECODER_PANICS.load(Ordering::Relaxed)
}

/// CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

const JSON_MEMBER: &str = "\"checksum\":\"crc32c:";
/// `"checksum":"crc32c:` + 8 hex digits + `"}`.
const JSON_SUFFIX_LEN: usize = JSON_MEMBER.len() + 8 + 2;

/// Appends the checksum member to a JSON object (as serialized by serde_json: it ends with
/// `}`), covering the object as it was.
pub fn seal_json(mut json: Vec<u8>) -> Vec<u8> {
    let crc = crc32c(&json);
    debug_assert_eq!(json.last(), Some(&b'}'));
    json.pop();
    if json.last() != Some(&b'{') {
        json.push(b',');
    }
    json.extend_from_slice(format!("{JSON_MEMBER}{crc:08x}\"}}").as_bytes());
    json
}

/// The JSON object without its checksum member, verified; a legacy object (no member) as it
/// is. `what` names the object in errors.
pub fn open_json(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let corrupt = |reason: String| Error::Corrupt {
        what: what.to_owned(),
        reason,
    };
    let n = bytes.len();
    if n <= JSON_SUFFIX_LEN || !bytes[n - JSON_SUFFIX_LEN..].starts_with(JSON_MEMBER.as_bytes()) {
        if contains(bytes, JSON_MEMBER.as_bytes()) {
            return Err(corrupt(
                "its checksum member is damaged or not at the end".into(),
            ));
        }
        return Ok(bytes.to_vec());
    }
    let member = n - JSON_SUFFIX_LEN;
    if !bytes.ends_with(b"\"}") {
        return Err(corrupt("its checksum member is damaged".into()));
    }
    let hex = &bytes[n - 10..n - 2];
    let expected = std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt("its checksum is not 8 hex digits".into()))?;
    let mut body = match bytes[member - 1] {
        b',' => bytes[..member - 1].to_vec(),
        b'{' => bytes[..member].to_vec(),
        _ => return Err(corrupt("its checksum member is damaged".into())),
    };
    body.push(b'}');
    let actual = crc32c(&body);
    if actual != expected {
        return Err(corrupt(format!(
            "checksum mismatch: recorded crc32c {expected:08x}, content has {actual:08x}"
        )));
    }
    Ok(body)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Magic that ends a delta carrying a trailer.
pub const TRAILER_MAGIC: &[u8; 8] = b"IKVDLT01";
/// `[sequence: u64 LE][crc32c: u32 LE][magic]`.
pub const TRAILER_LEN: usize = 20;

/// `ipc` followed by its trailer, placed at `sequence` (0 until a writer places it).
pub fn seal_trailer(mut ipc: Vec<u8>, sequence: u64) -> Vec<u8> {
    ipc.extend_from_slice(&sequence.to_le_bytes());
    let crc = crc32c(&ipc);
    ipc.extend_from_slice(&crc.to_le_bytes());
    ipc.extend_from_slice(TRAILER_MAGIC);
    ipc
}

/// A sealed delta placed at `sequence`: its IPC bytes (shared, not copied) and a new
/// trailer. The writer learns the number only when its conditional PUT lands, so it places
/// the same encoded delta again for each number it tries (one checksum pass, no re-encoding).
pub fn reseal_trailer(sealed: &Bytes, sequence: u64) -> Option<(Bytes, Bytes)> {
    let n = sealed.len();
    if n < TRAILER_LEN || &sealed[n - 8..] != TRAILER_MAGIC {
        return None;
    }
    let ipc = sealed.slice(..n - TRAILER_LEN);
    let seq = sequence.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c(&ipc), &seq);
    let mut trailer = Vec::with_capacity(TRAILER_LEN);
    trailer.extend_from_slice(&seq);
    trailer.extend_from_slice(&crc.to_le_bytes());
    trailer.extend_from_slice(TRAILER_MAGIC);
    Some((ipc, Bytes::from(trailer)))
}

/// The IPC bytes before the trailer, verified, and the sequence the trailer places the delta
/// at (`None`: a legacy object without a trailer, returned whole and unverified).
pub fn open_trailer(bytes: &Bytes, what: &str) -> Result<(Bytes, Option<u64>)> {
    let n = bytes.len();
    if n < TRAILER_LEN || &bytes[n - 8..] != TRAILER_MAGIC {
        return Ok((bytes.clone(), None));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[n - 12..n - 8]);
    let expected = u32::from_le_bytes(crc);
    let actual = crc32c(&bytes[..n - 12]);
    if actual != expected {
        return Err(Error::Corrupt {
            what: what.to_owned(),
            reason: format!(
                "checksum mismatch: recorded crc32c {expected:08x}, content has {actual:08x}"
            ),
        });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[n - TRAILER_LEN..n - 12]);
    Ok((
        bytes.slice(..n - TRAILER_LEN),
        Some(u64::from_le_bytes(seq)),
    ))
}

/// Block checksums of one file: CRC32C of each `block_size` bytes (the last block may be
/// shorter), and the file's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockChecksums {
    pub block_size: u32,
    pub size: u64,
    pub crc32c: Vec<u32>,
}

/// Block size of snapshot files: a ranged read fetches whole blocks (at most one block more
/// than it asked for at each end).
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

/// Computes [`BlockChecksums`] of a stream of bytes as it is written.
#[derive(Debug)]
pub struct BlockHasher {
    block_size: u32,
    size: u64,
    current: u32,
    in_block: u32,
    done: Vec<u32>,
}

impl BlockHasher {
    pub fn new(block_size: u32) -> BlockHasher {
        BlockHasher {
            block_size: block_size.max(1),
            size: 0,
            current: 0,
            in_block: 0,
            done: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = (self.block_size - self.in_block) as usize;
            let take = room.min(bytes.len());
            self.current = crc32c::crc32c_append(self.current, &bytes[..take]);
            self.in_block += take as u32;
            bytes = &bytes[take..];
            if self.in_block == self.block_size {
                self.done.push(self.current);
                self.current = 0;
                self.in_block = 0;
            }
        }
    }

    pub fn finish(mut self) -> BlockChecksums {
        if self.in_block > 0 {
            self.done.push(self.current);
        }
        BlockChecksums {
            block_size: self.block_size,
            size: self.size,
            crc32c: self.done,
        }
    }
}

impl BlockChecksums {
    /// Checks that the list is consistent with the size (a manifest is input too).
    pub fn validate(&self, what: &str) -> Result<()> {
        let blocks = self.size.div_ceil(u64::from(self.block_size.max(1)));
        if self.block_size == 0 || blocks != self.crc32c.len() as u64 {
            return Err(Error::Corrupt {
                what: what.to_owned(),
                reason: format!(
                    "block checksums do not fit the size: {} blocks of {} bytes for {} bytes",
                    self.crc32c.len(),
                    self.block_size,
                    self.size
                ),
            });
        }
        Ok(())
    }

    /// The block-aligned range covering `range`, clamped to the file.
    pub fn aligned(&self, range: std::ops::Range<u64>) -> std::ops::Range<u64> {
        let b = u64::from(self.block_size);
        let start = range.start / b * b;
        let end = range.end.div_ceil(b).saturating_mul(b).min(self.size);
        start..end.max(start)
    }

    /// Verifies `bytes`, which hold the file from the block-aligned offset `start`.
    pub fn verify(&self, start: u64, bytes: &[u8], what: &str) -> Result<()> {
        let b = u64::from(self.block_size);
        let corrupt = |reason: String| Error::Corrupt {
            what: what.to_owned(),
            reason,
        };
        if !start.is_multiple_of(b) {
            return Err(corrupt(format!("unaligned verification at {start}")));
        }
        let mut offset = start;
        for chunk in bytes.chunks(self.block_size as usize) {
            let index = (offset / b) as usize;
            let expected = self.crc32c.get(index).copied().ok_or_else(|| {
                corrupt(format!("bytes at {offset} lie beyond the recorded size"))
            })?;
            let full = (self.size - offset).min(b);
            if chunk.len() as u64 != full {
                return Err(corrupt(format!(
                    "block {index} is {} bytes long, expected {full} (truncated?)",
                    chunk.len()
                )));
            }
            let actual = crc32c(chunk);
            if actual != expected {
                return Err(corrupt(format!(
                    "block {index} (bytes {offset}..{}): checksum mismatch, recorded crc32c {expected:08x}, content has {actual:08x}",
                    offset + full
                )));
            }
            offset += full;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_any_change_is_caught() {
        let json = br#"{"a":1,"b":"x"}"#.to_vec();
        let sealed = seal_json(json.clone());
        assert!(sealed.ends_with(b"\"}"));
        assert!(serde_json::from_slice::<serde_json::Value>(&sealed).is_ok());
        assert_eq!(open_json(&sealed, "t").unwrap(), json);
        let empty = seal_json(b"{}".to_vec());
        assert!(serde_json::from_slice::<serde_json::Value>(&empty).is_ok());
        assert_eq!(open_json(&empty, "t").unwrap(), b"{}");
        assert_eq!(open_json(&json, "t").unwrap(), json, "legacy: as it is");
        let original: serde_json::Value = serde_json::from_slice(&json).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x04;
            // Refused, or (a flip inside the member's own name) the data is untouched.
            if let Ok(body) = open_json(&bad, "t")
                && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
            {
                assert_eq!(value["a"], original["a"], "flip at {i}");
                assert_eq!(value["b"], original["b"], "flip at {i}");
            }
        }
        for cut in 1..sealed.len() {
            let opened = open_json(&sealed[..cut], "t");
            // A cut object is either refused or no longer parses as JSON.
            assert!(
                opened.is_err()
                    || serde_json::from_slice::<serde_json::Value>(&opened.unwrap()).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn trailers_verify_and_legacy_bytes_pass_through() {
        let sealed = Bytes::from(seal_trailer(b"ipc bytes ARROW1".to_vec(), 0));
        let (body, seq) = open_trailer(&sealed, "d").unwrap();
        assert_eq!(seq, Some(0));
        assert_eq!(&body[..], b"ipc bytes ARROW1");
        let (ipc, trailer) = reseal_trailer(&sealed, 42).unwrap();
        let placed = Bytes::from([&ipc[..], &trailer[..]].concat());
        assert_eq!(
            open_trailer(&placed, "d").unwrap(),
            (body.clone(), Some(42))
        );
        for i in 0..sealed.len() - 8 {
            let mut bad = sealed.to_vec();
            bad[i] ^= 0x10;
            assert!(open_trailer(&Bytes::from(bad), "d").is_err(), "flip at {i}");
        }
        let legacy = Bytes::from_static(b"ipc bytes ARROW1");
        assert_eq!(open_trailer(&legacy, "d").unwrap(), (legacy.clone(), None));
    }

    #[test]
    fn block_checksums_verify_aligned_ranges_and_catch_damage() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut hasher = BlockHasher::new(1024);
        for piece in data.chunks(333) {
            hasher.update(piece);
        }
        let sums = hasher.finish();
        sums.validate("f").unwrap();
        assert_eq!(sums.crc32c.len(), 10);
        assert_eq!(sums.aligned(1500..2100), 1024..3072);
        assert_eq!(sums.aligned(9990..10_000), 9216..10_000);
        let r = sums.aligned(1500..2100);
        sums.verify(r.start, &data[r.start as usize..r.end as usize], "f")
            .unwrap();
        let mut bad = data.clone();
        bad[2000] ^= 1;
        assert!(sums.verify(1024, &bad[1024..3072], "f").is_err());
        assert!(
            sums.verify(9216, &data[9216..9999], "f").is_err(),
            "truncated"
        );
        let mut wrong = sums.clone();
        wrong.crc32c.pop();
        assert!(wrong.validate("f").is_err());
    }
}
