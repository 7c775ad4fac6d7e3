//! The memory an import may use, and how it is shared out.
//!
//! An importer gathers rows until they hold half the budget, then sorts and writes them as
//! one run per partition and starts again ([`crate::runs::RunBuilder::flush`]); readers and
//! the compactor merge a partition's runs by key, later runs winning, so the result is the
//! one a single sorted run would give. Sorting keeps the gathered rows where they are and
//! builds only an order of them (8 bytes a row, 4 more per distinct key); sorted rows go out
//! in chunks of about a thirty-second of the budget, and at most two partitions are written
//! at once, each holding a chunk being arranged, a row group being gathered and one being
//! encoded. What is left covers the batch being read and the process itself.

use ikv_core::{Error, Result};

/// The default budget: fits a 2 GB Lambda or a small container beside its runtime.
pub const DEFAULT_MEMORY_BUDGET: u64 = 1 << 30;
/// The smallest budget taken. Below about 64 MiB the fixed costs (a batch being read, the
/// runtime) are most of the memory used and runs get small; tests use small budgets to
/// make many runs of little data.
pub const MIN_MEMORY_BUDGET: u64 = 1 << 20;

/// Rows per sorted chunk, at most: a Parquet row group of the snapshot format.
const MAX_CHUNK_ROWS: usize = 64 * 1024;
const MIN_CHUNK_ROWS: usize = 256;

/// Bytes of memory an import may use (peak resident memory, measured in
/// `tests/benches/import_memory.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget(u64);

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget(DEFAULT_MEMORY_BUDGET)
    }
}

impl MemoryBudget {
    /// A budget of `bytes`, at least [`MIN_MEMORY_BUDGET`].
    pub fn new(bytes: u64) -> Result<MemoryBudget> {
        if bytes < MIN_MEMORY_BUDGET {
            return Err(Error::InvalidImport(format!(
                "a memory budget of {bytes} bytes is below the smallest one taken, {} MiB (64 MiB or more is sensible)",
                MIN_MEMORY_BUDGET >> 20
            )));
        }
        Ok(MemoryBudget(bytes))
    }

    pub fn bytes(&self) -> u64 {
        self.0
    }

    /// Arrow memory the gathered rows may hold before they are written as runs.
    pub fn gathered_bytes(&self) -> usize {
        usize::try_from(self.0 / 2).unwrap_or(usize::MAX)
    }

    /// Sorted rows per chunk for rows averaging `bytes / rows` bytes.
    pub fn chunk_rows(&self, bytes: usize, rows: usize) -> usize {
        let per_row = (bytes / rows.max(1)).max(1);
        let chunk_bytes = usize::try_from(self.0 / 32).unwrap_or(usize::MAX);
        (chunk_bytes / per_row).clamp(MIN_CHUNK_ROWS, MAX_CHUNK_ROWS)
    }
}

impl std::str::FromStr for MemoryBudget {
    type Err = Error;

    /// Bytes, or a number with a binary unit: `512MiB`, `1GiB`, `2G`, `800M`, `65536K`.
    fn from_str(s: &str) -> Result<MemoryBudget> {
        let text = s.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            "t" | "tib" => 40,
            _ => {
                return Err(Error::InvalidImport(format!(
                    "memory budget {s:?}: unit {unit:?} is not one of B, KiB, MiB, GiB, TiB"
                )));
            }
        };
        let value: u64 = number.parse().map_err(|_| {
            Error::InvalidImport(format!(
                "memory budget {s:?} is not a number of bytes (e.g. 1GiB, 512MiB)"
            ))
        })?;
        let bytes = value
            .checked_mul(1 << shift)
            .ok_or_else(|| Error::InvalidImport(format!("memory budget {s:?} is too large")))?;
        MemoryBudget::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_binary_units() {
        let parse = |s: &str| s.parse::<MemoryBudget>().map(|b| b.bytes());
        assert_eq!(parse("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse(" 2g ").unwrap(), 2 << 30);
        assert_eq!(parse("67108864").unwrap(), 64 << 20);
        assert_eq!(parse("1024K").unwrap(), 1 << 20);
        for bad in ["", "GiB", "1.5GiB", "1PB", "-1GiB", "99999999999999T"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("memory budget"), "{bad}: {err}");
        }
        let err = parse("1000K").unwrap_err().to_string();
        assert!(err.contains("below the smallest"), "{err}");
    }

    #[test]
    fn chunks_follow_the_row_size() {
        let budget = MemoryBudget::new(1 << 30).unwrap();
        assert_eq!(budget.gathered_bytes(), 512 << 20);
        // 160-byte rows: the row-group cap; 1 MiB rows: the floor.
        assert_eq!(budget.chunk_rows(160 << 20, 1 << 20), MAX_CHUNK_ROWS);
        assert_eq!(budget.chunk_rows(4 << 20, 4), MIN_CHUNK_ROWS);
        assert_eq!(budget.chunk_rows(4096 << 10, 1 << 10), 8192);
    }
}
