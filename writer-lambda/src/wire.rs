//! The HTTP API's wire format (specified in `docs/API.md`): JSON bodies and headers, shared
//! by the service and the client (which does not need the service's server dependencies).

use base64::Engine;
use ikv_core::{Document, FieldValue, Operation};
use serde::{Deserialize, Serialize};

/// Header carrying the account id.
pub const ACCOUNT_ID_HEADER: &str = "x-ikv-account-id";
/// Header carrying the account passkey.
pub const PASSKEY_HEADER: &str = "x-ikv-account-passkey";

/// `POST /v1/stores/{store}/operations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationsRequest {
    pub operations: Vec<OperationJson>,
}

/// One operation, tagged by `op`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OperationJson {
    UpsertFields {
        document: DocumentJson,
        /// Seconds the values are served (0: never expire); the store's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_seconds: Option<u64>,
        /// The write's event time, µs since the Unix epoch: for each field the newest wins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_time_us: Option<i64>,
    },
    DeleteFields {
        document: DocumentJson,
        field_names: Vec<String>,
    },
    DeleteDocument {
        document: DocumentJson,
    },
    DropFieldsByName {
        field_names: Vec<String>,
    },
    DropFieldsByNamePrefix {
        field_name_prefixes: Vec<String>,
    },
    DropAllFields,
}

/// A document: field name → typed value. A name given twice is refused (a JSON object's
/// last duplicate would otherwise silently win).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct DocumentJson(pub std::collections::BTreeMap<String, ValueJson>);

impl std::ops::Deref for DocumentJson {
    type Target = std::collections::BTreeMap<String, ValueJson>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromIterator<(String, ValueJson)> for DocumentJson {
    fn from_iter<I: IntoIterator<Item = (String, ValueJson)>>(iter: I) -> Self {
        DocumentJson(iter.into_iter().collect())
    }
}

impl<'de> Deserialize<'de> for DocumentJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = DocumentJson;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a document: an object of field name to typed value")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DocumentJson, A::Error> {
                let mut out = std::collections::BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, ValueJson>()? {
                    if out.contains_key(&name) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate field {name:?} in a document"
                        )));
                    }
                    out.insert(name, value);
                }
                Ok(DocumentJson(out))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A typed value: an object with exactly one key naming the type. Bytes are standard
/// base64; int64 may be a JSON number or a decimal string (JSON numbers lose precision past
/// 2^53 in many clients); float64 may be a number or "NaN", "Infinity", "-Infinity".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ValueJson {
    String(String),
    Bytes(String),
    Int64(IntJson),
    Float64(FloatJson),
    Bool(bool),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntJson {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FloatJson {
    Number(f64),
    Text(String),
}

impl ValueJson {
    fn to_value(&self, field: &str) -> Result<FieldValue, String> {
        Ok(match self {
            ValueJson::String(s) => FieldValue::String(s.clone()),
            ValueJson::Bytes(b64) => FieldValue::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                        format!("field {field:?}: bytes value is not valid base64: {e}")
                    })?,
            ),
            ValueJson::Int64(IntJson::Number(n)) => FieldValue::Int64(*n),
            ValueJson::Int64(IntJson::Text(t)) => FieldValue::Int64(t.parse().map_err(|_| {
                format!("field {field:?}: int64 value {t:?} is not a 64-bit integer")
            })?),
            ValueJson::Float64(FloatJson::Number(f)) => FieldValue::Float64(*f),
            ValueJson::Float64(FloatJson::Text(t)) => FieldValue::Float64(match t.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => {
                    return Err(format!(
                        "field {field:?}: float64 value {t:?} must be a number, \"NaN\", \"Infinity\" or \"-Infinity\""
                    ));
                }
            }),
            ValueJson::Bool(b) => FieldValue::Bool(*b),
        })
    }

    /// The JSON form of a value (used by clients of the API).
    pub fn from_value(value: &FieldValue) -> ValueJson {
        match value {
            FieldValue::String(s) => ValueJson::String(s.clone()),
            FieldValue::Bytes(b) => {
                ValueJson::Bytes(base64::engine::general_purpose::STANDARD.encode(b))
            }
            FieldValue::Int64(n) => ValueJson::Int64(IntJson::Number(*n)),
            FieldValue::Float64(f) if f.is_nan() => {
                ValueJson::Float64(FloatJson::Text("NaN".into()))
            }
            FieldValue::Float64(f) if f.is_infinite() => ValueJson::Float64(FloatJson::Text(
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
            )),
            FieldValue::Float64(f) => ValueJson::Float64(FloatJson::Number(*f)),
            FieldValue::Bool(b) => ValueJson::Bool(*b),
        }
    }
}

