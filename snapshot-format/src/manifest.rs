//! The snapshot manifest: written last, with a conditional create, it commits a snapshot.
//!
//! `<store>/p<part>/snapshots/<seq>/manifest.json` lists the Parquet files (which live under
//! a per-run directory `<seq>/<run id>/`, so racing compactors never overwrite each other's
//! files), row counts, and for every column the field and type it holds.

use std::collections::{BTreeMap, BTreeSet};

use ikv_core::bucket::Path;
use ikv_core::bucket::SNAPSHOT_MANIFEST;
use ikv_core::bucket::{Created, create_if_absent};
use ikv_core::config::FORMAT_VERSION;
use ikv_core::{Error, FieldType, Result, Storage, StoreLayout};
use serde::{Deserialize, Serialize};

/// Name of the column holding each row's primary-key bytes (the sort key).
pub const KEY_COLUMN: &str = "_ikv_key";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub store_name: String,
    pub partition: u32,
    /// The snapshot holds the partition's state after applying deltas 1..=sequence.
    pub sequence: u64,
    /// The snapshot this one was built from (0 when built from the empty store).
    pub base_sequence: u64,
    pub primary_key_field: String,
    pub created_at_ms: u64,
    pub writer_id: String,
    pub row_count: u64,
    pub files: Vec<SnapshotFile>,
    pub key_column: String,
    pub columns: Vec<SnapshotColumn>,
    /// Set in an import's description (carried by its delta, never stored as a manifest
    /// object): the files live in `p<part>/imports/<id>/`, not in a snapshot directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<String>,
    /// Imports whose delta this snapshot or an earlier one folded and whose delta may still
    /// be in the log: retention removes an import's files once its delta is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<FoldedImport>,
    /// Empty for a full snapshot. For a layer (`layer.rs`), the snapshots it lies on, bottom
    /// first: a full snapshot, then the layers between it and this one. Its files hold only
    /// the changes after the last of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacked_on: Vec<u64>,
}

/// An import folded into a snapshot, by the sequence number of the delta that committed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldedImport {
    pub id: String,
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    /// Path relative to the snapshot directory (`<run id>/part-00000.parquet`).
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// CRC32C of each block of the file (absent in snapshots written before checksums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<ikv_core::checksum::BlockChecksums>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotColumn {
    /// Column name in the Parquet files.
    pub name: String,
    /// The document field it holds.
    pub field: String,
    /// The type of every value in it.
    #[serde(with = "field_type_name")]
    pub field_type: FieldType,
}

mod field_type_name {
    use ikv_core::FieldType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &FieldType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FieldType, D::Error> {
        let name = String::deserialize(d)?;
        FieldType::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown field type {name:?}")))
    }
}

