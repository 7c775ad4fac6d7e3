//! A DuckDB query that reads the newest state of a store straight from its snapshot files: a
//! full snapshot as it is, a layer's stack resolved in SQL (docs/SNAPSHOTS.md, "Layers").
//!
//! For each field, the value comes from the newest layer that *decides* it (sets it, deletes it,
//! or replaces the document), else from the full snapshot; a document is live when its
//! primary-key field is. `arg_max` over a one-member struct keeps a deciding layer's null (a
//! deletion), which a bare `arg_max` would skip.

use std::collections::BTreeSet;

use ikv_core::FieldType;
use ikv_core::expiry::{field_of_companion, field_of_expiry};

use crate::layer::{REPLACES_COLUMN, Stack, UNSET_COLUMN};
use crate::manifest::{KEY_COLUMN, Manifest, SnapshotColumn, SnapshotFile, plan_columns};

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn files(m: &Manifest, url_of: &impl Fn(&Manifest, &SnapshotFile) -> String) -> String {
    let urls: Vec<String> = m.files.iter().map(|f| literal(&url_of(m, f))).collect();
    format!("read_parquet([{}])", urls.join(", "))
}

/// `m`'s columns under the output's names (by field and type), nulls for the ones it lacks.
fn select_as(m: &Manifest, out: &[SnapshotColumn]) -> Vec<String> {
    out.iter()
        .map(|o| {
            match m
                .columns
                .iter()
                .find(|c| c.field == o.field && c.field_type == o.field_type)
            {
                Some(c) => format!("{} AS {}", ident(&c.name), ident(&o.name)),
                None => format!("NULL::{} AS {}", sql_type(o.field_type), ident(&o.name)),
            }
        })
        .collect()
}

fn sql_type(t: FieldType) -> &'static str {
    match t {
        FieldType::String => "VARCHAR",
        FieldType::Bytes => "BLOB",
        FieldType::Int64 => "BIGINT",
        FieldType::Float64 => "DOUBLE",
        FieldType::Bool => "BOOLEAN",
    }
}

/// The query of one partition's stack (an empty one's selects nothing, typed).
fn partition_query(
    stack: &Stack,
    out: &[SnapshotColumn],
    url_of: &impl Fn(&Manifest, &SnapshotFile) -> String,
) -> String {
    let key = ident(KEY_COLUMN);
    let base = if stack.full.files.is_empty() {
        let nulls: Vec<String> = std::iter::once(format!("NULL::BLOB AS {key}"))
            .chain(select_as(&stack.full, out))
            .collect();
        format!("SELECT {} WHERE false", nulls.join(", "))
    } else {
        let cols: Vec<String> = std::iter::once(key.clone())
            .chain(select_as(&stack.full, out))
            .collect();
        format!(
            "SELECT {} FROM {}",
            cols.join(", "),
            files(&stack.full, url_of)
        )
    };
    let layers: Vec<&Manifest> = stack
        .layers
        .iter()
        .filter(|m| !m.files.is_empty())
        .collect();
    if layers.is_empty() {
        return base;
    }
    let changes: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cols: Vec<String> = [
                key.clone(),
                ident(REPLACES_COLUMN),
                format!("coalesce({}, []::VARCHAR[]) AS _u", ident(UNSET_COLUMN)),
                format!("{i} AS _layer"),
            ]
            .into_iter()
            .chain(select_as(m, out))
            .collect();
            format!("SELECT {} FROM {}", cols.join(", "), files(m, url_of))
        })
        .collect();
    let fields: BTreeSet<&str> = out.iter().map(|c| c.field.as_str()).collect();
    let mut decided = Vec::new();
    let mut merged = Vec::new();
    for field in &fields {
        let columns: Vec<&SnapshotColumn> = out.iter().filter(|c| c.field == *field).collect();
        let set: Vec<String> = columns
            .iter()
            .map(|c| format!("{} IS NOT NULL", ident(&c.name)))
            .collect();
        let decides = format!(
            "{} OR list_contains(_u, {}) OR {}",
            ident(REPLACES_COLUMN),
            literal(field),
            set.join(" OR ")
        );
        let flag = ident(&format!("_d {field}"));
        decided.push(format!(
            "max(CASE WHEN {decides} THEN _layer END) IS NOT NULL AS {flag}"
        ));
        for c in columns {
            let name = ident(&c.name);
            decided.push(format!(
                "arg_max({{'v': {name}}}, CASE WHEN {decides} THEN _layer END).v AS {name}"
            ));
            merged.push(format!(
                "CASE WHEN t.{flag} THEN t.{name} ELSE b.{name} END AS {name}"
            ));
        }
    }
    let pk = stack.full.primary_key_field.as_str();
    let pk_live: Vec<String> = out
        .iter()
        .filter(|c| c.field == pk)
        .map(|c| format!("{} IS NOT NULL", ident(&c.name)))
        .collect();
    let live = if pk_live.is_empty() {
        "false".to_owned()
    } else {
        pk_live.join(" OR ")
    };
    format!(
        "SELECT * FROM (SELECT coalesce(t.{key}, b.{key}) AS {key}, {merged} FROM ({base}) b FULL OUTER JOIN (SELECT {key}, {decided} FROM ({changes}) GROUP BY {key}) t ON b.{key} = t.{key}) WHERE {live}",
        merged = merged.join(", "),
        decided = decided.join(", "),
        changes = changes.join(" UNION ALL "),
    )
}

