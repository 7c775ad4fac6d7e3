//! Size limits, checked before anything is written. Documented in `docs/FORMAT.md`.
//!
//! They keep one delta small enough to fetch and apply quickly and one HTTP request within
//! the 6 MB an AWS Lambda invocation accepts.

/// Longest store name, in bytes.
pub const MAX_STORE_NAME_BYTES: usize = 128;
/// Longest field name (or field-name prefix), in bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 256;
/// Longest primary-key or partitioning-key value, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest single field value, in encoded bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Largest document (sum of field names and encoded values), in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Most operations one call may submit.
pub const MAX_OPERATIONS_PER_BATCH: usize = 100_000;
/// Most field names one store-wide drop or one delete_fields may name.
pub const MAX_FIELDS_PER_OPERATION: usize = 10_000;
/// Group commit stops adding callers' operations to a delta past this many payload bytes;
/// one call larger than this is refused.
pub const MAX_DELTA_PAYLOAD_BYTES: usize = 32 << 20;
/// Most delta rows one call's store-wide operations may make: a drop is written into every
/// partition, so its cost is names × partitions. Bounds what one request makes a writer
/// write and hold (a 1 MB request of drops on 512 partitions would otherwise be ~500 MB).
pub const MAX_STORE_WIDE_ROWS_PER_BATCH: usize = 100_000;
/// Most payload bytes one call may make across all its partitions.
pub const MAX_BATCH_PAYLOAD_BYTES: usize = 64 << 20;
/// Most partitions a store may have.
pub const MAX_PARTITIONS: u32 = 4096;

/// The longest time to live a write may have: 100 years (expiries stay far from `i64`'s end).
pub const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;
