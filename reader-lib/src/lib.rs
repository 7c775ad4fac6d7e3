//! ikv embedded reader: one local copy of a store per host (a memory-mapped read image, the
//! only home of values, and its overlay, with fjall keeping the changes since the image),
//! bootstrapped from the newest Parquet snapshots and kept fresh by polling the partition
//! delta logs; any number of processes read it. Reads are local point lookups. Layout and
//! guarantees: `docs/READER.md`.

mod apply;
mod bootstrap;
mod cadence;
mod counters;
mod doc;
mod drops;
mod durable;
mod image;
mod import;
mod keys;
mod local;
mod metrics;
mod mount;
mod options;
mod overlay;
mod owner;
mod pin;
mod poller;
mod priority;
mod push;
mod read_time;
mod reader;
mod roles;
mod run_merge;
mod scan;
mod snapshot_rows;
mod status;
mod sync;
mod varint;
mod view;

pub use options::ReaderOptions;
pub use pin::{Pin, PinnedPoint};
pub use reader::Reader;
pub use scan::Scan;
pub use status::PartitionStatus;
pub use view::drop_when_unshared;
