//! Seeded random workloads of all six operations, for model-equivalence tests.

use ikv_core::{Document, FieldValue, Operation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Field names, with shared prefixes so prefix drops have something to bite.
pub const FIELDS: [&str; 7] = ["a", "b", "city", "tmp_x", "tmp_y", "n", "t"];

pub struct Workload {
    rng: StdRng,
    pub primary_key: String,
    pub keys: usize,
}

impl Workload {
    pub fn new(seed: u64, primary_key: &str, keys: usize) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            primary_key: primary_key.to_owned(),
            keys,
        }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn key(&mut self) -> String {
        format!("k{:04}", self.rng.random_range(0..self.keys))
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

    fn doc_with_key(&mut self) -> Document {
        let key = self.key();
        Document::new().with(self.primary_key.clone(), FieldValue::String(key))
    }

    /// One operation; upserts dominate, store-wide drops are rare, drop_all rarer.
    pub fn operation(&mut self) -> Operation {
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..=649 => {
                let mut doc = self.doc_with_key();
                for _ in 0..self.rng.random_range(1..4) {
                    let (f, v) = (self.field(), self.value());
                    doc.put(f, v);
                }
                Operation::UpsertFields(doc)
            }
            650..=799 => {
                let names = (0..self.rng.random_range(1..3))
                    .map(|_| self.field())
                    .collect();
                Operation::DeleteFields {
                    document: self.doc_with_key(),
                    field_names: names,
                }
            }
            800..=929 => Operation::DeleteDocument(self.doc_with_key()),
            930..=964 => {
                let mut names = vec![self.field()];
                if self.rng.random_bool(0.2) {
                    names.push(self.primary_key.clone()); // silently ignored
                }
                Operation::DropFieldsByName(names)
            }
            965..=994 => {
                let prefix = ["tmp_", "c", "a", "k"][self.rng.random_range(0..4)].to_owned();
                Operation::DropFieldsByNamePrefix(vec![prefix])
            }
            _ => Operation::DropAllFields,
        }
    }

    pub fn batch(&mut self, max: usize) -> Vec<Operation> {
        let n = self.rng.random_range(1..=max);
        (0..n).map(|_| self.operation()).collect()
    }
}
