//! Import deltas: the sorted runs a delta commits, and import ids.

/// A delta that imports documents: what [`Delta::import`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportDelta<'a> {
    /// The partition's documents are dropped first (the import replaces them).
    pub replace: bool,
    /// The import's sorted runs, in the order they apply.
    pub runs: Vec<ImportRun<'a>>,
}

/// One sorted run of an import: its id (its directory) and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRun<'a> {
    pub id: &'a str,
    pub spec: &'a [u8],
}

/// Whether an import id can name a directory: 1..=128 ASCII letters, digits, `-`, `_`, `.`,
/// not starting with `.`.
pub fn validate_import_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "import id {id:?} must be 1 to 128 ASCII letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}
