//! A document as stored locally: one entry per primary key, all its fields in one value.
//!
//! A section is one partition's document: `[version 3: u8][partition: varint][field count:
//! varint][base epoch: varint]`, then per field, sorted by name: `[name length: varint][name]
//! [type: u8][epoch − base epoch, zigzag: varint][length: varint][value]` (varints are
//! `varint.rs`'s LEB128; the base epoch is the first field's, so fields written together
//! spend one byte on their epoch; a field with a time to live has the type's bit 0x40 set
//! and its expiry, ms since the Unix epoch as a zigzag varint, after the epoch; one with an
//! event time has bit 0x20 and the event time, µs as a zigzag varint, after that; version 1, fixed-width, was written by local layouts before
//! 4, which owners rebuild). A field whose value is the document's key (the primary-key
//! field, always) has the type's high bit set and neither length nor value: the key is
//! stored beside the document wherever a document is (image and overlay entries, the durable
//! copy's keys), so every decoder is given it. The epoch of each field orders it against store-wide drops of
//! that section's partition (`drops.rs`): epochs of different partitions' logs are never
//! compared.
//!
//! An entry is one section (the usual case), or, when a store with a partitioning key holds
//! documents of one primary key in several partitions, `[version 2: u8][section count: u16
//! LE]` then per section, in ascending partition order, `[length: u32 LE][section]`. Reads
//! answer from the lowest-numbered partition whose document exists (its primary-key field is
//! live); see "Partitioning keys" in `docs/FORMAT.md`. One entry per primary key keeps a
//! multi-field read one lookup and a document delete one delete.

use std::collections::BTreeMap;

use ikv_core::{Error, FieldType, FieldValue, Result};

use crate::drops::DropState;
use crate::read_time::ReadTime;

use crate::varint;

const VERSION_SECTIONS: u8 = 2;
const VERSION: u8 = 3;
/// On a field's type: its value is the document's key, not stored again.
const KEY_VALUE: u8 = 0x80;
/// On a field's type: an expiry follows the epoch (zigzag varint, ms since the Unix epoch).
const EXPIRES: u8 = 0x40;
/// On a field's type: an event time follows (zigzag varint, µs since the Unix epoch).
const EVENT: u8 = 0x20;

/// Whether `bytes` starts a single section rather than a list of them.
fn is_section(bytes: &[u8]) -> bool {
    bytes.first() == Some(&VERSION)
}

fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        what: "local document".into(),
        reason: reason.into(),
    }
}

/// Writes one section in the layout above: the only encoder of it (deltas, bootstraps and
/// snapshot rows all go through here). Fields must come in name order.
///
/// Written in place, without a second buffer: the field count and each value's length get a
/// one-byte slot that a larger number (128 or more, rare) widens by shifting what follows.
pub struct SectionEncoder<'k> {
    key: &'k [u8],
    out: Vec<u8>,
    count_at: usize,
    count: u64,
    base: u64,
}

