//! ikv embedded reader: one local copy of a store per host (a memory-mapped read image and
//! overlay, with a fjall durable copy under a mount directory), bootstrapped from the newest
//! Parquet snapshots and kept fresh by polling the partition delta logs; any number of
//! processes read it. Reads are local point lookups. Layout and guarantees: `docs/READER.md`.

mod apply;
pub mod bootstrap;
pub mod doc;
pub mod drops;
pub mod image;
mod import;
pub mod keys;
pub mod local;
pub mod mount;
pub mod overlay;
mod owner;
mod priority;
mod reader;
pub mod snapshot_rows;
pub mod status;
pub mod sync;
pub mod view;

pub use reader::{Reader, ReaderOptions};
pub use status::PartitionStatus;
