//! Where a store's objects live under the storage root.
//!
//! ```text
//! <prefix>/<store>/store.json
//! <prefix>/<store>/p<part, 4 digits>/deltas/<seq, 20 digits>.arrow
//! <prefix>/<store>/p<part, 4 digits>/tip.json
//! <prefix>/<store>/p<part, 4 digits>/snapshots/<seq, 20 digits>/...
//! ```
//! Zero padding makes lexicographic listing order equal to numeric order.

use crate::bucket::Path;

use crate::config::validate_store_name;
use crate::error::Result;

/// Object paths of one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    store_dir: Path,
}

impl StoreLayout {
    /// Layout of `store_name` under `root_prefix`; fails on a name that is not allowed.
    pub fn new(root_prefix: &Path, store_name: &str) -> Result<StoreLayout> {
        validate_store_name(store_name)?;
        Ok(StoreLayout {
            store_dir: root_prefix.clone().join(store_name),
        })
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The store's name (the last segment of its directory).
    pub fn store_name(&self) -> &str {
        self.store_dir.filename().unwrap_or_default()
    }

    pub fn config(&self) -> Path {
        self.store_dir.clone().join("store.json")
    }

    pub fn partition_dir(&self, partition: u32) -> Path {
        self.store_dir.clone().join(format!("p{partition:04}"))
    }

    pub fn deltas_dir(&self, partition: u32) -> Path {
        self.partition_dir(partition).join("deltas")
    }

    pub fn delta(&self, partition: u32, seq: u64) -> Path {
        self.deltas_dir(partition).join(format!("{seq:020}.arrow"))
    }

    /// Where writers leave the last number they committed, for idle writers
    /// ([`crate::tip_hint`]).
    pub fn tip_hint(&self, partition: u32) -> Path {
        self.partition_dir(partition).join("tip.json")
    }

    /// The store's wake signal: replaced by a writer whose commit ends a partition's quiet
    /// spell, read by idle readers ([`crate::bucket::wake`]).
    pub fn wake(&self) -> Path {
        self.store_dir.clone().join("wake.json")
    }

    /// The store's checkpoints, one object each (`docs/SNAPSHOTS.md`, "Checkpoints").
    pub fn checkpoints_dir(&self) -> Path {
        self.store_dir.clone().join("checkpoints")
    }

    pub fn snapshots_dir(&self, partition: u32) -> Path {
        self.partition_dir(partition).join("snapshots")
    }

    pub fn snapshot_dir(&self, partition: u32, seq: u64) -> Path {
        self.snapshots_dir(partition).join(format!("{seq:020}"))
    }

    /// Where bulk imports keep their files, one directory per import (`docs/FORMAT.md`).
    pub fn imports_dir(&self, partition: u32) -> Path {
        self.partition_dir(partition).join("imports")
    }

    /// The files of import `id` for `partition` (the id is checked by
    /// [`crate::delta::validate_import_id`] before it gets here).
    pub fn import_dir(&self, partition: u32, id: &str) -> Path {
        self.imports_dir(partition).join(id)
    }
}

/// The sequence number of a delta path's file name (`00000000000000000042.arrow` → 42).
pub fn parse_delta_seq(path: &Path) -> Option<u64> {
    let name = path.filename()?;
    let digits = name.strip_suffix(".arrow")?;
    parse_seq(digits)
}

/// A 20-digit zero-padded sequence number.
pub fn parse_seq(digits: &str) -> Option<u64> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sort_in_sequence_order() {
        let l = StoreLayout::new(&Path::from("root/prefix"), "users").unwrap();
        assert_eq!(l.config().as_ref(), "root/prefix/users/store.json");
        assert_eq!(
            l.delta(3, 42).as_ref(),
            "root/prefix/users/p0003/deltas/00000000000000000042.arrow"
        );
        assert!(l.delta(0, 9).as_ref() < l.delta(0, 10).as_ref());
        assert_eq!(parse_delta_seq(&l.delta(0, u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_delta_seq(&Path::from("x/12.arrow")), None);
        assert_eq!(
            parse_delta_seq(&Path::from("x/0000000000000000001a.arrow")),
            None
        );
    }

    #[test]
    fn bad_store_names_have_no_layout() {
        assert!(StoreLayout::new(&Path::from("r"), "..").is_err());
        assert!(StoreLayout::new(&Path::from("r"), "a/b").is_err());
    }
}
