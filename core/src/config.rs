//! The immutable configuration of a store (`<root>/<store>/store.json`) and store-name rules.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::{MAX_FIELD_NAME_BYTES, MAX_PARTITIONS, MAX_STORE_NAME_BYTES, MAX_TTL_SECONDS};

/// Version of the on-bucket format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A store's fixed configuration, written once when the store is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub format_version: u32,
    pub store_name: String,
    pub primary_key_field: String,
    #[serde(default)]
    pub partitioning_key_field: Option<String>,
    pub num_partitions: u32,
    /// Milliseconds since the Unix epoch when the store was created (informational).
    #[serde(default)]
    pub created_at_ms: u64,
    /// The time to live of a write that gives none (seconds; `None`: values never expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl StoreConfig {
    /// Builds and validates a configuration for a new store.
    pub fn new(
        store_name: &str,
        primary_key_field: &str,
        partitioning_key_field: Option<&str>,
        num_partitions: u32,
    ) -> Result<StoreConfig> {
        let config = StoreConfig {
            format_version: FORMAT_VERSION,
            store_name: store_name.to_owned(),
            primary_key_field: primary_key_field.to_owned(),
            partitioning_key_field: partitioning_key_field.map(str::to_owned),
            num_partitions,
            created_at_ms: now_ms(),
            ttl_seconds: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule; used on creation and on every load.
    pub fn validate(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(Error::InvalidConfig(format!(
                "format_version {} is not supported by this build (it reads version {FORMAT_VERSION})",
                self.format_version
            )));
        }
        validate_store_name(&self.store_name)?;
        validate_field_name(&self.primary_key_field)
            .map_err(|r| Error::InvalidConfig(format!("primary_key_field {r}")))?;
        if let Some(pk) = &self.partitioning_key_field {
            validate_field_name(pk)
                .map_err(|r| Error::InvalidConfig(format!("partitioning_key_field {r}")))?;
        }
        if self.num_partitions == 0 || self.num_partitions > MAX_PARTITIONS {
            return Err(Error::InvalidConfig(format!(
                "num_partitions must be between 1 and {MAX_PARTITIONS}, got {}",
                self.num_partitions
            )));
        }
        if let Some(ttl) = self.ttl_seconds {
            check_ttl_seconds(ttl).map_err(|r| Error::InvalidConfig(format!("ttl_seconds {r}")))?;
        }
        Ok(())
    }

    /// The configuration with a default time to live for its writes.
    pub fn with_ttl_seconds(mut self, ttl_seconds: Option<u64>) -> Result<StoreConfig> {
        self.ttl_seconds = ttl_seconds;
        self.validate()?;
        Ok(self)
    }

    /// The field whose value picks a document's partition.
    pub fn partition_field(&self) -> &str {
        self.partitioning_key_field
            .as_deref()
            .unwrap_or(&self.primary_key_field)
    }

    /// The configuration as stored: JSON with its checksum member (`checksum.rs`).
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        crate::checksum::seal_json(serde_json::to_vec_pretty(self).unwrap_or_default())
    }

    /// Verifies and parses a stored configuration; `what` names the object in errors.
    pub fn from_json(bytes: &[u8], what: &str) -> Result<StoreConfig> {
        let json = crate::checksum::open_json(bytes, what)?;
        let config: StoreConfig =
            serde_json::from_slice(&json).map_err(|e| Error::corrupt(what, e))?;
        config.validate()?;
        Ok(config)
    }
}

/// A time to live: 1 second to [`MAX_TTL_SECONDS`] (0, "never expires", is only meaningful on
/// a write, where it overrides a store's default).
pub fn check_ttl_seconds(ttl: u64) -> std::result::Result<(), String> {
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(format!(
            "must be between 1 and {MAX_TTL_SECONDS} seconds, got {ttl}"
        ));
    }
    Ok(())
}