fn to_document(doc: &DocumentJson, index: usize) -> Result<Document, String> {
    doc.iter()
        .map(|(name, v)| Ok((name.clone(), v.to_value(name)?)))
        .collect::<Result<Document, String>>()
        .map_err(|e| format!("operation {index}: {e}"))
}

impl OperationJson {
    /// Converts to the library's operation; `index` is used in messages.
    pub fn to_operation(&self, index: usize) -> Result<Operation, String> {
        Ok(match self {
            OperationJson::UpsertFields {
                document,
                ttl_seconds: None,
                event_time_us: None,
            } => Operation::UpsertFields(to_document(document, index)?),
            OperationJson::UpsertFields {
                document,
                ttl_seconds,
                event_time_us,
            } => Operation::UpsertFieldsWith {
                document: to_document(document, index)?,
                ttl_seconds: *ttl_seconds,
                event_time_us: *event_time_us,
            },
            OperationJson::DeleteFields {
                document,
                field_names,
            } => Operation::DeleteFields {
                document: to_document(document, index)?,
                field_names: field_names.clone(),
            },
            OperationJson::DeleteDocument { document } => {
                Operation::DeleteDocument(to_document(document, index)?)
            }
            OperationJson::DropFieldsByName { field_names } => {
                Operation::DropFieldsByName(field_names.clone())
            }
            OperationJson::DropFieldsByNamePrefix {
                field_name_prefixes,
            } => Operation::DropFieldsByNamePrefix(field_name_prefixes.clone()),
            OperationJson::DropAllFields => Operation::DropAllFields,
        })
    }

    /// The JSON form of an operation (used by clients of the API).
    pub fn from_operation(op: &Operation) -> OperationJson {
        let doc = |d: &Document| {
            d.fields()
                .map(|(k, v)| (k.to_owned(), ValueJson::from_value(v)))
                .collect()
        };
        match op {
            Operation::UpsertFields(d) => OperationJson::UpsertFields {
                document: doc(d),
                ttl_seconds: None,
                event_time_us: None,
            },
            Operation::UpsertFieldsWith {
                document,
                ttl_seconds,
                event_time_us,
            } => OperationJson::UpsertFields {
                document: doc(document),
                ttl_seconds: *ttl_seconds,
                event_time_us: *event_time_us,
            },
            Operation::DeleteFields {
                document,
                field_names,
            } => OperationJson::DeleteFields {
                document: doc(document),
                field_names: field_names.clone(),
            },
            Operation::DeleteDocument(d) => OperationJson::DeleteDocument { document: doc(d) },
            Operation::DropFieldsByName(names) => OperationJson::DropFieldsByName {
                field_names: names.clone(),
            },
            Operation::DropFieldsByNamePrefix(p) => OperationJson::DropFieldsByNamePrefix {
                field_name_prefixes: p.clone(),
            },
            Operation::DropAllFields => OperationJson::DropAllFields,
        }
    }
}

