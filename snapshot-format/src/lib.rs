//! The snapshot format, shared by the reader (which bootstraps from snapshots), the compactor
//! and the importer (which write it): the manifest that commits a snapshot, the Parquet row
//! layout, the verified ranged reads of snapshot files and the writer of those files. The layout is documented in
//! `docs/SNAPSHOTS.md` and the checksums in `docs/FORMAT.md`.
//!
//! Readers depend on this crate only; the compactor (`ikv-snapshot`) and the importer
//! (`ikv-import`) are peers above it.

pub mod layer;
pub mod manifest;
pub mod merge;
pub mod object_reader;
mod parquet_upload;
pub mod read;
pub mod rows;
pub mod sql;
pub mod write;

pub use layer::{LayerChange, Stack, StackDocs};
pub use manifest::Manifest;
pub use merge::MergedRuns;
pub use read::SnapshotStream;
