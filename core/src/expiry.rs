//! Times to live: how an expiry is named beside its field where documents are tables (the
//! compactor's overlay and snapshot files), and how it is judged.
//!
//! In a delta an expiry is a column of its row (`delta`), in a reader's local document a
//! flag and a number of its field (`ikv-reader`'s `doc.rs`); in a snapshot it is a
//! *companion field* of the document, `_ikv_expires_ms:<field>` (Int64, ms since the Unix
//! epoch), so that every merge of snapshots and layers carries it as it carries any field.
//! Its name begins with the reserved prefix, so no user field can collide with it, and no
//! delta can set it (decoders refuse reserved names in deltas).

/// The prefix of a companion field's name.
pub const EXPIRY_PREFIX: &str = "_ikv_expires_ms:";

/// The name of `field`'s companion.
pub fn expiry_field(field: &str) -> String {
    let mut name = String::with_capacity(EXPIRY_PREFIX.len() + field.len());
    name.push_str(EXPIRY_PREFIX);
    name.push_str(field);
    name
}

/// The field a companion belongs to; `None` for a name that is not a companion's.
pub fn field_of_expiry(name: &str) -> Option<&str> {
    name.strip_prefix(EXPIRY_PREFIX).filter(|f| !f.is_empty())
}

/// The field a companion (of an expiry or of an event time) belongs to; `None` for a name
/// that is no companion's.
pub fn field_of_companion(name: &str) -> Option<&str> {
    field_of_expiry(name).or_else(|| crate::event_time::field_of_event(name))
}

/// The field a name stands for where drops judge it: a companion stands for its field.
pub fn owning_field(name: &str) -> &str {
    field_of_companion(name).unwrap_or(name)
}

/// Whether a value expiring at `expires_ms` is still served at `now_ms`: until the clock
/// reaches the expiry.
pub fn is_live(expires_ms: Option<i64>, now_ms: i64) -> bool {
    expires_ms.is_none_or(|e| now_ms < e)
}

/// A snapshot's document as served at `now_ms`: values expired by then and every companion
/// left out; `None` when the document itself is gone (its primary-key field expired).
pub fn served_at(
    mut doc: std::collections::BTreeMap<String, crate::FieldValue>,
    primary_key: &str,
    now_ms: i64,
) -> Option<std::collections::BTreeMap<String, crate::FieldValue>> {
    let events: Vec<String> = doc
        .keys()
        .filter(|name| crate::event_time::field_of_event(name).is_some())
        .cloned()
        .collect();
    for name in events {
        doc.remove(&name);
    }
    let companions: Vec<(String, Option<i64>)> = doc
        .keys()
        .filter(|name| field_of_expiry(name).is_some())
        .map(|name| {
            let expiry = match doc.get(name) {
                Some(crate::FieldValue::Int64(e)) => Some(*e),
                _ => None,
            };
            (name.clone(), expiry)
        })
        .collect();
    for (companion, expiry) in companions {
        doc.remove(&companion);
        if let Some(field) = field_of_expiry(&companion)
            && !is_live(expiry, now_ms)
        {
            if field == primary_key {
                return None;
            }
            doc.remove(field);
        }
    }
    (!doc.is_empty()).then_some(doc)
}

/// The prefix every companion field's name begins with (and no user field's: it is the
/// reserved prefix).
pub const COMPANION_PREFIX: &str = "_ikv_";

/// Whether a document holds any companion field (they sort together, under the prefix): one
/// lookup, so a document without any pays nothing more.
pub fn has_companions(doc: &std::collections::BTreeMap<String, crate::FieldValue>) -> bool {
    doc.range::<str, _>((
        std::ops::Bound::Included(COMPANION_PREFIX),
        std::ops::Bound::Unbounded,
    ))
    .next()
    .is_some_and(|(name, _)| name.starts_with(COMPANION_PREFIX))
}

/// Sets `fields` (a later run's document) on `doc` as a later write replaces earlier values:
/// a field set without a companion of its own loses the companions `doc` held for it (an
/// expiry or an event time belongs to the value it came with).
pub fn replace_fields(
    doc: &mut std::collections::BTreeMap<String, crate::FieldValue>,
    fields: std::collections::BTreeMap<String, crate::FieldValue>,
) {
    let holds_companions = doc
        .range::<str, _>((
            std::ops::Bound::Included("_ikv_"),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .is_some_and(|(name, _)| name.starts_with("_ikv_"));
    if holds_companions {
        for name in fields.keys().filter(|n| field_of_companion(n).is_none()) {
            for companion in [expiry_field(name), crate::event_time::event_field(name)] {
                if !fields.contains_key(&companion) {
                    doc.remove(&companion);
                }
            }
        }
    }
    doc.extend(fields);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldValue;

    #[test]
    fn a_later_value_takes_its_companions_or_none() {
        let mut doc: std::collections::BTreeMap<String, FieldValue> = [
            ("a", FieldValue::Int64(1)),
            ("_ikv_expires_ms:a", FieldValue::Int64(50)),
            ("_ikv_event_us:a", FieldValue::Int64(7)),
            ("b", FieldValue::Int64(2)),
            ("_ikv_expires_ms:b", FieldValue::Int64(60)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        let later: std::collections::BTreeMap<String, FieldValue> = [
            ("a", FieldValue::Int64(10)),
            ("b", FieldValue::Int64(20)),
            ("_ikv_expires_ms:b", FieldValue::Int64(99)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        replace_fields(&mut doc, later);
        let names: Vec<&str> = doc.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["_ikv_expires_ms:b", "a", "b"]);
        assert_eq!(doc["_ikv_expires_ms:b"], FieldValue::Int64(99));
    }

    #[test]
    fn a_document_is_served_without_its_expired_values_and_companions() {
        let doc: std::collections::BTreeMap<String, FieldValue> = [
            ("id", FieldValue::String("k".into())),
            ("_ikv_expires_ms:id", FieldValue::Int64(100)),
            ("a", FieldValue::Int64(1)),
            ("_ikv_expires_ms:a", FieldValue::Int64(50)),
            ("b", FieldValue::Int64(2)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        let names = |d: Option<std::collections::BTreeMap<String, FieldValue>>| {
            d.map(|d| d.into_keys().collect::<Vec<_>>())
        };
        assert_eq!(
            names(served_at(doc.clone(), "id", 49)),
            Some(vec!["a".into(), "b".into(), "id".into()])
        );
        assert_eq!(
            names(served_at(doc.clone(), "id", 50)),
            Some(vec!["b".into(), "id".into()])
        );
        assert_eq!(
            served_at(doc, "id", 100),
            None,
            "the key expired: the document is gone"
        );
    }

    #[test]
    fn companions_name_their_field_and_nothing_else() {
        assert_eq!(expiry_field("score"), "_ikv_expires_ms:score");
        assert_eq!(field_of_expiry(&expiry_field("a:b")), Some("a:b"));
        assert_eq!(field_of_expiry("score"), None);
        assert_eq!(field_of_expiry(EXPIRY_PREFIX), None);
        assert_eq!(owning_field("_ikv_expires_ms:x"), "x");
        assert_eq!(owning_field("x"), "x");
        // A user field cannot be a companion: reserved names are refused for fields.
        assert!(crate::config::validate_field_name(&expiry_field("x")).is_err());
    }

    #[test]
    fn a_value_is_served_until_the_clock_reaches_its_expiry() {
        assert!(is_live(None, i64::MAX));
        assert!(is_live(Some(1000), 999));
        assert!(!is_live(Some(1000), 1000));
        assert!(!is_live(Some(1000), 1001));
    }
}
