//! ikv core: the pieces every ikv component shares.
//!
//! - [`config`]: a store's immutable configuration and naming rules
//! - [`value`], [`document`], [`operation`]: the data model and write operations
//! - [`partition`]: which partition a document lives in
//! - [`delta`]: the Arrow IPC delta file format
//! - [`layout`], [`storage`], [`store`]: where things live in the bucket and how to reach it
//! - [`error`]: one error type with a small public [`ErrorKind`]
//!
//! The format is specified in `docs/FORMAT.md`.

pub mod bucket;
pub mod checksum;
pub mod clock;
pub mod committed;
pub mod config;
pub mod delta;
pub mod document;
pub mod error;
pub mod failpoint;
pub mod layout;
pub mod limits;
pub mod operation;
pub mod partition;
pub mod requests;
pub mod storage;
pub mod store;
pub mod tip;
pub mod tip_hint;
pub mod value;

pub use config::StoreConfig;
pub use delta::{Delta, DeltaBatches, DeltaMeta, DeltaOp, DeltaRow};
pub use document::Document;
pub use error::{Error, ErrorKind, Result};
pub use layout::StoreLayout;
pub use operation::{Operation, PartitionedOps, partition_operations};
pub use storage::{Storage, StorageOptions};
pub use value::{FieldType, FieldValue, ValueRef};