impl<'k> SectionEncoder<'k> {
    /// A section of the document `key` in `partition`.
    pub fn new(partition: u32, key: &'k [u8], capacity: usize) -> SectionEncoder<'k> {
        let mut out = Vec::with_capacity(capacity + 16);
        out.push(VERSION);
        varint::put(&mut out, u64::from(partition));
        let count_at = out.len();
        out.push(0);
        SectionEncoder {
            key,
            out,
            count_at,
            count: 0,
            base: 0,
        }
    }

    /// One field that stops being served at `expires_ms` (`None`: never), written with event
    /// time `event_us` (`None`: none); `payload` appends the encoded value (its length is put
    /// before it).
    pub fn timed_field(
        &mut self,
        name: &str,
        field_type: FieldType,
        epoch: u64,
        expires_ms: Option<i64>,
        event_us: Option<i64>,
        payload: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.count == 0 {
            self.base = epoch;
            varint::put(&mut self.out, epoch);
        }
        self.count += 1;
        varint::put(&mut self.out, name.len() as u64);
        self.out.extend_from_slice(name.as_bytes());
        let type_at = self.out.len();
        let flags = if expires_ms.is_some() { EXPIRES } else { 0 }
            | if event_us.is_some() { EVENT } else { 0 };
        self.out.push(field_type.code() | flags);
        varint::put(
            &mut self.out,
            varint::zigzag(epoch.wrapping_sub(self.base) as i64),
        );
        if let Some(e) = expires_ms {
            varint::put(&mut self.out, varint::zigzag(e));
        }
        if let Some(e) = event_us {
            varint::put(&mut self.out, varint::zigzag(e));
        }
        let len_at = self.out.len();
        self.out.push(0);
        payload(&mut self.out);
        if self.out[len_at + 1..] == *self.key {
            self.out.truncate(len_at);
            self.out[type_at] |= KEY_VALUE;
            return;
        }
        let len = (self.out.len() - len_at - 1) as u64;
        put_in_slot(&mut self.out, len_at, len);
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.count == 0 {
            varint::put(&mut self.out, 0); // base epoch
        }
        put_in_slot(&mut self.out, self.count_at, self.count);
        self.out
    }
}

/// Writes `value` as a varint into the one-byte slot at `at`, widening it when needed.
fn put_in_slot(out: &mut Vec<u8>, at: usize, value: u64) {
    if value < 0x80 {
        out[at] = value as u8;
        return;
    }
    let (bytes, n) = varint::encode(value);
    out[at] = bytes[0];
    out.splice(at + 1..at + 1, bytes[1..n].iter().copied());
}

/// One field as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredField {
    pub field_type: FieldType,
    pub epoch: u64,
    pub payload: Vec<u8>,
    /// When it stops being served (ms since the Unix epoch); `None`: never.
    pub expires_ms: Option<i64>,
    /// The event time it was written with (µs since the Unix epoch); `None`: none.
    pub event_us: Option<i64>,
}

/// A document being edited by a delta, or built by a bootstrap.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OwnedDoc {
    pub partition: u32,
    pub fields: BTreeMap<String, StoredField>,
}

impl OwnedDoc {
    pub fn new(partition: u32) -> OwnedDoc {
        OwnedDoc {
            partition,
            fields: BTreeMap::new(),
        }
    }

    pub fn set(&mut self, name: &str, value: &FieldValue, epoch: u64) {
        self.set_timed(name, value, epoch, None, None);
    }

    /// Sets a field that stops being served at `expires_ms` (`None`: never), written with
    /// event time `event_us`.
    pub fn set_timed(
        &mut self,
        name: &str,
        value: &FieldValue,
        epoch: u64,
        expires_ms: Option<i64>,
        event_us: Option<i64>,
    ) {
        self.fields.insert(
            name.to_owned(),
            StoredField {
                field_type: value.field_type(),
                epoch,
                payload: value.encode(),
                expires_ms,
                event_us,
            },
        );
    }

    /// A write's set of a field other than the primary key, in a delta written at
    /// `written_at_ms`: made only when it wins over the stored value by event time
    /// (`ikv_core::event_time::set_wins`). Returns whether it was made.
    pub fn set_ordered(
        &mut self,
        name: &str,
        value: &FieldValue,
        epoch: u64,
        (expires_ms, event_us): (Option<i64>, Option<i64>),
        written_at_ms: i64,
    ) -> bool {
        let stored = self.fields.get(name).map(|f| ikv_core::event_time::Stored {
            event_us: f.event_us,
            expires_ms: f.expires_ms,
        });
        let wins = ikv_core::event_time::set_wins(stored, event_us, written_at_ms);
        if wins {
            self.set_timed(name, value, epoch, expires_ms, event_us);
        }
        wins
    }

    /// A write's set of the document's primary-key field: it keeps the latest expiry set on
    /// it (`None`, never, wins), so a document outlives every field written into it and
    /// disappears when all of them expired (the compactor's overlay does the same).
    pub fn set_key(&mut self, name: &str, value: &FieldValue, epoch: u64, expires_ms: Option<i64>) {
        let expires_ms = match self.fields.get(name) {
            Some(old) => old.expires_ms.zip(expires_ms).map(|(a, b)| a.max(b)),
            None => expires_ms,
        };
        self.set_timed(name, value, epoch, expires_ms, None);
    }

