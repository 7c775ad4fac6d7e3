//! The snapshot format, shared by the reader (which bootstraps from snapshots) and the
//! compactor (which writes them): the manifest that commits a snapshot, the Parquet row
//! layout, and the verified ranged reads of snapshot files. The layout is documented in
//! `docs/SNAPSHOTS.md` and the checksums in `docs/FORMAT.md`.
//!
//! Readers depend on this crate only; Parquet writing and the compactor's command line live
//! in `ikv-snapshot`.

pub mod manifest;
pub mod merge;
pub mod object_reader;
pub mod read;
pub mod rows;

pub use manifest::Manifest;
pub use merge::MergedRuns;
pub use read::SnapshotStream;
