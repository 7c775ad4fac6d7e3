//! ikv core: the pieces every ikv component shares.
//!
//! - [`config`]: a store's immutable configuration and naming rules
//! - [`value`], [`document`], [`operation`]: the data model and write operations
//! - [`partition`]: which partition a document lives in
//! - [`delta`]: the Arrow IPC delta file format
//! - [`layout`]: where things live in the bucket
//! - [`bucket`]: every request to the bucket (the bucket protocol)
//! - [`error`]: one error type with a small public [`ErrorKind`]
//!
//! The format is specified in `docs/FORMAT.md`.

pub mod arrow_column;
pub mod bucket;
pub mod checksum;
pub mod clock;
pub mod config;
pub mod delta;
pub mod document;
pub mod error;
pub mod event_time;
pub mod expiry;
pub mod failpoint;
pub mod layout;
pub mod limits;
pub mod metrics;
pub mod operation;
pub mod partition;
pub mod value;

pub use bucket::{Storage, StorageOptions};
pub use config::StoreConfig;
pub use delta::{Delta, DeltaBatches, DeltaMeta, DeltaOp, DeltaRow};
pub use document::Document;
pub use error::{Error, ErrorKind, Result};
pub use layout::StoreLayout;
pub use operation::{Operation, PartitionedOps, partition_operations};
pub use value::{FieldType, FieldValue, ValueRef};