    /// Sets the fields of a snapshot's document: a companion field (`ikv_core::expiry`,
    /// `ikv_core::event_time`) gives its field an expiry or an event time instead of being a
    /// field.
    pub fn set_snapshot_fields<'v>(
        &mut self,
        fields: impl IntoIterator<Item = (&'v str, &'v FieldValue)>,
        epoch: u64,
    ) {
        let mut expiries = Vec::new();
        let mut events = Vec::new();
        for (name, value) in fields {
            let expiry = ikv_core::expiry::field_of_expiry(name);
            let event = ikv_core::event_time::field_of_event(name);
            match (expiry, event, value) {
                (Some(field), _, FieldValue::Int64(e)) => expiries.push((field, *e)),
                (_, Some(field), FieldValue::Int64(e)) => events.push((field, *e)),
                (None, None, _) => self.set(name, value, epoch),
                _ => {}
            }
        }
        for (field, e) in expiries {
            if let Some(f) = self.fields.get_mut(field) {
                f.expires_ms = Some(e);
            }
        }
        for (field, e) in events {
            if let Some(f) = self.fields.get_mut(field) {
                f.event_us = Some(e);
            }
        }
    }

    /// The section, as a document of `key`.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let size: usize = self
            .fields
            .iter()
            .map(|(n, f)| 1 + n.len() + 1 + 2 + 2 + f.payload.len())
            .sum();
        let mut section = SectionEncoder::new(self.partition, key, size);
        for (name, f) in &self.fields {
            section.timed_field(
                name,
                f.field_type,
                f.epoch,
                f.expires_ms,
                f.event_us,
                |out| out.extend_from_slice(&f.payload),
            );
        }
        section.finish()
    }

    /// Decodes a stored section, keeping only the fields still live under `drops`.
    pub fn decode_live(
        bytes: &[u8],
        key: &[u8],
        drops: &[DropState],
        primary_key: &str,
    ) -> Result<OwnedDoc> {
        Self::live_of(&DocView::parse(bytes, key)?, drops, primary_key)
    }

    /// The fields of `view` still live under `drops`.
    pub fn live_of(view: &DocView<'_>, drops: &[DropState], primary_key: &str) -> Result<OwnedDoc> {
        let drop = drops.get(view.partition as usize);
        let mut doc = OwnedDoc::new(view.partition);
        for f in view.fields() {
            let f = f?;
            if drop.is_none_or(|d| d.is_live(f.name, f.name == primary_key, f.epoch)) {
                doc.fields.insert(
                    f.name.to_owned(),
                    StoredField {
                        field_type: f.field_type,
                        epoch: f.epoch,
                        payload: f.payload.to_vec(),
                        expires_ms: f.expires_ms,
                        event_us: f.event_us,
                    },
                );
            }
        }
        Ok(doc)
    }
}

/// Every partition's document of one primary key, by partition.
pub type Sections = BTreeMap<u32, OwnedDoc>;

/// The sections of a stored entry, each keeping only its fields still live under `drops`;
/// sections left without fields (deleted by a drop) are left out.
pub fn decode_entry_live(
    bytes: &[u8],
    key: &[u8],
    drops: &[DropState],
    primary_key: &str,
) -> Result<Sections> {
    let mut out = Sections::new();
    for section in split_sections(bytes)? {
        let doc = OwnedDoc::decode_live(section?, key, drops, primary_key)?;
        if !doc.fields.is_empty() {
            out.insert(doc.partition, doc);
        }
    }
    Ok(out)
}

/// Encodes the sections of the primary key `key`; `None` when there are none (delete the
/// entry).
pub fn encode_entry(sections: &Sections, key: &[u8]) -> Option<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = sections
        .values()
        .filter(|d| !d.fields.is_empty())
        .map(|d| d.encode(key))
        .collect();
    (!encoded.is_empty()).then(|| join_sections(encoded))
}

/// Joins encoded single-partition sections, given in ascending partition order.
pub fn join_sections(mut sections: Vec<Vec<u8>>) -> Vec<u8> {
    if sections.len() == 1 {
        return sections.pop().unwrap_or_default();
    }
    let size: usize = sections.iter().map(|s| 4 + s.len()).sum();
    let mut out = Vec::with_capacity(3 + size);
    out.push(VERSION_SECTIONS);
    out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    for s in &sections {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// The single-partition sections of an entry, in stored (ascending partition) order.
fn split_sections(bytes: &[u8]) -> Result<impl Iterator<Item = Result<&[u8]>>> {
    let (mut rest, mut left) = match bytes.first() {
        _ if is_section(bytes) => (bytes, 1usize),
        Some(&VERSION_SECTIONS) if bytes.len() >= 3 => (
            &bytes[3..],
            u16::from_le_bytes([bytes[1], bytes[2]]) as usize,
        ),
        _ => return Err(corrupt("bad header")),
    };
    let single = is_section(bytes);
    Ok(std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        if single {
            return Some(Ok(rest));
        }
        let section = rest
            .get(..4)
            .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|len| rest.get(4..4 + len))
            .ok_or_else(|| corrupt("truncated section"));
        match section {
            Ok(s) => {
                rest = &rest[4 + s.len()..];
                Some(Ok(s))
            }
            Err(e) => {
                left = 0;
                Some(Err(e))
            }
        }
    }))
}

