//! Event times: the order of writes to a field by when their data happened, not by when they
//! were committed (rfcs/0013, `docs/FORMAT.md` "Event times").
//!
//! The rule ([`set_wins`]) is a pure function of the stored field, the incoming write and the
//! time its delta was written: the reader's apply, the compactor's overlay and the reference
//! model all decide with it, so a reader that followed every delta and one that bootstrapped
//! from a snapshot hold the same values.
//!
//! In a snapshot an event time is a companion field beside its field, `_ikv_event_us:<field>`
//! (Int64, µs since the Unix epoch), as expiries are (`crate::expiry`).

/// The prefix of an event time's companion field.
pub const EVENT_PREFIX: &str = "_ikv_event_us:";

/// The name of `field`'s event-time companion.
pub fn event_field(field: &str) -> String {
    let mut name = String::with_capacity(EVENT_PREFIX.len() + field.len());
    name.push_str(EVENT_PREFIX);
    name.push_str(field);
    name
}

/// The field an event-time companion belongs to; `None` for any other name.
pub fn field_of_event(name: &str) -> Option<&str> {
    name.strip_prefix(EVENT_PREFIX).filter(|f| !f.is_empty())
}

/// A stored value as the rule weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub event_us: Option<i64>,
    pub expires_ms: Option<i64>,
}

/// Whether a write of a field with event time `incoming` (`None`: none), in a delta written
/// at `written_at_ms` (the writer's clock), replaces what is stored (`None`: nothing, or a
/// value deleted or dropped). A write without an event time keeps the semantics writes always
/// had: it replaces what is stored (and the value it sets has no event time). A write with one
/// replaces a value without one, or one whose event time is not newer (equal ones by commit
/// order); a stored value that had expired by the time the delta was written weighs nothing
/// (so a pass that dropped it and a reader that kept it agree).
pub fn set_wins(stored: Option<Stored>, incoming: Option<i64>, written_at_ms: i64) -> bool {
    let Some(stored) = stored else {
        return true;
    };
    if !crate::expiry::is_live(stored.expires_ms, written_at_ms) {
        return true;
    }
    match (stored.event_us, incoming) {
        (None, _) | (_, None) => true,
        (Some(old), Some(new)) => new >= old,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(event_us: Option<i64>, expires_ms: Option<i64>) -> Option<Stored> {
        Some(Stored {
            event_us,
            expires_ms,
        })
    }

    #[test]
    fn the_newest_event_wins_and_writes_without_one_keep_commit_order() {
        assert!(set_wins(None, None, 0));
        assert!(set_wins(None, Some(5), 0));
        assert!(
            set_wins(stored(None, None), None, 0),
            "commit order among writes without"
        );
        assert!(set_wins(stored(None, None), Some(1), 0));
        assert!(
            set_wins(stored(Some(1), None), None, 0),
            "a write without one: commit order, as always"
        );
        assert!(!set_wins(stored(Some(10), None), Some(9), 0));
        assert!(
            set_wins(stored(Some(10), None), Some(10), 0),
            "equal: commit order"
        );
        assert!(set_wins(stored(Some(10), None), Some(11), 0));
        // An expired value weighs nothing from the delta written at its expiry on.
        assert!(!set_wins(stored(Some(10), Some(100)), Some(1), 99));
        assert!(set_wins(stored(Some(10), Some(100)), Some(1), 100));
        assert!(set_wins(stored(Some(10), Some(100)), Some(-1), 100));
    }

    #[test]
    fn companions_name_their_field() {
        assert_eq!(field_of_event(&event_field("f")), Some("f"));
        assert_eq!(field_of_event("f"), None);
        assert_eq!(field_of_event(EVENT_PREFIX), None);
        assert!(crate::config::validate_field_name(&event_field("f")).is_err());
    }
}
