//! Typed field values and their byte encoding inside delta files.

use crate::error::{Error, Result};

/// The type a field value was written with. The numeric codes are part of the on-bucket
/// format (the `type` column of a delta): never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FieldType {
    String = 1,
    Bytes = 2,
    Int64 = 3,
    Float64 = 4,
    Bool = 5,
}

impl FieldType {
    pub const ALL: [FieldType; 5] = [
        FieldType::String,
        FieldType::Bytes,
        FieldType::Int64,
        FieldType::Float64,
        FieldType::Bool,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<FieldType> {
        FieldType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The lower-case name used in JSON and docs: `string`, `bytes`, `int64`, `float64`, `bool`.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Bytes => "bytes",
            FieldType::Int64 => "int64",
            FieldType::Float64 => "float64",
            FieldType::Bool => "bool",
        }
    }

    pub fn from_name(name: &str) -> Option<FieldType> {
        FieldType::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One typed field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    String(String),
    Bytes(Vec<u8>),
    Int64(i64),
    Float64(f64),
    Bool(bool),
}

impl FieldValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::String(_) => FieldType::String,
            FieldValue::Bytes(_) => FieldType::Bytes,
            FieldValue::Int64(_) => FieldType::Int64,
            FieldValue::Float64(_) => FieldType::Float64,
            FieldValue::Bool(_) => FieldType::Bool,
        }
    }

    /// The value's bytes as stored in a delta: UTF-8 for strings, raw bytes, 8 bytes
    /// little-endian for int64 and float64 (IEEE 754 bits), one byte 0/1 for bool.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.as_value_ref().encode_into(&mut out);
        out
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            FieldValue::String(s) => s.len(),
            FieldValue::Bytes(b) => b.len(),
            FieldValue::Int64(_) | FieldValue::Float64(_) => 8,
            FieldValue::Bool(_) => 1,
        }
    }

    /// Inverse of [`FieldValue::encode`]; fails on a wrong length or invalid UTF-8.
    pub fn decode(ty: FieldType, bytes: &[u8]) -> Result<FieldValue> {
        ValueRef::decode(ty, bytes).map(ValueRef::to_owned_value)
    }

    /// The value borrowed.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            FieldValue::String(s) => ValueRef::String(s),
            FieldValue::Bytes(b) => ValueRef::Bytes(b),
            FieldValue::Int64(v) => ValueRef::Int64(*v),
            FieldValue::Float64(v) => ValueRef::Float64(*v),
            FieldValue::Bool(v) => ValueRef::Bool(*v),
        }
    }

    /// The bytes a key made of this value hashes and sorts by: only strings and bytes can be
    /// keys, and a string key equals the key made of its UTF-8 bytes.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::String(s) => Some(s.as_bytes()),
            FieldValue::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// A typed field value borrowed from the bytes it was decoded from (a delta's Arrow buffers):
/// what the compactor folds without an allocation per value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    String(&'a str),
    Bytes(&'a [u8]),
    Int64(i64),
    Float64(f64),
    Bool(bool),
}

impl<'a> ValueRef<'a> {
    /// Inverse of [`FieldValue::encode`], borrowing; fails on a wrong length or invalid UTF-8.
    pub fn decode(ty: FieldType, bytes: &'a [u8]) -> Result<ValueRef<'a>> {
        let bad = |reason: &str| Error::corrupt(format!("{ty} value"), reason);
        Ok(match ty {
            FieldType::String => {
                ValueRef::String(std::str::from_utf8(bytes).map_err(|_| bad("not valid UTF-8"))?)
            }
            FieldType::Bytes => ValueRef::Bytes(bytes),
            FieldType::Int64 => ValueRef::Int64(i64::from_le_bytes(
                bytes.try_into().map_err(|_| bad("not 8 bytes"))?,
            )),
            FieldType::Float64 => ValueRef::Float64(f64::from_bits(u64::from_le_bytes(
                bytes.try_into().map_err(|_| bad("not 8 bytes"))?,
            ))),
            FieldType::Bool => match bytes {
                [0] => ValueRef::Bool(false),
                [1] => ValueRef::Bool(true),
                _ => return Err(bad("not a single 0 or 1 byte")),
            },
        })
    }

    pub fn field_type(&self) -> FieldType {
        match self {
            ValueRef::String(_) => FieldType::String,
            ValueRef::Bytes(_) => FieldType::Bytes,
            ValueRef::Int64(_) => FieldType::Int64,
            ValueRef::Float64(_) => FieldType::Float64,
            ValueRef::Bool(_) => FieldType::Bool,
        }
    }

    /// Appends the value's stored bytes (as [`ValueRef::decode`] reads them) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ValueRef::String(s) => out.extend_from_slice(s.as_bytes()),
            ValueRef::Bytes(b) => out.extend_from_slice(b),
            ValueRef::Int64(v) => out.extend_from_slice(&v.to_le_bytes()),
            ValueRef::Float64(v) => out.extend_from_slice(&v.to_bits().to_le_bytes()),
            ValueRef::Bool(v) => out.push(u8::from(*v)),
        }
    }

    pub fn to_owned_value(self) -> FieldValue {
        match self {
            ValueRef::String(s) => FieldValue::String(s.to_owned()),
            ValueRef::Bytes(b) => FieldValue::Bytes(b.to_vec()),
            ValueRef::Int64(v) => FieldValue::Int64(v),
            ValueRef::Float64(v) => FieldValue::Float64(v),
            ValueRef::Bool(v) => FieldValue::Bool(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let values = [
            FieldValue::String("héllo".into()),
            FieldValue::String(String::new()),
            FieldValue::Bytes(vec![0, 255, 7]),
            FieldValue::Int64(i64::MIN),
            FieldValue::Int64(-1),
            FieldValue::Float64(-0.5),
            FieldValue::Float64(f64::INFINITY),
            FieldValue::Bool(true),
            FieldValue::Bool(false),
        ];
        for v in values {
            let bytes = v.encode();
            assert_eq!(bytes.len(), v.encoded_len());
            assert_eq!(FieldValue::decode(v.field_type(), &bytes).unwrap(), v);
            let borrowed = ValueRef::decode(v.field_type(), &bytes).unwrap();
            assert_eq!(borrowed, v.as_value_ref());
            assert_eq!(borrowed.field_type(), v.field_type());
        }
    }

    #[test]
    fn decode_rejects_malformed_bytes() {
        assert!(FieldValue::decode(FieldType::String, &[0xff, 0xfe]).is_err());
        assert!(FieldValue::decode(FieldType::Int64, &[1, 2, 3]).is_err());
        assert!(FieldValue::decode(FieldType::Float64, &[]).is_err());
        assert!(FieldValue::decode(FieldType::Bool, &[2]).is_err());
    }

    #[test]
    fn type_codes_are_stable() {
        let codes: Vec<u8> = FieldType::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5]);
        for t in FieldType::ALL {
            assert_eq!(FieldType::from_code(t.code()), Some(t));
            assert_eq!(FieldType::from_name(t.name()), Some(t));
        }
        assert_eq!(FieldType::from_code(0), None);
    }
}