/// The section reads answer from: the lowest-numbered partition whose document exists (its
/// primary-key field is live and not expired at `time`). A single-section entry is returned as is: when its primary key
/// is dead, so is every other field.
pub fn select<'a>(
    bytes: &'a [u8],
    key: &'a [u8],
    drops: &[DropState],
    primary_key: &str,
    time: &ReadTime<'_>,
) -> Result<Option<DocView<'a>>> {
    if is_section(bytes) {
        return DocView::parse(bytes, key).map(Some);
    }
    for section in split_sections(bytes)? {
        let view = DocView::parse(section?, key)?;
        let Some(pk) = view.find(primary_key)? else {
            continue;
        };
        // The key field outlives every field written with it: once it expired, the
        // partition's document is gone.
        let live = drops
            .get(view.partition as usize)
            .is_none_or(|d| d.is_live(primary_key, true, pk.epoch))
            && time.serves(&pk);
        if live {
            return Ok(Some(view));
        }
    }
    Ok(None)
}

/// A borrowed view of a stored document.
pub struct DocView<'a> {
    pub partition: u32,
    count: u64,
    base: u64,
    body: &'a [u8],
    key: &'a [u8],
}

/// One field of a [`DocView`].
#[derive(Clone, Copy)]
pub struct FieldRef<'a> {
    pub name: &'a str,
    pub field_type: FieldType,
    pub epoch: u64,
    pub payload: &'a [u8],
    /// When it stops being served (ms since the Unix epoch); `None`: never.
    pub expires_ms: Option<i64>,
    /// The event time it was written with (µs since the Unix epoch); `None`: none.
    pub event_us: Option<i64>,
}

impl<'a> FieldRef<'a> {
    /// Whether it is served at `now_ms`.
    pub fn is_live_at(&self, now_ms: i64) -> bool {
        ikv_core::expiry::is_live(self.expires_ms, now_ms)
    }

    pub fn value(&self) -> Result<FieldValue> {
        FieldValue::decode(self.field_type, self.payload)
    }
}

impl<'a> DocView<'a> {
    /// The section `bytes` of the document `key`.
    pub fn parse(bytes: &'a [u8], key: &'a [u8]) -> Result<DocView<'a>> {
        if !is_section(bytes) {
            return Err(corrupt("bad header"));
        }
        let mut at = 1;
        let mut next = || {
            let (v, used) = varint::get(&bytes[at..]).ok_or_else(|| corrupt("bad header"))?;
            at += used;
            Ok::<u64, Error>(v)
        };
        let partition = u32::try_from(next()?).map_err(|_| corrupt("bad header"))?;
        let count = next()?;
        let base = next()?;
        Ok(DocView {
            partition,
            count,
            base,
            body: &bytes[at..],
            key,
        })
    }

    pub fn field_count(&self) -> u64 {
        self.count
    }

    pub fn fields(&self) -> FieldIter<'a> {
        FieldIter {
            rest: self.body,
            left: self.count,
            base: self.base,
            key: self.key,
        }
    }

    /// The field named `name`, if stored (live or not). The fields before it are passed
    /// over by name (what a lookup of one field does on every get).
    pub fn find(&self, name: &str) -> Result<Option<FieldRef<'a>>> {
        let mut fields = self.fields();
        while fields.left > 0 {
            fields.left -= 1;
            let candidate = fields.next_name()?;
            if candidate == name.as_bytes() {
                // The bytes equal a `str`'s: UTF-8, and borrowed from the document.
                let name = std::str::from_utf8(candidate)
                    .map_err(|_| corrupt("field name is not UTF-8"))?;
                return fields.field_after(name).map(Some);
            }
            fields.skip_after_name()?;
        }
        Ok(None)
    }
}

