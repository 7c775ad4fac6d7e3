//! Times to live and event times of imported rows: two optional input columns, and the
//! companion columns (`ikv_core::expiry`, `ikv_core::event_time`) they become beside each
//! imported field.
//!
//! Inside the import a row's companions are never null where its value is not: "never
//! expires" is [`NEVER`] and "no event time" is [`NO_EVENT`], so that combining the rows of
//! one key (for each column, the last row that has a value wins: `sort.rs`) keeps every value
//! with its own row's times. Written runs hold nulls there ([`to_stored`]), as snapshots do.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array};
use ikv_core::limits::MAX_TTL_SECONDS;
use ikv_core::{Error, Result};

/// Input column of each row's time to live in seconds (null: the store's default; 0: never).
pub const TTL_COLUMN: &str = "_ikv_ttl_seconds";
/// Input column of each row's event time, µs since the Unix epoch (null: none).
pub const EVENT_TIME_COLUMN: &str = "_ikv_event_time_us";

/// An expiry that never comes, while rows are gathered.
const NEVER: i64 = i64::MAX;
/// No event time, while rows are gathered.
const NO_EVENT: i64 = i64::MIN;

/// Each row's expiry (ms since the Unix epoch; [`NEVER`] for none) from its time to live,
/// the store's default where it gives none, counted from `now_ms`.
pub fn expiries(
    ttl: Option<&Int64Array>,
    rows: usize,
    default_ttl: Option<u64>,
    now_ms: i64,
    row_base: u64,
) -> Result<Vec<i64>> {
    let expiry = |ttl: Option<u64>| ttl.map_or(NEVER, |t| now_ms.saturating_add(t as i64 * 1000));
    (0..rows)
        .map(|i| match ttl {
            Some(col) if col.is_valid(i) => match col.value(i) {
                0 => Ok(NEVER),
                t if (1..=MAX_TTL_SECONDS as i64).contains(&t) => Ok(expiry(Some(t as u64))),
                t => Err(Error::InvalidImport(format!(
                    "row {}: {TTL_COLUMN} is {t}; a time to live is 0 (never) or 1 to {MAX_TTL_SECONDS} seconds",
                    row_base + i as u64
                ))),
            },
            _ => Ok(expiry(default_ttl)),
        })
        .collect()
}

/// Each row's event time ([`NO_EVENT`] for none).
pub fn events(event: Option<&Int64Array>, rows: usize) -> Vec<i64> {
    (0..rows)
        .map(|i| match event {
            Some(col) if col.is_valid(i) => col.value(i),
            _ => NO_EVENT,
        })
        .collect()
}

/// The companion column of `values`: `times[i]` where row `i` has a value, null elsewhere.
pub fn companion(values: &ArrayRef, times: &[i64]) -> ArrayRef {
    Arc::new(
        (0..values.len())
            .map(|i| values.is_valid(i).then(|| times[i]))
            .collect::<Int64Array>(),
    )
}

/// A gathered companion column as runs store it: the placeholders of "never" and "none"
/// become nulls.
pub fn to_stored(column: &ArrayRef, event: bool) -> ArrayRef {
    let Some(times) = column.as_any().downcast_ref::<Int64Array>() else {
        return column.clone();
    };
    let absent = if event { NO_EVENT } else { NEVER };
    Arc::new(
        times
            .iter()
            .map(|t| t.filter(|t| *t != absent))
            .collect::<Int64Array>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_get_their_own_times_or_the_default_and_bad_ones_are_named() {
        let ttl = Int64Array::from(vec![Some(10), None, Some(0)]);
        assert_eq!(
            expiries(Some(&ttl), 3, Some(60), 1_000, 0).unwrap(),
            vec![11_000, 61_000, NEVER]
        );
        assert_eq!(
            expiries(None, 2, None, 1_000, 0).unwrap(),
            vec![NEVER, NEVER]
        );
        let bad = Int64Array::from(vec![Some(5), Some(-1)]);
        let err = expiries(Some(&bad), 2, None, 0, 40).unwrap_err();
        assert!(
            err.to_string().contains("row 41: _ikv_ttl_seconds is -1"),
            "{err}"
        );
        let event = Int64Array::from(vec![Some(-3), None]);
        assert_eq!(events(Some(&event), 2), vec![-3, NO_EVENT]);
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(2)]));
        let c = companion(&values, &[7, 8, NEVER]);
        let stored = to_stored(&c, false);
        let stored = stored.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(stored.iter().collect::<Vec<_>>(), vec![Some(7), None, None]);
    }
}