/// A store name becomes one path segment under the storage root, so it must not be able to
/// reach outside it: 1 to 128 bytes of ASCII letters, digits, `-`, `_` and `.`, not `.` or
/// `..`, not starting with `.`.
pub fn validate_store_name(name: &str) -> Result<()> {
    let fail = |reason: &str| {
        Err(Error::InvalidStoreName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > MAX_STORE_NAME_BYTES {
        return fail(&format!("longer than {MAX_STORE_NAME_BYTES} bytes"));
    }
    if name.starts_with('.') {
        return fail("must not start with '.' (this also rules out '.' and '..')");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return fail(&format!(
            "character {c:?} is not allowed (use ASCII letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// Field names: non-empty, at most [`MAX_FIELD_NAME_BYTES`], no control characters.
/// Returns the reason as text so callers can say which field it was.
pub fn validate_field_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_FIELD_NAME_BYTES {
        return Err(format!(
            "{:?}… is longer than {MAX_FIELD_NAME_BYTES} bytes",
            name.chars().take(32).collect::<String>()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains a control character"));
    }
    // In any case: DuckDB and pandas users query snapshot columns case-insensitively, so
    // `_IKV_key` would collide with `_ikv_key`.
    if name
        .as_bytes()
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
    {
        return Err(format!(
            "{name:?} begins with {RESERVED_PREFIX:?} (in any case), which is reserved for ikv's own columns"
        ));
    }
    Ok(())
}

/// A field name as stored in a delta: what every writer version accepted (non-empty, at most
/// [`MAX_FIELD_NAME_BYTES`], no control characters, not beginning with [`RESERVED_PREFIX`]).
/// Readers and the compactor refuse a delta holding any other: a writer never wrote it.
pub fn stored_field_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FIELD_NAME_BYTES
        && !name.chars().any(char::is_control)
        && !name.starts_with(RESERVED_PREFIX)
}

/// Field names beginning with this are ikv's (the snapshot's `_ikv_key` column and any later
/// internal column): no document, drop or store configuration may use them.
pub const RESERVED_PREFIX: &str = "_ikv";

pub(crate) fn now_ms() -> u64 {
    crate::clock::wall_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn reserved_names_are_refused_in_any_case() {
        for bad in ["_ikv_key", "_IKV_key", "_Ikv", "_ikV_x"] {
            let err = validate_field_name(bad).unwrap_err();
            assert!(err.contains("reserved"), "{bad}: {err}");
        }
        for good in ["_ik", "ikv", "x_ikv", "é_ikv"] {
            validate_field_name(good).unwrap();
        }
    }

    #[test]
    fn store_names_cannot_escape_their_prefix() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "tab\there",
            "nul\0",
            "é",
            "sp ace",
            &"x".repeat(129),
        ] {
            let err = validate_store_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
            assert!(err.to_string().contains("invalid store name"), "{err}");
        }
        for good in ["users", "a", "user-profiles_v2.1", &"x".repeat(128)] {
            validate_store_name(good).unwrap();
        }
    }

    #[test]
    fn config_round_trips_and_rejects_bad_values() {
        let c = StoreConfig::new("users", "userid", Some("country"), 4).unwrap();
        assert_eq!(StoreConfig::from_json(&c.to_json(), "t").unwrap(), c);
        assert_eq!(c.partition_field(), "country");
        assert!(StoreConfig::new("users", "", None, 1).is_err());
        assert!(StoreConfig::new("users", "id", Some(""), 1).is_err());
        assert!(StoreConfig::new("users", "id", None, 0).is_err());
        assert!(StoreConfig::new("users", "id", None, MAX_PARTITIONS + 1).is_err());
        let mut future = c.clone();
        future.format_version = 99;
        let err = StoreConfig::from_json(&future.to_json(), "t").unwrap_err();
        assert!(err.to_string().contains("format_version 99"), "{err}");
        let err = StoreConfig::from_json(b"{not json", "t").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        // A configuration written before checksums reads as before.
        let legacy = serde_json::to_vec_pretty(&c).unwrap();
        assert_eq!(StoreConfig::from_json(&legacy, "t").unwrap(), c);
        let mut flipped = c.to_json();
        let at = flipped.iter().position(|b| *b == b'u').unwrap();
        flipped[at] = b'v'; // "users" -> "vsers": still valid JSON, caught by the checksum
        let err = StoreConfig::from_json(&flipped, "p/store.json").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(
            err.to_string().contains("p/store.json") && err.to_string().contains("checksum"),
            "{err}"
        );
    }
}