pub struct FieldIter<'a> {
    rest: &'a [u8],
    left: u64,
    base: u64,
    key: &'a [u8],
}

impl<'a> FieldIter<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn varint(&mut self, what: &str) -> Result<u64> {
        let (value, used) = varint::get(self.rest).ok_or_else(|| corrupt(what))?;
        self.rest = &self.rest[used..];
        Ok(value)
    }

    fn next_field(&mut self) -> Result<FieldRef<'a>> {
        let name = self.next_name()?;
        let name = std::str::from_utf8(name).map_err(|_| corrupt("field name is not UTF-8"))?;
        self.field_after(name)
    }

    /// The next field's name bytes (the rest of it comes with [`FieldIter::field_after`] or
    /// goes with [`FieldIter::skip_after_name`]).
    fn next_name(&mut self) -> Result<&'a [u8]> {
        let name_len =
            usize::try_from(self.varint("name length")?).map_err(|_| corrupt("name length"))?;
        self.take(name_len)
    }

    /// The field named `name` whose name was just read.
    fn field_after(&mut self, name: &'a str) -> Result<FieldRef<'a>> {
        let code = self.take(1)?[0];
        let field_type = FieldType::from_code(code & !(KEY_VALUE | EXPIRES | EVENT))
            .ok_or_else(|| corrupt("unknown type"))?;
        let epoch = self
            .base
            .wrapping_add(varint::unzigzag(self.varint("epoch")?) as u64);
        let expires_ms = if code & EXPIRES != 0 {
            Some(varint::unzigzag(self.varint("expiry")?))
        } else {
            None
        };
        let event_us = if code & EVENT != 0 {
            Some(varint::unzigzag(self.varint("event time")?))
        } else {
            None
        };
        let payload = if code & KEY_VALUE != 0 {
            self.key
        } else {
            let len = usize::try_from(self.varint("length")?).map_err(|_| corrupt("length"))?;
            self.take(len)?
        };
        Ok(FieldRef {
            name,
            field_type,
            epoch,
            payload,
            expires_ms,
            event_us,
        })
    }

    /// Passes over the rest of a field whose name was just read, decoding nothing it does
    /// not need to find the next field (bounds checked as a decode is).
    fn skip_after_name(&mut self) -> Result<()> {
        let code = self.take(1)?[0];
        let varints = 1 + usize::from(code & EXPIRES != 0) + usize::from(code & EVENT != 0);
        for _ in 0..varints {
            self.varint("field header")?;
        }
        if code & KEY_VALUE == 0 {
            let len = usize::try_from(self.varint("length")?).map_err(|_| corrupt("length"))?;
            self.take(len)?;
        }
        Ok(())
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<FieldRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let f = self.next_field();
        if f.is_err() {
            self.left = 0;
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_time::TimeSource;

    /// The key every test document is stored under (its primary-key field says the same
    /// where it has one, so that field's value is not stored twice).
    const K: &[u8] = b"k";

    fn decode_live_k(bytes: &[u8], drops: &[DropState], pk: &str) -> Result<OwnedDoc> {
        OwnedDoc::decode_live(bytes, K, drops, pk)
    }

    fn decode_entry_live_k(bytes: &[u8], drops: &[DropState], pk: &str) -> Result<Sections> {
        decode_entry_live(bytes, K, drops, pk)
    }

    fn select_k<'a>(bytes: &'a [u8], drops: &[DropState], pk: &str) -> Result<Option<DocView<'a>>> {
        select(bytes, K, drops, pk, &ReadTime::new(&TimeSource::Fixed(0)))
    }

    #[test]
    fn documents_round_trip_and_drops_filter() {
        let mut doc = OwnedDoc::new(3);
        doc.set("id", &FieldValue::String("k".into()), 5);
        doc.set("n", &FieldValue::Int64(-7), 6);
        doc.set("tmp_x", &FieldValue::Bytes(vec![0, 1]), 7);
        let bytes = doc.encode(K);
        let view = DocView::parse(&bytes, K).unwrap();
        assert_eq!(view.partition, 3);
        assert_eq!(
            view.find("n").unwrap().unwrap().value().unwrap(),
            FieldValue::Int64(-7)
        );
        assert!(view.find("missing").unwrap().is_none());
        assert_eq!(decode_live_k(&bytes, &[], "id").unwrap(), doc);
        let mut drops = vec![DropState::default(); 4];
        drops[3].prefixes.insert("tmp".into(), 10);
        let live = decode_live_k(&bytes, &drops, "id").unwrap();
        assert_eq!(live.fields.keys().collect::<Vec<_>>(), vec!["id", "n"]);
        assert!(DocView::parse(&bytes[..3], K).is_err());
        let truncated = &bytes[..bytes.len() - 1];
        assert!(
            DocView::parse(truncated, K)
                .unwrap()
                .fields()
                .any(|f| f.is_err())
        );
    }

    #[test]
    fn entries_of_several_partitions_answer_from_the_lowest_live_one() {
        let mut in_3 = OwnedDoc::new(3);
        in_3.set("id", &FieldValue::String("k".into()), epoch_of(50));
        in_3.set("u", &FieldValue::Int64(3), epoch_of(50));
        let mut in_1 = OwnedDoc::new(1);
        in_1.set("id", &FieldValue::String("k".into()), epoch_of(2));
        in_1.set("e", &FieldValue::Int64(1), epoch_of(2));
        let sections: Sections = [(3, in_3.clone()), (1, in_1.clone())].into();
        let bytes = encode_entry(&sections, K).unwrap();
        assert_eq!(bytes[0], VERSION_SECTIONS);
        assert_eq!(decode_entry_live_k(&bytes, &[], "id").unwrap(), sections);
        let view = select_k(&bytes, &[], "id").unwrap().unwrap();
        assert_eq!(view.partition, 1, "the lowest partition answers");
        // Partition 1 dropped everything after its document was written: partition 3 answers.
        let mut drops = vec![DropState::default(); 4];
        drops[1].all = epoch_of(3);
        assert_eq!(
            select_k(&bytes, &drops, "id").unwrap().unwrap().partition,
            3
        );
        let live = decode_entry_live_k(&bytes, &drops, "id").unwrap();
        assert_eq!(live.keys().collect::<Vec<_>>(), vec![&3]);
        // Partition 3's drops never judge partition 1's fields, whatever the epochs.
        let mut drops = vec![DropState::default(); 4];
        drops[3].fields.insert("e".into(), epoch_of(60));
        let view = select_k(&bytes, &drops, "id").unwrap().unwrap();
        assert!(view.find("e").unwrap().is_some());
        // One section encodes as a plain document; none deletes the entry.
        let single = encode_entry(&[(1, in_1.clone())].into(), K).unwrap();
        assert_eq!(single, in_1.encode(K));
        assert!(encode_entry(&Sections::new(), K).is_none());
        // Truncated or malformed entries are errors, not panics.
        for cut in 0..bytes.len() {
            let _ = decode_entry_live_k(&bytes[..cut], &[], "id");
            let _ = select_k(&bytes[..cut], &[], "id");
        }
        assert!(decode_entry_live_k(&bytes[..bytes.len() - 1], &[], "id").is_err());
        assert!(select_k(&[9, 0, 0], &[], "id").is_err());
    }

    /// A section in the fixed-width layout that local layouts before 4 wrote.
    fn fixed_width(doc: &OwnedDoc) -> Vec<u8> {
        let mut out = vec![1];
        out.extend_from_slice(&(doc.partition as u16).to_le_bytes());
        out.extend_from_slice(&(doc.fields.len() as u16).to_le_bytes());
        for (name, f) in &doc.fields {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(f.field_type.code());
            out.extend_from_slice(&f.epoch.to_le_bytes());
            out.extend_from_slice(&(f.payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&f.payload);
        }
        out
    }

    #[test]
    fn fields_written_together_cost_their_names_and_values_and_five_bytes_and_the_key_none() {
        let key = [7u8; 10];
        let mut doc = OwnedDoc::new(2);
        let at = epoch_of(1_000_000);
        doc.set("id", &FieldValue::Bytes(key.to_vec()), at);
        for name in ["f0", "f1", "f2"] {
            doc.set(name, &FieldValue::Bytes(vec![1; 50]), at);
        }
        let bytes = doc.encode(&key);
        // Header: version, partition, count, base epoch; a field: name length, name, type,
        // epoch difference, value length, value; the key's field: no length, no value.
        let header = 1 + 1 + 1 + varint::len(at);
        assert_eq!(
            bytes.len(),
            header + (1 + 2 + 1 + 1) + (1 + 2 + 1 + 1 + 1 + 50) * 3
        );
        // The fixed-width layout spent 50 bytes more on this document (31% of its data).
        assert_eq!(fixed_width(&doc).len() - bytes.len(), 50);
        assert_eq!(OwnedDoc::decode_live(&bytes, &key, &[], "id").unwrap(), doc);
        // Stored under another key, the same fields keep their values (none is the key).
        let other = doc.encode(b"other");
        assert_eq!(other.len(), bytes.len() + 11);
        assert_eq!(
            OwnedDoc::decode_live(&other, b"other", &[], "id").unwrap(),
            doc
        );
        // Epochs before the base and far apart round trip.
        doc.set("e", &FieldValue::Int64(1), 3);
        doc.set("z", &FieldValue::Int64(2), u64::MAX);
        assert_eq!(decode_live_k(&doc.encode(K), &[], "id").unwrap(), doc);
    }

    /// Counts and lengths past a one-byte varint widen their slots; an empty section decodes.
    #[test]
    fn many_fields_and_long_values_round_trip() {
        let mut doc = OwnedDoc::new(70_000);
        for i in 0..300 {
            let value = vec![i as u8; i * 7];
            doc.set(
                &format!("f{i:03}"),
                &FieldValue::Bytes(value),
                epoch_of(i as u64),
            );
        }
        let bytes = doc.encode(K);
        assert_eq!(decode_live_k(&bytes, &[], "id").unwrap(), doc);
        let empty = OwnedDoc::new(1);
        assert_eq!(decode_live_k(&empty.encode(K), &[], "id").unwrap(), empty);
    }

    #[test]
    fn sections_of_the_fixed_width_layout_are_refused_by_name() {
        let mut doc = OwnedDoc::new(3);
        doc.set("id", &FieldValue::String("k".into()), epoch_of(4));
        let old = fixed_width(&doc);
        let e = decode_live_k(&old, &[], "id").unwrap_err();
        assert!(e.to_string().contains("bad header"), "{e}");
        assert!(select_k(&old, &[], "id").is_err());
    }

    /// Every prefix and every single-byte change of a section decodes or is refused: never a
    /// panic (a changed byte may decode: entries are checksummed where they are stored).
    #[test]
    fn damaged_sections_never_panic() {
        let mut doc = OwnedDoc::new(5);
        doc.set("id", &FieldValue::String("k".into()), epoch_of(9));
        doc.set("v", &FieldValue::Bytes(vec![3; 300]), epoch_of(10));
        let bytes = doc.encode(K);
        for cut in 0..bytes.len() {
            assert!(decode_live_k(&bytes[..cut], &[], "id").is_err(), "{cut}");
        }
        for i in 0..bytes.len() {
            for b in [0u8, 0x7F, 0x80, 0xFF] {
                let mut changed = bytes.clone();
                changed[i] = b;
                let _ = decode_entry_live_k(&changed, &[], "id");
                let _ = select_k(&changed, &[], "id").map(|v| v.map(|v| v.fields().count()));
            }
        }
    }

    /// A field with an expiry costs its flag bit and the expiry's varint (6 bytes until 2039,
    /// 7 after); fields without one cost what they did; the key keeps its expiry.
    #[test]
    fn an_expiry_costs_its_varint_and_round_trips() {
        let key = b"k";
        let at = epoch_of(5);
        let expiry = 1_800_000_000_000i64;
        let mut plain = OwnedDoc::new(0);
        plain.set("id", &FieldValue::String("k".into()), at);
        plain.set("v", &FieldValue::Int64(3), at);
        let mut timed = OwnedDoc::new(0);
        timed.set_key("id", &FieldValue::String("k".into()), at, Some(expiry));
        timed.set_timed("v", &FieldValue::Int64(3), at, Some(expiry - 5), None);
        let (p, t) = (plain.encode(key), timed.encode(key));
        assert_eq!(t.len() - p.len(), 2 * varint::len(varint::zigzag(expiry)));
        assert_eq!(varint::len(varint::zigzag(expiry)), 6);
        assert_eq!(OwnedDoc::decode_live(&t, key, &[], "id").unwrap(), timed);
        let view = DocView::parse(&t, key).unwrap();
        let v = view.find("v").unwrap().unwrap();
        assert_eq!(
            (v.expires_ms, v.value().unwrap()),
            (Some(expiry - 5), FieldValue::Int64(3))
        );
        assert!(v.is_live_at(expiry - 6) && !v.is_live_at(expiry - 5));
        assert_eq!(view.find("id").unwrap().unwrap().expires_ms, Some(expiry));
        // The key keeps the latest expiry set on it; a set without one makes it permanent.
        timed.set_key(
            "id",
            &FieldValue::String("k".into()),
            at,
            Some(expiry - 100),
        );
        assert_eq!(timed.fields["id"].expires_ms, Some(expiry));
        timed.set_key("id", &FieldValue::String("k".into()), at, None);
        assert_eq!(timed.fields["id"].expires_ms, None);
        timed.set_key("id", &FieldValue::String("k".into()), at, Some(expiry));
        assert_eq!(timed.fields["id"].expires_ms, None);
        // Every prefix of a section with expiries is refused, never a panic.
        for cut in 0..t.len() {
            assert!(
                OwnedDoc::decode_live(&t[..cut], key, &[], "id").is_err(),
                "{cut}"
            );
        }
    }

    /// An event time rides on its field (flag 0x20, after the expiry); the set that weighs it
    /// is made only when it is not older.
    #[test]
    fn event_times_round_trip_and_order_sets() {
        let key = b"k";
        let mut doc = OwnedDoc::new(1);
        doc.set("id", &FieldValue::String("k".into()), 1);
        assert!(doc.set_ordered("v", &FieldValue::Int64(2), 2, (Some(900), Some(20)), 0));
        assert!(!doc.set_ordered("v", &FieldValue::Int64(1), 3, (None, Some(19)), 0));
        // A write without an event time is made (commit order) and clears it.
        let mut plain = doc.clone();
        assert!(plain.set_ordered("v", &FieldValue::Int64(0), 3, (None, None), 0));
        assert_eq!(plain.fields["v"].event_us, None);
        assert!(doc.set_ordered("w", &FieldValue::Int64(7), 3, (None, Some(-3)), 0));
        let bytes = doc.encode(key);
        let back = OwnedDoc::decode_live(&bytes, key, &[], "id").unwrap();
        assert_eq!(back, doc);
        let view = DocView::parse(&bytes, key).unwrap();
        let v = view.find("v").unwrap().unwrap();
        assert_eq!(
            (v.value().unwrap(), v.expires_ms, v.event_us),
            (FieldValue::Int64(2), Some(900), Some(20))
        );
        assert_eq!(view.find("w").unwrap().unwrap().event_us, Some(-3));
        // Once the stored value expired (by the writing delta's time) it weighs nothing.
        assert!(doc.set_ordered("v", &FieldValue::Int64(1), 4, (None, Some(1)), 900));
        assert_eq!(doc.fields["v"].event_us, Some(1));
        for cut in 0..bytes.len() {
            assert!(
                OwnedDoc::decode_live(&bytes[..cut], key, &[], "id").is_err(),
                "{cut}"
            );
        }
    }

    /// A snapshot's companion fields become their fields' expiries, not fields.
    #[test]
    fn snapshot_companions_give_expiries() {
        let fields: Vec<(String, FieldValue)> = vec![
            ("_ikv_event_us:v".into(), FieldValue::Int64(5)),
            ("_ikv_expires_ms:v".into(), FieldValue::Int64(77)),
            ("_ikv_expires_ms:gone".into(), FieldValue::Int64(78)),
            ("id".into(), FieldValue::String("k".into())),
            ("v".into(), FieldValue::Int64(1)),
        ];
        let mut doc = OwnedDoc::new(0);
        doc.set_snapshot_fields(fields.iter().map(|(n, v)| (n.as_str(), v)), 9);
        assert_eq!(doc.fields.keys().collect::<Vec<_>>(), vec!["id", "v"]);
        assert_eq!(doc.fields["v"].expires_ms, Some(77));
        assert_eq!(doc.fields["v"].event_us, Some(5));
        assert_eq!(doc.fields["id"].expires_ms, None);
    }

    fn epoch_of(seq: u64) -> u64 {
        crate::keys::epoch(seq, 0)
    }
}