/// Every column the stacks hold, companions of expiries included, named as a full snapshot
/// would name them.
fn stack_columns(stacks: &[Stack]) -> Vec<SnapshotColumn> {
    let pairs: BTreeSet<(String, FieldType)> = stacks
        .iter()
        .flat_map(|s| std::iter::once(&s.full).chain(&s.layers))
        .flat_map(|m| m.columns.iter().map(|c| (c.field.clone(), c.field_type)))
        .collect();
    plan_columns(&pairs)
}

/// The columns of [`duckdb_query`]'s result (after the key column): one per (field, type)
/// any snapshot of the stacks holds, named as a full snapshot would name them; companions of
/// expiries and event times (`ikv_core::expiry`, `ikv_core::event_time`) are not columns of
/// the result (expiries judge the values).
pub fn query_columns(stacks: &[Stack]) -> Vec<SnapshotColumn> {
    stack_columns(stacks)
        .into_iter()
        .filter(|c| field_of_companion(&c.field).is_none())
        .collect()
}

/// The query's time, as expiries count it: ms since the Unix epoch when DuckDB runs it (not
/// when the query was printed), whatever the session's time zone.
const QUERY_TIME_MS: &str = "epoch_ms(now())";

/// A DuckDB query of every live document in the stacks given (one per partition), in key
/// order, with the key column first and then [`query_columns`]; `None` when no partition has
/// a snapshot. `url_of` names a file as DuckDB should read it (a local path or an `s3://` URL).
pub fn duckdb_query(
    stacks: &[Stack],
    url_of: impl Fn(&Manifest, &SnapshotFile) -> String,
) -> Option<String> {
    let out = stack_columns(stacks);
    let parts: Vec<String> = stacks
        .iter()
        .map(|s| partition_query(s, &out, &url_of))
        .map(|q| format!("({q})"))
        .collect();
    if parts.is_empty() {
        return None;
    }
    let key = ident(KEY_COLUMN);
    let all = parts.join(" UNION ALL ");
    let companion = |field: &str| {
        out.iter()
            .find(|c| field_of_expiry(&c.field) == Some(field))
            .map(|c| ident(&c.name))
    };
    if !out.iter().any(|c| field_of_companion(&c.field).is_some()) {
        return Some(format!("SELECT * FROM ({all}) ORDER BY {key}"));
    }
    // Values with an expiry at or before the query's time are null; a document whose key
    // field expired is not a row (as every reader serves them).
    let values: Vec<String> = query_columns(stacks)
        .iter()
        .map(|c| match companion(&c.field) {
            Some(e) => format!(
                "CASE WHEN {e} IS NULL OR {e} > {QUERY_TIME_MS} THEN {name} END AS {name}",
                name = ident(&c.name)
            ),
            None => ident(&c.name),
        })
        .collect();
    let pk = stacks
        .first()
        .map_or("", |s| s.full.primary_key_field.as_str());
    let live = match companion(pk) {
        Some(e) => format!("WHERE {e} IS NULL OR {e} > {QUERY_TIME_MS} "),
        None => String::new(),
    };
    Some(format!(
        "SELECT {key}, {} FROM ({all}) {live}ORDER BY {key}",
        values.join(", ")
    ))
}
