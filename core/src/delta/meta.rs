//! A delta's metadata: who wrote it, which batch it is, where it belongs.

use std::collections::HashMap;

use crate::config::FORMAT_VERSION;
use crate::error::{Error, Result};

/// `ikv.checksum` of deltas followed by a CRC32C trailer (`checksum.rs`).
pub(crate) const CHECKSUM_TRAILER: &str = "crc32c-trailer";

/// Who wrote a delta and which batch it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaMeta {
    pub format_version: u32,
    /// Unique per committed batch; how a writer recognizes its own delta after an ambiguous PUT.
    pub batch_id: String,
    pub writer_id: String,
    pub store_name: String,
    pub partition: u32,
    pub created_at_ms: u64,
}

impl DeltaMeta {
    pub fn new(batch_id: String, writer_id: String, store_name: String, partition: u32) -> Self {
        DeltaMeta {
            format_version: FORMAT_VERSION,
            batch_id,
            writer_id,
            store_name,
            partition,
            created_at_ms: crate::config::now_ms(),
        }
    }

    pub(crate) fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("ikv.format_version".into(), self.format_version.to_string()),
            ("ikv.batch_id".into(), self.batch_id.clone()),
            ("ikv.writer_id".into(), self.writer_id.clone()),
            ("ikv.store".into(), self.store_name.clone()),
            ("ikv.partition".into(), self.partition.to_string()),
            ("ikv.created_at_ms".into(), self.created_at_ms.to_string()),
            // Says the file is followed by a checksum trailer: a delta cut exactly at its
            // trailer would otherwise pass for one written before trailers existed.
            ("ikv.checksum".into(), CHECKSUM_TRAILER.into()),
        ])
    }

    pub(crate) fn from_metadata(md: &arrow_schema::Metadata) -> Result<DeltaMeta> {
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| Error::corrupt("delta metadata", format!("missing {k}")))
        };
        let num = |k: &str| -> Result<u64> {
            get(k)?
                .parse()
                .map_err(|_| Error::corrupt("delta metadata", format!("{k} is not a number")))
        };
        let format_version = num("ikv.format_version")? as u32;
        if !(FORMAT_VERSION..=super::TIMED_FORMAT_VERSION).contains(&format_version) {
            return Err(Error::corrupt(
                "delta",
                format!(
                    "format version {format_version} is not supported (this build reads {FORMAT_VERSION} to {})",
                    super::TIMED_FORMAT_VERSION
                ),
            ));
        }
        Ok(DeltaMeta {
            format_version,
            batch_id: get("ikv.batch_id")?,
            writer_id: get("ikv.writer_id")?,
            store_name: get("ikv.store")?,
            partition: num("ikv.partition")? as u32,
            created_at_ms: num("ikv.created_at_ms")?,
        })
    }
}

pub(crate) fn check_origin(
    meta: &DeltaMeta,
    sequence: Option<u64>,
    store: &str,
    partition: u32,
    seq: u64,
    path: &impl std::fmt::Display,
) -> Result<()> {
    meta.check_origin(store, partition, path)?;
    match sequence {
        Some(placed) if placed != seq => Err(Error::Corrupt {
            what: path.to_string(),
            reason: format!("the delta says it is delta {placed}, not delta {seq}"),
        }),
        _ => Ok(()),
    }
}

impl DeltaMeta {
    /// A delta read from `path` must say it belongs there: a delta of another store or
    /// partition copied into this log (by mistake or on purpose) is corruption, never applied.
    /// (Its sequence number is in the trailer: [`Delta::check_origin`] checks all three.)
    pub fn check_origin(
        &self,
        store: &str,
        partition: u32,
        path: &impl std::fmt::Display,
    ) -> Result<()> {
        if self.store_name != store || self.partition != partition {
            return Err(Error::Corrupt {
                what: path.to_string(),
                reason: format!(
                    "the delta says it belongs to store {:?}, partition {}, not store {store:?}, partition {partition}",
                    self.store_name, self.partition
                ),
            });
        }
        Ok(())
    }
}
