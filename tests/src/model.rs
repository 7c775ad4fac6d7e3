//! The reference model of a store, independent of the code under test: it takes the
//! API-level operations a test generated (never the deltas the writer produced), routes them
//! to partitions itself, and applies each call in the order the store committed it (the
//! per-partition sequence numbers the call's receipt returns). A writer that lost, duplicated,
//! reordered, misrouted or mis-lowered an operation makes the state the reader or the
//! snapshot shows differ from this one.
//!
//! Semantics (docs/API.md, docs/FORMAT.md):
//! - `upsert_fields` unions the document's fields (the keys included) into the document of its
//!   primary key in its partition; later values overwrite, and may change a field's type.
//! - `delete_fields` removes the named fields, never the primary key; a missing document stays
//!   missing.
//! - `delete_document` removes the document from its partition.
//! - `drop_fields_by_name` / `_prefix` remove the fields from every document of every partition,
//!   never the primary key (even when its name matches).
//! - `drop_all_fields` removes every document.
//! - A partition is `fnv1a_64(partitioning key, or primary key) mod partitions`.
//! - A reader answers a key from the lowest-numbered mounted partition holding a document of it.
//! - Times to live (rfcs/0013): a write's values expire `ttl` after the time the call was
//!   recorded at (the writer's clock; `ttl` 0 is never, none is the store's default), and are
//!   absent from every answer from then on. The primary-key field expires with the latest
//!   expiry it was written with (a write without one makes it permanent): a document outlives
//!   its fields and is gone once every write into it expired.
//! - Event times (rfcs/0013): a write may carry one; for each field (not the primary key) a
//!   write with one replaces the stored value unless that value's event time is newer (equal
//!   ones by commit order); a write without one replaces it as writes always did (and leaves
//!   the field without an event time). A stored value that had expired when the write was
//!   made weighs nothing. Deletes and drops remove a field whatever its event time.

use std::collections::BTreeMap;

use ikv_core::{FieldValue, Operation};

/// A document: field name → value.
pub type Doc = BTreeMap<String, FieldValue>;
/// One partition's documents by primary-key bytes.
pub type PartitionDocs = BTreeMap<Vec<u8>, Doc>;

/// A call's commit in one partition, as its receipt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Committed {
    pub partition: u32,
    pub sequence: u64,
}

#[derive(Debug, Clone)]
struct LoggedCall {
    sequence: u64,
    call: u64,
    ops: Vec<Operation>,
    /// The writer's clock when the call was made (ms since the Unix epoch).
    at_ms: i64,
}

/// A value as the model keeps it: with its expiry (`None`: never) and event time.
#[derive(Debug, Clone)]
struct Timed {
    value: FieldValue,
    expires_ms: Option<i64>,
    event_us: Option<i64>,
}

/// A document as the model keeps it.
type TimedDoc = BTreeMap<String, Timed>;

/// The store's expected state, from the calls recorded so far.
#[derive(Debug, Clone)]
pub struct Model {
    primary_key: String,
    partitioning_key: Option<String>,
    partitions: u32,
    /// Per partition, the calls that committed there with the operations that concern it.
    logs: Vec<Vec<LoggedCall>>,
    calls: u64,
    /// The store's default time to live (seconds).
    default_ttl: Option<u64>,
    /// The time answers are judged at (ms since the Unix epoch); nothing expires before it.
    now_ms: i64,
}

/// FNV-1a 64, written here again (not imported) so that a change to the store's own hashing
/// shows up as a difference; pinned by the vectors of docs/FORMAT.md in the tests below.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn key_bytes(value: &FieldValue) -> Vec<u8> {
    match value {
        FieldValue::String(s) => s.as_bytes().to_vec(),
        FieldValue::Bytes(b) => b.clone(),
        other => panic!("the model only takes string or bytes keys, not {other:?}"),
    }
}

impl Model {
    pub fn new(primary_key: &str, partitioning_key: Option<&str>, partitions: u32) -> Model {
        assert!(partitions > 0);
        Model {
            primary_key: primary_key.to_owned(),
            partitioning_key: partitioning_key.map(str::to_owned),
            partitions,
            logs: vec![Vec::new(); partitions as usize],
            calls: 0,
            default_ttl: None,
            now_ms: i64::MIN,
        }
    }

