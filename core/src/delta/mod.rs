//! Delta files: one committed batch of one partition, as an Arrow IPC file.
//!
//! Columns (one row per elementary change, applied in row order):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `op` | UInt8, not null | 1 set field, 2 delete field, 3 delete document, 4 drop field, 5 drop field prefix, 6 drop all, 7 import a sorted run |
//! | `key` | Binary, null for store-wide ops and 7 | primary-key bytes |
//! | `field` | Utf8, null for 3 and 6 | field name (1, 2, 4), prefix (5) or run id (7) |
//! | `type` | UInt8, null unless op 1 | [`FieldType`] code |
//! | `value` | Binary, null unless op 1 or 7 | [`FieldValue::encode`] bytes (1), the run's description (7) |
//! | `expires_ms` | Int64, optional column, null unless op 1 | when the value set expires (ms since the Unix epoch) |
//! | `event_us` | Int64, optional column, null unless op 1 | the write's event time (µs since the Unix epoch) |
//!
//! A delta holding an expiry or an event time has both optional columns and says format
//! version 2 (builds that read only version 1 refuse it instead of serving expired values or
//! applying writes out of event-time order); every other delta is written as version 1,
//! without them.
//! The reference is `docs/FORMAT.md` (version 1). [`decode_delta`] gives owned rows;
//! [`decode_delta_batches`] keeps the record batches and hands out rows borrowed, checked the
//! same way (the compactor's path).
//!
//! Schema metadata: `ikv.format_version`, `ikv.batch_id`, `ikv.writer_id`, `ikv.store`,
//! `ikv.partition`, `ikv.created_at_ms`.
//!
//! Modules: [`rows`] (the operations a delta holds), [`import`] (import deltas), [`meta`] (who
//! wrote it and where it belongs), [`encode`] and [`decode`].

mod decode;
mod encode;
mod import;
mod meta;
mod rows;

pub use decode::{Delta, DeltaBatches, decode_delta, decode_delta_batches, decode_delta_meta};
pub use encode::{encode_delta, place_delta};
pub use import::{ImportDelta, ImportRun, validate_import_id};
pub use meta::DeltaMeta;

/// The format version of a delta with an `expires_ms` column.
pub const TIMED_FORMAT_VERSION: u32 = 2;
/// The column of expiries.
pub const EXPIRES_COLUMN: &str = "expires_ms";
/// The column of event times.
pub const EVENT_COLUMN: &str = "event_us";
pub use rows::{DeltaOp, DeltaRow};
