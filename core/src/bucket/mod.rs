//! The bucket protocol: every request ikv makes to a bucket is made here, and nothing outside
//! this module tree names the object store library (rfcs/0007).
//!
//! - [`Storage`] ([`storage`]): opening a root (`s3://`, `file://`, `memory://`); its store is
//!   private, wrapped in a counter ([`requests`]) that every request passes through, and its
//!   waits are on an injected [`crate::clock::Clock`].
//! - `objects.rs`: the primitives: reads (whole, listed size, ranged, local files), conditional
//!   create with settlement of ambiguous outcomes, plain puts of replaceable objects, deletes,
//!   listings, multipart uploads.
//! - [`delta_commit`] and [`hint_publisher`]: the delta commit loop, the second user of the
//!   conditional create (a delta is recognised as ours by its batch id, a configuration or a
//!   manifest by its bytes), with its failpoints; [`committed`] is the commit rule both the
//!   writer and the reader apply.
//! - [`tip`] and [`tip_hint`]: finding a log's tip (bounded search, shared hint).
//! - `store.rs`: store-level reads and writes (create, configuration, deltas, the tip).
//!
//! The vocabulary other crates use is re-exported here: [`Path`] (an object's key),
//! [`ObjectMeta`] (what a listing says of an object), [`Payload`] (a body in parts) and
//! [`Upload`] (a multipart upload, for snapshot files).

pub mod commit_stats;
pub mod committed;
pub mod delta_commit;
pub mod hint_publisher;
mod objects;
pub mod requests;
mod storage;
mod store;
pub mod tip;
pub mod tip_hint;
pub mod wake;

pub use commit_stats::CommitStats;
pub use delta_commit::{CommitPolicy, PartitionCommitter};
pub use hint_publisher::{BURST_GAP, HINT_EVERY, HintFlush};
pub use objects::*;
pub use storage::{Storage, StorageOptions};
pub use store::*;

pub use object_store::ObjectMeta;
pub use object_store::PutPayload as Payload;
pub use object_store::buffered::BufWriter as Upload;
pub use object_store::path::Path;