/// Columns for a set of (field, type) pairs. A field written with one type gets one column
/// named after the field; a field written with several types gets one column per type, named
/// `field::type` (for example `age::int64`, `age::string`). A generated name that collides
/// with another column gets `#2`, `#3`, ... appended. Sorted by field, then type code, so the
/// result depends only on the set.
pub fn plan_columns(pairs: &BTreeSet<(String, FieldType)>) -> Vec<SnapshotColumn> {
    let mut types: BTreeMap<&str, Vec<FieldType>> = BTreeMap::new();
    for (field, t) in pairs {
        types.entry(field).or_default().push(*t);
    }
    // The key column's name, and a layer's own columns' (`layer.rs`), are never a field's.
    let mut used: BTreeSet<String> = [
        KEY_COLUMN,
        crate::layer::REPLACES_COLUMN,
        crate::layer::UNSET_COLUMN,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let mut plain: BTreeSet<&str> = BTreeSet::new();
    let mut columns = Vec::new();
    // Plain names first, so a field literally named "a::int64" keeps its name. A field whose
    // plain name is taken (the key column's) is named as a multi-typed one would be: no two
    // columns ever share a name.
    for (field, ts) in &types {
        if ts.len() == 1 && used.insert((*field).to_owned()) {
            plain.insert(field);
        }
    }
    for (field, ts) in &types {
        for t in ts {
            let name = if plain.contains(field) {
                (*field).to_owned()
            } else {
                let base = format!("{field}::{}", t.name());
                let mut name = base.clone();
                let mut n = 2;
                while used.contains(&name) {
                    name = format!("{base}#{n}");
                    n += 1;
                }
                used.insert(name.clone());
                name
            };
            columns.push(SnapshotColumn {
                name,
                field: (*field).to_owned(),
                field_type: *t,
            });
        }
    }
    columns
}

impl Manifest {
    /// Whether this is a layer: changes over the snapshots it is stacked on.
    pub fn is_layer(&self) -> bool {
        !self.stacked_on.is_empty()
    }

    pub fn new_version() -> u32 {
        FORMAT_VERSION
    }

    pub fn path(layout: &StoreLayout, partition: u32, seq: u64) -> Path {
        layout.snapshot_dir(partition, seq).join(SNAPSHOT_MANIFEST)
    }

    /// Full path of one of the manifest's files (an import's live in its import directory).
    pub fn file_path(&self, layout: &StoreLayout, file: &SnapshotFile) -> Path {
        let mut p = match &self.import_id {
            Some(id) => layout.import_dir(self.partition, id),
            None => layout.snapshot_dir(self.partition, self.sequence),
        };
        for part in file.path.split('/') {
            p = p.join(part);
        }
        p
    }

    pub async fn load(
        storage: &Storage,
        layout: &StoreLayout,
        partition: u32,
        seq: u64,
    ) -> Result<Option<Manifest>> {
        let path = Manifest::path(layout, partition, seq);
        let Some(bytes) = ikv_core::bucket::read(storage, &path).await? else {
            return Ok(None);
        };
        let manifest = Manifest::decode(&bytes, path.as_ref())?;
        if manifest.format_version != FORMAT_VERSION
            || manifest.import_id.is_some()
            || manifest.sequence != seq
            || manifest.partition != partition
            || manifest.store_name != layout.store_name()
        {
            return Err(Error::Corrupt {
                what: path.to_string(),
                reason: format!(
                    "manifest says version {}, store {:?}, partition {}, sequence {}",
                    manifest.format_version,
                    manifest.store_name,
                    manifest.partition,
                    manifest.sequence
                ),
            });
        }
        Ok(Some(manifest))
    }

    /// Verifies and parses a stored manifest (`what` names it in errors); its identity is
    /// checked by [`Manifest::load`].
    pub fn decode(bytes: &[u8], what: &str) -> Result<Manifest> {
        let json = ikv_core::checksum::open_json(bytes, what)?;
        let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
        // A stack lies below its top, bottom first.
        let ascending = manifest.stacked_on.windows(2).all(|w| w[0] < w[1]);
        if !ascending
            || manifest
                .stacked_on
                .last()
                .is_some_and(|s| *s >= manifest.sequence)
        {
            return Err(Error::Corrupt {
                what: what.to_owned(),
                reason: format!(
                    "stacked on {:?}, not ascending below sequence {}",
                    manifest.stacked_on, manifest.sequence
                ),
            });
        }
        for file in &manifest.files {
            if let Some(sums) = &file.checksums {
                sums.validate(what)?;
            }
            // A file path names a file below the manifest's directory, nothing else.
            if file
                .path
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
            {
                return Err(Error::Corrupt {
                    what: what.to_owned(),
                    reason: format!("file path {:?} leaves its directory", file.path),
                });
            }
        }
        Ok(manifest)
    }

    /// The description an import's delta carries (compact JSON; the delta's checksum covers it).
    pub fn encode_import_spec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The description of import `id` carried by delta `seq` of `partition`, checked to be
    /// an import of this store and partition whose files all have checksums.
    pub fn decode_import_spec(
        spec: &[u8],
        layout: &StoreLayout,
        partition: u32,
        id: &str,
        what: &str,
    ) -> Result<Manifest> {
        let manifest = Manifest::decode(spec, what)?;
        let corrupt = |reason: String| Error::Corrupt {
            what: what.to_owned(),
            reason,
        };
        if manifest.format_version != FORMAT_VERSION
            || manifest.import_id.as_deref() != Some(id)
            || manifest.partition != partition
            || manifest.store_name != layout.store_name()
        {
            return Err(corrupt(format!(
                "the import description says version {}, store {:?}, partition {}, import {:?}; the delta names import {id:?} of store {:?}, partition {partition}",
                manifest.format_version,
                manifest.store_name,
                manifest.partition,
                manifest.import_id,
                layout.store_name()
            )));
        }
        if manifest.files.iter().any(|f| f.checksums.is_none()) {
            return Err(corrupt("an imported file has no checksums".into()));
        }
        Ok(manifest)
    }

    /// The newest committed snapshot of a partition, if any.
    pub async fn load_newest(
        storage: &Storage,
        layout: &StoreLayout,
        partition: u32,
    ) -> Result<Option<Manifest>> {
        let seqs = ikv_core::bucket::list_snapshot_seqs(storage, layout, partition).await?;
        match seqs.last() {
            Some(seq) => Manifest::load(storage, layout, partition, *seq).await,
            None => Ok(None),
        }
    }

    /// Commits the snapshot. Returns false when another compactor committed this sequence
    /// number first (its snapshot stands; ours is garbage for retention to collect).
    pub async fn commit(&self, storage: &Storage, layout: &StoreLayout) -> Result<bool> {
        let path = Manifest::path(layout, self.partition, self.sequence);
        let body =
            ikv_core::checksum::seal_json(serde_json::to_vec_pretty(self).unwrap_or_default());
        match create_if_absent(storage, &path, bytes::Bytes::from(body)).await? {
            Created::Created => Ok(true),
            Created::Exists => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, FieldType)]) -> BTreeSet<(String, FieldType)> {
        pairs.iter().map(|(f, t)| ((*f).to_owned(), *t)).collect()
    }

    #[test]
    fn one_type_one_column_several_types_suffixed() {
        let cols = plan_columns(&set(&[
            ("age", FieldType::Int64),
            ("age", FieldType::String),
            ("name", FieldType::String),
        ]));
        let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["age::string", "age::int64", "name"]);
    }

    #[test]
    fn generated_names_never_collide() {
        let cols = plan_columns(&set(&[
            ("a", FieldType::Int64),
            ("a", FieldType::Bool),
            ("a::int64", FieldType::String),
        ]));
        let names: BTreeSet<_> = cols.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains("a::int64"), "the real field keeps its name");
        assert!(names.contains("a::int64#2"));
    }

    #[test]
    fn a_field_named_like_the_key_column_gets_another_column_name() {
        let cols = plan_columns(&set(&[
            (KEY_COLUMN, FieldType::String),
            ("_ikv_key::string", FieldType::Int64),
        ]));
        let names: BTreeSet<_> = cols.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names.len(), 2);
        assert!(!names.contains(KEY_COLUMN), "{names:?}");
        assert!(
            cols.iter().any(|c| c.field == KEY_COLUMN),
            "the field is still there, under another column name"
        );
    }
}
