//! The six write operations of the API, and their validation into per-partition delta rows.

use crate::config::{StoreConfig, check_ttl_seconds, validate_field_name};
use crate::delta::DeltaOp;
use crate::document::Document;
use crate::error::{Error, Result};
use crate::limits::{
    MAX_DOCUMENT_BYTES, MAX_FIELDS_PER_OPERATION, MAX_KEY_BYTES, MAX_OPERATIONS_PER_BATCH,
    MAX_STORE_WIDE_ROWS_PER_BATCH, MAX_VALUE_BYTES,
};
use crate::partition::partition_of;

/// One write operation, as the IKV API names them.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Union the document's fields into the stored document (later values overwrite). The
    /// values expire after the store's default time to live, if it has one.
    UpsertFields(Document),
    /// `upsert_fields` with its own time to live or an event time. `ttl_seconds`: the values
    /// stop being served that long after the writer builds the delta (0: never, even when
    /// the store has a default; `None`: the store's default). `event_time_us`: for each
    /// field, the write with the newest event time wins whatever the commit order
    /// (`docs/FORMAT.md`, "Event times").
    UpsertFieldsWith {
        document: Document,
        ttl_seconds: Option<u64>,
        event_time_us: Option<i64>,
    },
    /// Delete the named fields of the document the given one identifies.
    DeleteFields {
        document: Document,
        field_names: Vec<String>,
    },
    /// Delete the document the given one identifies.
    DeleteDocument(Document),
    /// Drop these fields from every document. The primary-key field is silently kept.
    DropFieldsByName(Vec<String>),
    /// Drop every field whose name starts with one of these prefixes from every document.
    /// The primary-key field is silently kept.
    DropFieldsByNamePrefix(Vec<String>),
    /// Delete every document of the store.
    DropAllFields,
}

impl Operation {
    /// The API name of the operation (`upsert_fields`, ...), used in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::UpsertFields(_) | Operation::UpsertFieldsWith { .. } => "upsert_fields",
            Operation::DeleteFields { .. } => "delete_fields",
            Operation::DeleteDocument(_) => "delete_document",
            Operation::DropFieldsByName(_) => "drop_fields_by_name",
            Operation::DropFieldsByNamePrefix(_) => "drop_fields_by_name_prefix",
            Operation::DropAllFields => "drop_all_fields",
        }
    }
}

/// A validated batch: for each partition, the delta rows it must commit, in call order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionedOps {
    /// Indexed by partition; empty where the batch does not touch a partition.
    pub partitions: Vec<Vec<DeltaOp>>,
}

impl PartitionedOps {
    /// Partitions this batch writes to, with their rows.
    pub fn non_empty(&self) -> impl Iterator<Item = (u32, &Vec<DeltaOp>)> {
        self.partitions
            .iter()
            .enumerate()
            .filter(|(_, ops)| !ops.is_empty())
            .map(|(p, ops)| (p as u32, ops))
    }

    pub fn into_non_empty(self) -> impl Iterator<Item = (u32, Vec<DeltaOp>)> {
        self.partitions
            .into_iter()
            .enumerate()
            .filter(|(_, ops)| !ops.is_empty())
            .map(|(p, ops)| (p as u32, ops))
    }
}

