//! Seeded random workloads of all six operations, for model-equivalence tests.
//!
//! Keys mix ASCII strings, strings with zero bytes (which the reader's local key escaping
//! exists for), non-ASCII strings and bytes keys holding 0x00 and 0xFF. Field names share
//! prefixes so prefix drops bite, and include the primary key (`id`) and the partitioning key
//! (`region`) so that deletes and drops naming them are exercised. With a partitioning key,
//! each document mostly stays in its home region but sometimes is written under another, so
//! documents of one primary key live in several partitions.

use ikv_core::{Document, FieldValue, Operation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Field names a workload writes, deletes and drops.
pub const FIELDS: [&str; 8] = ["a", "b", "city", "tmp_x", "tmp_y", "n", "t", "region"];

/// Partitioning-key values.
pub const REGIONS: [&str; 6] = ["eu", "us", "ap", "sa", "af", "me"];

/// The primary-key field of every workload.
pub const PRIMARY_KEY: &str = "id";
/// The partitioning-key field of workloads on partitioned stores.
pub const PARTITIONING_KEY: &str = "region";

/// The `i`-th key of a workload's key universe.
pub fn key_value(i: usize) -> FieldValue {
    match i % 4 {
        0 => FieldValue::String(format!("k{i:04}")),
        1 => FieldValue::String(format!("k\0{i}\0")),
        2 => FieldValue::String(format!("ключ-{i}-é")),
        _ => FieldValue::Bytes(vec![0, 0xFF, (i >> 8) as u8, i as u8, 0, 0xFE]),
    }
}

fn key_bytes(v: &FieldValue) -> Vec<u8> {
    match v {
        FieldValue::String(s) => s.as_bytes().to_vec(),
        FieldValue::Bytes(b) => b.clone(),
        _ => unreachable!("keys are strings or bytes"),
    }
}

pub struct Workload {
    rng: StdRng,
    pub keys: usize,
    /// Whether documents carry a partitioning key (`region`).
    pub partitioned: bool,
    /// Only ASCII string keys (for checks in tools that want text keys).
    pub ascii_keys: bool,
    /// Upserts give times to live (0, never, among them) half of the time; the others
    /// take the store's default.
    pub ttls: bool,
    /// Upserts carry event times most of the time, drawn around a clock that moves with the
    /// workload, so that writes commit out of event-time order (ties included).
    pub event_times: bool,
    event_clock: i64,
}

impl Workload {
    pub fn new(seed: u64, keys: usize) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            keys,
            partitioned: false,
            ascii_keys: false,
            ttls: false,
            event_times: false,
            event_clock: 1_000_000,
        }
    }

    /// The same workload with event times on most upserts.
    pub fn with_event_times(mut self) -> Workload {
        self.event_times = true;
        self
    }

    /// The same workload with times to live on its upserts.
    pub fn with_ttls(mut self) -> Workload {
        self.ttls = true;
        self
    }

    /// The same workload with ASCII string keys only.
    pub fn with_ascii_keys(mut self) -> Workload {
        self.ascii_keys = true;
        self
    }

    fn key_of(&self, i: usize) -> FieldValue {
        if self.ascii_keys {
            FieldValue::String(format!("k{i:04}"))
        } else {
            key_value(i)
        }
    }

    /// A workload for a store whose partitioning key is [`PARTITIONING_KEY`].
    pub fn partitioned(seed: u64, keys: usize) -> Workload {
        Workload {
            partitioned: true,
            ..Workload::new(seed, keys)
        }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Every primary key the workload may write, as bytes.
    pub fn all_keys(&self) -> Vec<Vec<u8>> {
        (0..self.keys).map(|i| key_bytes(&self.key_of(i))).collect()
    }

    /// A value of a random type: fields change type between writes.
    fn value(&mut self) -> FieldValue {
        match self.rng.random_range(0..5) {
            0 => FieldValue::String(format!("s{}", self.rng.random_range(0..1000))),
            1 => FieldValue::Bytes(
                (0..self.rng.random_range(0..6))
                    .map(|_| self.rng.random())
                    .collect(),
            ),
            2 => FieldValue::Int64(self.rng.random_range(-1000..1000)),
            3 => FieldValue::Float64(self.rng.random_range(-1.0..1.0)),
            _ => FieldValue::Bool(self.rng.random()),
        }
    }

    fn field(&mut self) -> String {
        FIELDS[self.rng.random_range(0..FIELDS.len())].to_owned()
    }

    /// A document naming a key (and, on partitioned stores, a region: its home one mostly).
    fn doc_with_key(&mut self) -> Document {
        let i = self.rng.random_range(0..self.keys);
        let mut doc = Document::new().with(PRIMARY_KEY, self.key_of(i));
        if self.partitioned {
            let region = if self.rng.random_bool(0.8) {
                REGIONS[i % REGIONS.len()]
            } else {
                REGIONS[self.rng.random_range(0..REGIONS.len())]
            };
            doc.put(PARTITIONING_KEY, FieldValue::String(region.into()));
        }
        doc
    }

    /// One operation; upserts dominate, store-wide drops are rare, drop_all rarer.
    pub fn operation(&mut self) -> Operation {
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..=649 => {
                let mut doc = self.doc_with_key();
                for _ in 0..self.rng.random_range(1..4) {
                    let f = self.field();
                    if f == PARTITIONING_KEY && self.partitioned {
                        continue; // the routing value stays the one chosen above
                    }
                    let v = self.value();
                    doc.put(f, v);
                }
                let ttl_seconds = if self.ttls && self.rng.random_bool(0.5) {
                    const TTLS: [u64; 7] = [0, 1, 5, 30, 120, 900, 1200];
                    Some(TTLS[self.rng.random_range(0..TTLS.len())])
                } else {
                    None
                };
                let event_time_us = if self.event_times && self.rng.random_bool(0.8) {
                    // Mostly forward, often a little behind, sometimes far behind (a backfill
                    // of what a pass already folded), sometimes the same instant.
                    self.event_clock += self.rng.random_range(0..3);
                    let behind = if self.rng.random_bool(0.2) {
                        self.rng.random_range(0..400)
                    } else {
                        self.rng.random_range(0..6)
                    };
                    Some(self.event_clock - behind)
                } else {
                    None
                };
                if ttl_seconds.is_some() || event_time_us.is_some() {
                    return Operation::UpsertFieldsWith {
                        document: doc,
                        ttl_seconds,
                        event_time_us,
                    };
                }
                Operation::UpsertFields(doc)
            }
            650..=799 => {
                let mut names: Vec<String> = (0..self.rng.random_range(1..3))
                    .map(|_| self.field())
                    .collect();
                if self.rng.random_bool(0.1) {
                    names.push(PRIMARY_KEY.into()); // silently kept
                }
                Operation::DeleteFields {
                    document: self.doc_with_key(),
                    field_names: names,
                }
            }
            800..=929 => Operation::DeleteDocument(self.doc_with_key()),
            930..=964 => {
                let mut names = vec![self.field()];
                if self.rng.random_bool(0.2) {
                    names.push(PRIMARY_KEY.into()); // silently kept
                }
                Operation::DropFieldsByName(names)
            }
            965..=994 => {
                // "i" matches the primary key `id`, which the drop keeps.
                let prefix = ["tmp_", "c", "a", "i", "re"][self.rng.random_range(0..5)].to_owned();
                Operation::DropFieldsByNamePrefix(vec![prefix])
            }
            _ => Operation::DropAllFields,
        }
    }

    pub fn batch(&mut self, max: usize) -> Vec<Operation> {
        let n = self.rng.random_range(1..=max);
        (0..n).map(|_| self.operation()).collect()
    }

    /// A batch without store-wide drops: per-key changes only, what a snapshot layer holds (a
    /// round with a drop writes a full snapshot).
    pub fn keyed_batch(&mut self, max: usize) -> Vec<Operation> {
        self.batch(max)
            .into_iter()
            .filter(|op| {
                !matches!(
                    op,
                    Operation::DropFieldsByName(_)
                        | Operation::DropFieldsByNamePrefix(_)
                        | Operation::DropAllFields
                )
            })
            .collect()
    }
}
