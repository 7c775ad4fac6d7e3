//! ikv embedded reader: a local copy of a store (fjall under a mount directory), bootstrapped
//! from the newest Parquet snapshots and kept fresh by polling the partition delta logs.
//! Reads are local point lookups. Layout and guarantees: `docs/READER.md`.

pub mod bootstrap;
pub mod doc;
pub mod drops;
pub mod keys;
pub mod local;
mod priority;
mod reader;
pub mod snapshot_rows;
pub mod status;
pub mod sync;
pub mod view;

pub use reader::{Reader, ReaderOptions};
pub use status::PartitionStatus;