/// Validates every operation against the store's configuration and the limits, and splits
/// the batch by partition. Either every operation is valid or nothing is returned: callers
/// write nothing on error. Store-wide drops go to every partition. `now_ms` (the writer's
/// clock, ms since the Unix epoch) turns times to live into expiries.
pub fn partition_operations(
    config: &StoreConfig,
    ops: &[Operation],
    now_ms: i64,
) -> Result<PartitionedOps> {
    if ops.len() > MAX_OPERATIONS_PER_BATCH {
        return Err(Error::InvalidOperation(format!(
            "a batch may hold at most {MAX_OPERATIONS_PER_BATCH} operations, got {}",
            ops.len()
        )));
    }
    let n = config.num_partitions as usize;
    // Store-wide operations are copied into every partition: bound what they multiply to.
    let store_wide: usize = ops
        .iter()
        .map(|op| match op {
            Operation::DropFieldsByName(names) => names.len(),
            Operation::DropFieldsByNamePrefix(prefixes) => prefixes.len(),
            Operation::DropAllFields => 1,
            _ => 0,
        })
        .sum();
    if store_wide.saturating_mul(n) > MAX_STORE_WIDE_ROWS_PER_BATCH {
        return Err(Error::InvalidOperation(format!(
            "the batch's store-wide operations name {store_wide} fields or prefixes, written into each of {n} partitions: {} rows, more than the {MAX_STORE_WIDE_ROWS_PER_BATCH} one batch may make; split it",
            store_wide.saturating_mul(n)
        )));
    }
    let mut out = PartitionedOps {
        partitions: vec![Vec::new(); n],
    };
    for (index, op) in ops.iter().enumerate() {
        let at = |msg: String| format!("operation {index} ({}): {msg}", op.name());
        match op {
            Operation::UpsertFields(doc) | Operation::UpsertFieldsWith { document: doc, .. } => {
                let (ttl, event_us) = match op {
                    Operation::UpsertFieldsWith {
                        ttl_seconds,
                        event_time_us,
                        ..
                    } => {
                        let ttl = match ttl_seconds {
                            None => config.ttl_seconds,
                            Some(0) => None,
                            Some(t) => {
                                check_ttl_seconds(*t).map_err(|m| {
                                    Error::InvalidOperation(at(format!("ttl_seconds {m}")))
                                })?;
                                Some(*t)
                            }
                        };
                        (ttl, *event_time_us)
                    }
                    _ => (config.ttl_seconds, None),
                };
                // Both are bounded (a TTL by MAX_TTL_SECONDS): the sum cannot overflow.
                let expires_ms = ttl.map(|t| now_ms.saturating_add(t as i64 * 1000));
                let (key, part) =
                    identify(config, doc).map_err(|m| Error::InvalidDocument(at(m)))?;
                check_document(doc).map_err(|m| Error::InvalidDocument(at(m)))?;
                let rows = &mut out.partitions[part as usize];
                for (field, value) in doc.fields() {
                    rows.push(DeltaOp::SetField {
                        key: key.clone(),
                        field: field.to_owned(),
                        value: value.clone(),
                        expires_ms,
                        event_us,
                    });
                }
            }
            Operation::DeleteFields {
                document,
                field_names,
            } => {
                let (key, part) =
                    identify(config, document).map_err(|m| Error::InvalidDocument(at(m)))?;
                check_names(field_names, "field name")
                    .map_err(|m| Error::InvalidOperation(at(m)))?;
                let rows = &mut out.partitions[part as usize];
                for field in field_names {
                    // Deleting the primary-key field would leave a document without its key.
                    if field != &config.primary_key_field {
                        rows.push(DeltaOp::DeleteField {
                            key: key.clone(),
                            field: field.clone(),
                        });
                    }
                }
            }
            Operation::DeleteDocument(doc) => {
                let (key, part) =
                    identify(config, doc).map_err(|m| Error::InvalidDocument(at(m)))?;
                out.partitions[part as usize].push(DeltaOp::DeleteDocument { key });
            }
            Operation::DropFieldsByName(names) => {
                check_names(names, "field name").map_err(|m| Error::InvalidOperation(at(m)))?;
                for name in names.iter().filter(|n| **n != config.primary_key_field) {
                    for rows in &mut out.partitions {
                        rows.push(DeltaOp::DropField {
                            field: name.clone(),
                        });
                    }
                }
            }
            Operation::DropFieldsByNamePrefix(prefixes) => {
                check_names(prefixes, "field-name prefix")
                    .map_err(|m| Error::InvalidOperation(at(m)))?;
                for prefix in prefixes {
                    for rows in &mut out.partitions {
                        rows.push(DeltaOp::DropFieldPrefix {
                            prefix: prefix.clone(),
                        });
                    }
                }
            }
            Operation::DropAllFields => {
                for rows in &mut out.partitions {
                    rows.push(DeltaOp::DropAll);
                }
            }
        }
    }
    Ok(out)
}

/// The primary-key bytes and partition of a document, or why it cannot be identified.
fn identify(config: &StoreConfig, doc: &Document) -> std::result::Result<(Vec<u8>, u32), String> {
    let key = key_value(doc, &config.primary_key_field, "primary key")?;
    let part_key = match &config.partitioning_key_field {
        Some(field) => key_value(doc, field, "partitioning key")?,
        None => key,
    };
    Ok((key.to_vec(), partition_of(part_key, config.num_partitions)))
}

fn key_value<'a>(
    doc: &'a Document,
    field: &str,
    what: &str,
) -> std::result::Result<&'a [u8], String> {
    let value = doc
        .get(field)
        .ok_or_else(|| format!("document lacks its {what} field {field:?}"))?;
    let bytes = value.key_bytes().ok_or_else(|| {
        format!(
            "{what} field {field:?} must be a string or bytes, not {}",
            value.field_type()
        )
    })?;
    if bytes.is_empty() {
        return Err(format!("{what} field {field:?} must not be empty"));
    }
    if bytes.len() > MAX_KEY_BYTES {
        return Err(format!(
            "{what} field {field:?} is {} bytes, more than the {MAX_KEY_BYTES} allowed",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn check_document(doc: &Document) -> std::result::Result<(), String> {
    for (name, value) in doc.fields() {
        validate_field_name(name).map_err(|r| format!("field name {r}"))?;
        if value.encoded_len() > MAX_VALUE_BYTES {
            return Err(format!(
                "field {name:?} is {} bytes, more than the {MAX_VALUE_BYTES} allowed",
                value.encoded_len()
            ));
        }
    }
    let size = doc.size_bytes();
    if size > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "document is {size} bytes, more than the {MAX_DOCUMENT_BYTES} allowed"
        ));
    }
    Ok(())
}

fn check_names(names: &[String], what: &str) -> std::result::Result<(), String> {
    if names.is_empty() {
        return Err(format!("at least one {what} is required"));
    }
    if names.len() > MAX_FIELDS_PER_OPERATION {
        return Err(format!(
            "at most {MAX_FIELDS_PER_OPERATION} {what}s per operation, got {}",
            names.len()
        ));
    }
    for name in names {
        validate_field_name(name).map_err(|r| format!("{what} {r}"))?;
    }
    Ok(())
}