/// Successful write response.
#[derive(Debug, Serialize, Deserialize)]
pub struct OperationsResponse {
    pub operations: usize,
    pub commits: Vec<CommitJson>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitJson {
    pub partition: u32,
    pub sequence: u64,
}

/// Error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_round_trip_through_json() {
        let doc = Document::new()
            .with("id", FieldValue::String("a".into()))
            .with("b", FieldValue::Bytes(vec![1, 2]))
            .with("i", FieldValue::Int64(i64::MAX))
            .with("f", FieldValue::Float64(f64::NEG_INFINITY))
            .with("t", FieldValue::Bool(true));
        let ops = [
            Operation::UpsertFields(doc.clone()),
            Operation::UpsertFieldsWith {
                document: doc.clone(),
                ttl_seconds: Some(30),
                event_time_us: None,
            },
            Operation::UpsertFieldsWith {
                document: doc.clone(),
                ttl_seconds: Some(0),
                event_time_us: Some(-7),
            },
            Operation::UpsertFieldsWith {
                document: doc.clone(),
                ttl_seconds: None,
                event_time_us: Some(1_800_000_000_000_000),
            },
            Operation::DeleteFields {
                document: doc.clone(),
                field_names: vec!["b".into()],
            },
            Operation::DeleteDocument(doc),
            Operation::DropFieldsByName(vec!["x".into()]),
            Operation::DropFieldsByNamePrefix(vec!["y".into()]),
            Operation::DropAllFields,
        ];
        for (i, op) in ops.iter().enumerate() {
            let json = serde_json::to_string(&OperationJson::from_operation(op)).unwrap();
            let back: OperationJson = serde_json::from_str(&json).unwrap();
            assert_eq!(&back.to_operation(i).unwrap(), op, "{json}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let parse = |s: &str| {
            serde_json::from_str::<OperationJson>(s)
                .map_err(|e| e.to_string())
                .and_then(|o| o.to_operation(3))
        };
        let err = parse(r#"{"op":"upsert_fields","document":{"b":{"bytes":"!!"}}}"#).unwrap_err();
        assert!(
            err.contains("operation 3: field \"b\": bytes value is not valid base64"),
            "{err}"
        );
        let err = parse(r#"{"op":"upsert_fields","document":{"i":{"int64":"12x"}}}"#).unwrap_err();
        assert!(err.contains("not a 64-bit integer"), "{err}");
        let err =
            parse(r#"{"op":"upsert_fields","document":{"f":{"float64":"big"}}}"#).unwrap_err();
        assert!(err.contains("must be a number"), "{err}");
        let err = parse(r#"{"op":"upsert_fields","document":{"f":{"decimal":"1"}}}"#).unwrap_err();
        assert!(err.contains("unknown variant `decimal`"), "{err}");
        let err = parse(r#"{"op":"explode"}"#).unwrap_err();
        assert!(err.contains("unknown variant `explode`"), "{err}");
        assert_eq!(
            parse(r#"{"op":"upsert_fields","document":{"i":{"int64":"-9223372036854775808"}}}"#)
                .unwrap(),
            Operation::UpsertFields(Document::new().with("i", FieldValue::Int64(i64::MIN)))
        );
        assert_eq!(
            parse(r#"{"op":"upsert_fields","document":{},"ttl_seconds":5}"#).unwrap(),
            Operation::UpsertFieldsWith {
                document: Document::new(),
                ttl_seconds: Some(5),
                event_time_us: None,
            }
        );
        assert_eq!(
            parse(r#"{"op":"upsert_fields","document":{},"event_time_us":12}"#).unwrap(),
            Operation::UpsertFieldsWith {
                document: Document::new(),
                ttl_seconds: None,
                event_time_us: Some(12),
            }
        );
        let err =
            parse(r#"{"op":"upsert_fields","document":{},"event_time_us":"soon"}"#).unwrap_err();
        assert!(err.contains("invalid type: string \"soon\""), "{err}");
        let err = parse(r#"{"op":"upsert_fields","document":{},"ttl_seconds":-5}"#).unwrap_err();
        assert!(err.contains("invalid value: integer `-5`"), "{err}");
        let err = parse(r#"{"op":"delete_document","document":{},"ttl_seconds":5}"#).unwrap_err();
        assert!(err.contains("unknown field `ttl_seconds`"), "{err}");
    }
}