    /// The model of a store whose writes without a time to live get `ttl_seconds`.
    pub fn with_default_ttl(mut self, ttl_seconds: Option<u64>) -> Model {
        self.default_ttl = ttl_seconds;
        self
    }

    /// Judges every later answer at `now_ms` (the readers' clock).
    pub fn judge_at(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition a document-level operation on `doc` goes to.
    pub fn partition_of(&self, doc: &ikv_core::Document) -> u32 {
        let field = self.partitioning_key.as_ref().unwrap_or(&self.primary_key);
        let value = doc
            .get(field)
            .expect("the document carries its routing key");
        (fnv1a_64(&key_bytes(value)) % u64::from(self.partitions)) as u32
    }

    /// Partitions `op` changes; an operation with nothing to do (deleting or dropping only the
    /// primary key) changes none, so the writer commits nothing for it.
    fn targets(&self, op: &Operation) -> Vec<u32> {
        let all = || (0..self.partitions).collect();
        let not_pk = |names: &[String]| names.iter().any(|n| *n != self.primary_key);
        match op {
            Operation::UpsertFields(doc)
            | Operation::UpsertFieldsWith { document: doc, .. }
            | Operation::DeleteDocument(doc) => {
                vec![self.partition_of(doc)]
            }
            Operation::DeleteFields {
                document,
                field_names,
            } => {
                if not_pk(field_names) {
                    vec![self.partition_of(document)]
                } else {
                    Vec::new()
                }
            }
            Operation::DropFieldsByName(names) => {
                if not_pk(names) {
                    all()
                } else {
                    Vec::new()
                }
            }
            Operation::DropFieldsByNamePrefix(_) | Operation::DropAllFields => all(),
        }
    }

    /// Records one successful call with its receipt. Panics when the receipt does not commit
    /// exactly the partitions the operations touch, which is itself a writer bug.
    pub fn record(&mut self, ops: &[Operation], receipt: &[Committed]) {
        self.record_at(ops, receipt, 0);
    }

    /// [`Model::record`] of a call the writer made when its clock read `at_ms`.
    pub fn record_at(&mut self, ops: &[Operation], receipt: &[Committed], at_ms: i64) {
        let call = self.calls;
        self.calls += 1;
        let mut per_partition: BTreeMap<u32, Vec<Operation>> = BTreeMap::new();
        for op in ops {
            for p in self.targets(op) {
                per_partition.entry(p).or_default().push(op.clone());
            }
        }
        let mut committed: Vec<u32> = receipt.iter().map(|c| c.partition).collect();
        committed.sort_unstable();
        let expected: Vec<u32> = per_partition.keys().copied().collect();
        assert_eq!(
            committed, expected,
            "call {call}: the receipt commits partitions {committed:?}, the operations touch {expected:?}"
        );
        for c in receipt {
            let ops = per_partition.remove(&c.partition).unwrap_or_default();
            self.logs[c.partition as usize].push(LoggedCall {
                sequence: c.sequence,
                call,
                ops,
                at_ms,
            });
        }
    }

    /// Highest sequence number recorded for `partition` (0 when none).
    pub fn tip(&self, partition: u32) -> u64 {
        self.logs[partition as usize]
            .iter()
            .map(|c| c.sequence)
            .max()
            .unwrap_or(0)
    }

    /// Documents of `partition` once every call committed at or below `upto` is applied, in
    /// commit order (sequence number, then call order within a group-committed delta).
    pub fn partition_at(&self, partition: u32, upto: u64) -> PartitionDocs {
        let mut calls: Vec<&LoggedCall> = self.logs[partition as usize]
            .iter()
            .filter(|c| c.sequence <= upto)
            .collect();
        calls.sort_by_key(|c| (c.sequence, c.call));
        let mut docs: BTreeMap<Vec<u8>, TimedDoc> = BTreeMap::new();
        for c in calls {
            for op in &c.ops {
                self.apply(&mut docs, op, c.at_ms);
            }
        }
        let live = |e: &Option<i64>| e.is_none_or(|e| self.now_ms < e);
        docs.into_iter()
            .filter(|(_, doc)| {
                doc.get(&self.primary_key)
                    .is_some_and(|t| live(&t.expires_ms))
            })
            .map(|(key, doc)| {
                let doc = doc
                    .into_iter()
                    .filter(|(_, t)| live(&t.expires_ms))
                    .map(|(name, t)| (name, t.value))
                    .collect();
                (key, doc)
            })
            .collect()
    }

    /// Documents of `partition` after every recorded call.
    pub fn partition(&self, partition: u32) -> PartitionDocs {
        self.partition_at(partition, u64::MAX)
    }

    /// Every partition's documents after every recorded call.
    pub fn state(&self) -> Vec<PartitionDocs> {
        (0..self.partitions).map(|p| self.partition(p)).collect()
    }

    /// What a reader mounting `mounted` answers for `key` in `state`: the document of the
    /// lowest-numbered mounted partition holding one.
    pub fn answer<'s>(state: &'s [PartitionDocs], mounted: &[u32], key: &[u8]) -> Option<&'s Doc> {
        let mut mounted = mounted.to_vec();
        mounted.sort_unstable();
        mounted.into_iter().find_map(|p| state[p as usize].get(key))
    }

    /// Applies one operation already routed to this partition.
    fn apply(&self, docs: &mut BTreeMap<Vec<u8>, TimedDoc>, op: &Operation, at_ms: i64) {
        let pk = self.primary_key.as_str();
        let key_of = |doc: &ikv_core::Document| key_bytes(doc.get(pk).expect("a primary key"));
        match op {
            Operation::UpsertFields(doc) | Operation::UpsertFieldsWith { document: doc, .. } => {
                let (ttl, event_us) = match op {
                    Operation::UpsertFieldsWith {
                        ttl_seconds,
                        event_time_us,
                        ..
                    } => (
                        match ttl_seconds {
                            None => self.default_ttl,
                            Some(0) => None,
                            Some(t) => Some(*t),
                        },
                        *event_time_us,
                    ),
                    _ => (self.default_ttl, None),
                };
                let expires = ttl.map(|t| at_ms + t as i64 * 1000);
                let stored = docs.entry(key_of(doc)).or_default();
                for (name, value) in doc.fields() {
                    let before = stored.get(name);
                    if name == pk {
                        // The key keeps the latest expiry set on it; it has no event time.
                        let expires_ms = match before {
                            Some(b) => b.expires_ms.zip(expires).map(|(a, b)| a.max(b)),
                            None => expires,
                        };
                        stored.insert(
                            name.to_owned(),
                            Timed {
                                value: value.clone(),
                                expires_ms,
                                event_us: None,
                            },
                        );
                        continue;
                    }
                    // What the write weighs against: the stored value, unless it had expired.
                    let weighs = before.filter(|b| b.expires_ms.is_none_or(|e| e > at_ms));
                    let wins = match weighs.map(|b| b.event_us) {
                        None | Some(None) => true,
                        Some(Some(old)) => event_us.is_none_or(|new| new >= old),
                    };
                    if wins {
                        stored.insert(
                            name.to_owned(),
                            Timed {
                                value: value.clone(),
                                expires_ms: expires,
                                event_us,
                            },
                        );
                    }
                }
            }
            Operation::DeleteFields {
                document,
                field_names,
            } => {
                if let Some(stored) = docs.get_mut(&key_of(document)) {
                    for name in field_names.iter().filter(|n| *n != pk) {
                        stored.remove(name);
                    }
                }
            }
            Operation::DeleteDocument(doc) => {
                docs.remove(&key_of(doc));
            }
            Operation::DropFieldsByName(names) => {
                for stored in docs.values_mut() {
                    for name in names.iter().filter(|n| *n != pk) {
                        stored.remove(name);
                    }
                }
            }
            Operation::DropFieldsByNamePrefix(prefixes) => {
                for stored in docs.values_mut() {
                    stored.retain(|name, _| {
                        name == pk || !prefixes.iter().any(|p| name.starts_with(p.as_str()))
                    });
                }
            }
            Operation::DropAllFields => docs.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikv_core::Document;

    fn s(v: &str) -> FieldValue {
        FieldValue::String(v.into())
    }

    fn doc(key: &str, fields: &[(&str, FieldValue)]) -> Document {
        let mut d = Document::new().with("id", s(key));
        for (n, v) in fields {
            d.put(n.to_string(), v.clone());
        }
        d
    }

    /// Records `ops` as one call committed at the next sequence number of each partition it
    /// touches (what a single sequential writer gets).
    fn commit(model: &mut Model, ops: Vec<Operation>) {
        let mut targets: Vec<u32> = ops.iter().flat_map(|o| model.targets(o)).collect();
        targets.sort_unstable();
        targets.dedup();
        let receipt: Vec<Committed> = targets
            .into_iter()
            .map(|p| Committed {
                partition: p,
                sequence: model.tip(p) + 1,
            })
            .collect();
        model.record(&ops, &receipt);
    }

    fn one(model: &Model) -> PartitionDocs {
        model.partition(0)
    }

    #[test]
    fn fnv1a_matches_the_pinned_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(fnv1a_64(b"Alice"), 0x123909cb9f15d167);
        assert_eq!(fnv1a_64(b"Alice") % 4, 3);
        assert_eq!(fnv1a_64(b"Bob") % 16, 4);
    }

    #[test]
    fn upsert_unions_and_overwrites_and_changes_types() {
        let mut m = Model::new("id", None, 1);
        commit(
            &mut m,
            vec![Operation::UpsertFields(doc("a", &[("x", s("1"))]))],
        );
        commit(
            &mut m,
            vec![Operation::UpsertFields(doc(
                "a",
                &[("x", FieldValue::Int64(2)), ("y", FieldValue::Bool(true))],
            ))],
        );
        let a = &one(&m)[b"a".as_slice()];
        assert_eq!(a["x"], FieldValue::Int64(2));
        assert_eq!(a["y"], FieldValue::Bool(true));
        assert_eq!(a["id"], s("a"), "the key is a field of its document");
    }

    #[test]
    fn delete_fields_never_removes_the_primary_key_and_ignores_missing_documents() {
        let mut m = Model::new("id", None, 1);
        commit(
            &mut m,
            vec![Operation::UpsertFields(doc(
                "a",
                &[("x", s("1")), ("y", s("2"))],
            ))],
        );
        commit(
            &mut m,
            vec![
                Operation::DeleteFields {
                    document: doc("a", &[]),
                    field_names: vec!["x".into(), "id".into()],
                },
                Operation::DeleteFields {
                    document: doc("missing", &[]),
                    field_names: vec!["x".into()],
                },
            ],
        );
        let state = one(&m);
        assert_eq!(state.len(), 1, "deleting fields creates no document");
        assert_eq!(
            state[b"a".as_slice()].keys().collect::<Vec<_>>(),
            vec!["id", "y"]
        );
    }

    #[test]
    fn calls_with_nothing_to_do_commit_nothing() {
        let m = Model::new("id", None, 3);
        let only_pk = Operation::DeleteFields {
            document: doc("a", &[]),
            field_names: vec!["id".into()],
        };
        assert!(m.targets(&only_pk).is_empty());
        assert!(
            m.targets(&Operation::DropFieldsByName(vec!["id".into()]))
                .is_empty()
        );
        assert_eq!(m.targets(&Operation::DropAllFields), vec![0, 1, 2]);
        assert_eq!(
            m.targets(&Operation::DropFieldsByNamePrefix(vec!["i".into()])),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn delete_document_and_drops() {
        let mut m = Model::new("id", None, 1);
        commit(
            &mut m,
            vec![
                Operation::UpsertFields(doc("a", &[("tmp_x", s("1")), ("city", s("P"))])),
                Operation::UpsertFields(doc("b", &[("tmp_y", s("1")), ("n", s("2"))])),
                Operation::UpsertFields(doc("c", &[("n", s("3"))])),
                Operation::DeleteDocument(doc("c", &[])),
            ],
        );
        assert_eq!(one(&m).len(), 2);
        commit(
            &mut m,
            vec![Operation::DropFieldsByNamePrefix(vec![
                "tmp_".into(),
                "i".into(),
            ])],
        );
        let state = one(&m);
        assert_eq!(
            state[b"a".as_slice()].keys().collect::<Vec<_>>(),
            vec!["city", "id"]
        );
        assert_eq!(
            state[b"b".as_slice()].keys().collect::<Vec<_>>(),
            vec!["id", "n"],
            "a prefix matching the primary key keeps it"
        );
        commit(
            &mut m,
            vec![Operation::DropFieldsByName(vec!["n".into(), "id".into()])],
        );
        assert_eq!(
            one(&m)[b"b".as_slice()].keys().collect::<Vec<_>>(),
            vec!["id"]
        );
        commit(&mut m, vec![Operation::DropAllFields]);
        assert!(one(&m).is_empty());
    }

    #[test]
    fn calls_apply_in_commit_order_not_call_order() {
        let mut m = Model::new("id", None, 1);
        let first = vec![Operation::UpsertFields(doc("a", &[("x", s("first"))]))];
        let second = vec![Operation::UpsertFields(doc("a", &[("x", s("second"))]))];
        // The second call committed first (concurrent callers).
        m.record(
            &second,
            &[Committed {
                partition: 0,
                sequence: 1,
            }],
        );
        m.record(
            &first,
            &[Committed {
                partition: 0,
                sequence: 2,
            }],
        );
        assert_eq!(one(&m)[b"a".as_slice()]["x"], s("first"));
        assert_eq!(m.partition_at(0, 1)[b"a".as_slice()]["x"], s("second"));
        // Two calls in one group-committed delta apply in call order.
        m.record(
            &second,
            &[Committed {
                partition: 0,
                sequence: 3,
            }],
        );
        m.record(
            &first,
            &[Committed {
                partition: 0,
                sequence: 3,
            }],
        );
        assert_eq!(one(&m)[b"a".as_slice()]["x"], s("first"));
    }

    #[test]
    #[should_panic(expected = "the receipt commits partitions")]
    fn a_receipt_missing_a_partition_is_a_writer_bug() {
        let mut m = Model::new("id", None, 4);
        m.record(
            &[Operation::DropAllFields],
            &[Committed {
                partition: 0,
                sequence: 1,
            }],
        );
    }

    #[test]
    fn a_partitioning_key_routes_and_keeps_one_document_per_partition() {
        let mut m = Model::new("id", Some("region"), 4);
        let region_in = |p: u32| {
            (0..)
                .map(|i| format!("r{i}"))
                .find(|r| fnv1a_64(r.as_bytes()) % 4 == u64::from(p))
                .unwrap()
        };
        let (p, q) = (1, 3);
        let (rp, rq) = (region_in(p), region_in(q));
        let at = |r: &str, f: &str, v: &str| {
            Operation::UpsertFields(doc("A", &[("region", s(r)), (f, s(v))]))
        };
        commit(&mut m, vec![at(&rp, "e", "old")]);
        commit(&mut m, vec![at(&rq, "u", "q")]);
        commit(&mut m, vec![Operation::DropFieldsByName(vec!["e".into()])]);
        commit(&mut m, vec![at(&rp, "e", "NEW")]);
        let state = m.state();
        assert_eq!(state[p as usize][b"A".as_slice()]["e"], s("NEW"));
        assert!(!state[q as usize][b"A".as_slice()].contains_key("e"));
        let all: Vec<u32> = (0..4).collect();
        let answer = Model::answer(&state, &all, b"A").unwrap();
        assert_eq!(answer["e"], s("NEW"), "the lowest partition answers");
        assert!(
            !answer.contains_key("u"),
            "fields are not mixed across partitions"
        );
        assert_eq!(Model::answer(&state, &[q], b"A").unwrap()["u"], s("q"));
        // Deleting under one partitioning value leaves the other partition's document.
        commit(
            &mut m,
            vec![Operation::DeleteDocument(doc("A", &[("region", s(&rp))]))],
        );
        let state = m.state();
        assert_eq!(Model::answer(&state, &all, b"A").unwrap()["u"], s("q"));
    }
}
