//! The rows of a delta: owned operations ([`DeltaOp`]) and borrowed ones ([`DeltaRow`]).

use crate::value::{FieldValue, ValueRef};

/// One elementary change inside a delta.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaOp {
    /// `expires_ms`: when the value stops being served (ms since the Unix epoch, judged by
    /// each reader's clock); `None` never. `event_us`: the write's event time (µs since the
    /// Unix epoch), which orders it against other writes of the field (`docs/FORMAT.md`,
    /// "Event times"); `None`: applied by commit order, as writes always were.
    SetField {
        key: Vec<u8>,
        field: String,
        value: FieldValue,
        expires_ms: Option<i64>,
        event_us: Option<i64>,
    },
    DeleteField {
        key: Vec<u8>,
        field: String,
    },
    DeleteDocument {
        key: Vec<u8>,
    },
    DropField {
        field: String,
    },
    DropFieldPrefix {
        prefix: String,
    },
    DropAll,
    /// Bulk-imported documents (op 7): one sorted run of key-sorted files for this
    /// partition, in directory `id`, described by `spec` (a snapshot-format manifest, JSON).
    /// Each imported document's fields are set as `SetField` rows would set them. Only in a
    /// delta of import rows, after at most one `DropAll`: see [`Delta::import`].
    Import {
        id: String,
        spec: Vec<u8>,
    },
}

/// One elementary change borrowed from a delta's Arrow buffers ([`DeltaBatches::for_each_row`]):
/// the same rows as [`DeltaOp`], without an allocation per key, field and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeltaRow<'a> {
    SetField {
        key: &'a [u8],
        field: &'a str,
        value: ValueRef<'a>,
        expires_ms: Option<i64>,
        event_us: Option<i64>,
    },
    DeleteField {
        key: &'a [u8],
        field: &'a str,
    },
    DeleteDocument {
        key: &'a [u8],
    },
    DropField {
        field: &'a str,
    },
    DropFieldPrefix {
        prefix: &'a str,
    },
    DropAll,
    Import {
        id: &'a str,
        spec: &'a [u8],
    },
}

impl DeltaRow<'_> {
    /// The row owned.
    pub fn to_op(&self) -> DeltaOp {
        match *self {
            DeltaRow::SetField {
                key,
                field,
                value,
                expires_ms,
                event_us,
            } => DeltaOp::SetField {
                key: key.to_vec(),
                field: field.to_owned(),
                value: value.to_owned_value(),
                expires_ms,
                event_us,
            },
            DeltaRow::DeleteField { key, field } => DeltaOp::DeleteField {
                key: key.to_vec(),
                field: field.to_owned(),
            },
            DeltaRow::DeleteDocument { key } => DeltaOp::DeleteDocument { key: key.to_vec() },
            DeltaRow::DropField { field } => DeltaOp::DropField {
                field: field.to_owned(),
            },
            DeltaRow::DropFieldPrefix { prefix } => DeltaOp::DropFieldPrefix {
                prefix: prefix.to_owned(),
            },
            DeltaRow::DropAll => DeltaOp::DropAll,
            DeltaRow::Import { id, spec } => DeltaOp::Import {
                id: id.to_owned(),
                spec: spec.to_vec(),
            },
        }
    }
}

impl DeltaOp {
    /// The row borrowed.
    pub fn as_row(&self) -> DeltaRow<'_> {
        match self {
            DeltaOp::SetField {
                key,
                field,
                value,
                expires_ms,
                event_us,
            } => DeltaRow::SetField {
                key,
                field,
                value: value.as_value_ref(),
                expires_ms: *expires_ms,
                event_us: *event_us,
            },
            DeltaOp::DeleteField { key, field } => DeltaRow::DeleteField { key, field },
            DeltaOp::DeleteDocument { key } => DeltaRow::DeleteDocument { key },
            DeltaOp::DropField { field } => DeltaRow::DropField { field },
            DeltaOp::DropFieldPrefix { prefix } => DeltaRow::DropFieldPrefix { prefix },
            DeltaOp::DropAll => DeltaRow::DropAll,
            DeltaOp::Import { id, spec } => DeltaRow::Import { id, spec },
        }
    }
}

impl DeltaOp {
    /// A set of `field` to `value` that never expires.
    pub fn set(key: impl Into<Vec<u8>>, field: impl Into<String>, value: FieldValue) -> DeltaOp {
        DeltaOp::SetField {
            key: key.into(),
            field: field.into(),
            value,
            expires_ms: None,
            event_us: None,
        }
    }

    /// When the value this row sets expires (`None` for other rows and values that never do).
    pub fn expires_ms(&self) -> Option<i64> {
        match self {
            DeltaOp::SetField { expires_ms, .. } => *expires_ms,
            _ => None,
        }
    }

    /// The event time of the value this row sets (`None` for other rows and writes without).
    pub fn event_us(&self) -> Option<i64> {
        match self {
            DeltaOp::SetField { event_us, .. } => *event_us,
            _ => None,
        }
    }

    pub(crate) fn code(&self) -> u8 {
        match self {
            DeltaOp::SetField { .. } => 1,
            DeltaOp::DeleteField { .. } => 2,
            DeltaOp::DeleteDocument { .. } => 3,
            DeltaOp::DropField { .. } => 4,
            DeltaOp::DropFieldPrefix { .. } => 5,
            DeltaOp::DropAll => 6,
            DeltaOp::Import { .. } => 7,
        }
    }

    /// Approximate bytes this row adds to a delta, for batch sizing.
    pub fn payload_bytes(&self) -> usize {
        8 + match self {
            DeltaOp::SetField {
                key,
                field,
                value,
                expires_ms,
                event_us,
            } => {
                key.len()
                    + field.len()
                    + value.encoded_len()
                    + 8 * usize::from(expires_ms.is_some())
                    + 8 * usize::from(event_us.is_some())
            }
            DeltaOp::DeleteField { key, field } => key.len() + field.len(),
            DeltaOp::DeleteDocument { key } => key.len(),
            DeltaOp::DropField { field } => field.len(),
            DeltaOp::DropFieldPrefix { prefix } => prefix.len(),
            DeltaOp::DropAll => 0,
            DeltaOp::Import { id, spec } => id.len() + spec.len(),
        }
    }
}
