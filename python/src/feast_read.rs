//! Feast features read straight into Arrow (`ikvpy.feast.read_features`): the serialized
//! `ValueProto`s `IKVOnlineStore` stored, decoded in one pass over the shared copy into the
//! column types `OnlineResponse.to_arrow()` gives, with the feature view's TTL applied per row.
//!
//! A `ValueProto` is a protobuf message with one `val` oneof; the scalar members decoded here
//! are fields 1 to 8 (bytes, string, int32, int64, double, float, bool, unix timestamp in
//! seconds). Anything else (lists, sets, maps, JSON, UUIDs...) is a `Raw` column: the stored
//! bytes, decoded by Feast's own Python code. Bytes from the store are input: a malformed
//! message is an error naming the field, never a panic.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};

/// How a column is decoded; the numbers are what Python passes (Feast's `ValueType` numbers
/// where one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The stored bytes as they are (binary).
    Raw,
    Bytes,
    String,
    /// int32 or int64 (an int64 column, as Python ints become).
    Int,
    /// double or float (a float64 column).
    Float,
    Bool,
    /// Seconds since the epoch; a timestamp[us, UTC] column, Feast's null timestamp null.
    Timestamp,
}

impl Kind {
    pub fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            0 => Kind::Raw,
            1 => Kind::Bytes,
            2 => Kind::String,
            3 | 4 => Kind::Int,
            5 | 6 => Kind::Float,
            7 => Kind::Bool,
            8 => Kind::Timestamp,
            _ => return None,
        })
    }
}

/// The value of a `ValueProto`'s oneof, as far as it is scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// No member set, or `null_val`.
    Null,
    Bytes(&'a [u8]),
    String(&'a [u8]),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(i64),
    /// A member this decoder leaves to Feast (its field number).
    Other(u32),
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or("a varint runs past the end")?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|e| *e <= bytes.len())
        .ok_or("a field runs past the end")?;
    let out = &bytes[*at..end];
    *at = end;
    Ok(out)
}

/// Decodes one serialized `ValueProto` (the last member set wins, as protobuf says).
pub fn decode(bytes: &[u8]) -> Result<Scalar<'_>, String> {
    let mut at = 0;
    let mut out = Scalar::Null;
    while at < bytes.len() {
        let tag = varint(bytes, &mut at)?;
        let field = u32::try_from(tag >> 3).map_err(|_| "a field number out of range")?;
        let wire = tag & 7;
        let (raw_varint, raw_bytes): (Option<u64>, Option<&[u8]>) = match wire {
            0 => (Some(varint(bytes, &mut at)?), None),
            1 => (None, Some(take(bytes, &mut at, 8)?)),
            2 => {
                let n = usize::try_from(varint(bytes, &mut at)?)
                    .map_err(|_| "a length out of range")?;
                (None, Some(take(bytes, &mut at, n)?))
            }
            5 => (None, Some(take(bytes, &mut at, 4)?)),
            other => return Err(format!("wire type {other} of field {field}")),
        };
        let mismatch = || format!("field {field} has wire type {wire}");
        out = match (field, raw_varint, raw_bytes) {
            (1, None, Some(b)) if wire == 2 => Scalar::Bytes(b),
            (2, None, Some(b)) if wire == 2 => Scalar::String(b),
            // int32 is sign-extended to 64 bits on the wire; its low 32 bits are the value.
            (3, Some(v), None) => Scalar::Int(i64::from(v as u32 as i32)),
            (4, Some(v), None) => Scalar::Int(v as i64),
            (5, None, Some(b)) if wire == 1 => {
                Scalar::Float(f64::from_le_bytes(b.try_into().map_err(|_| mismatch())?))
            }
            (6, None, Some(b)) if wire == 5 => Scalar::Float(f64::from(f32::from_le_bytes(
                b.try_into().map_err(|_| mismatch())?,
            ))),
            (7, Some(v), None) => Scalar::Bool(v != 0),
            (8, Some(v), None) => Scalar::Timestamp(v as i64),
            (1..=8, _, _) => return Err(mismatch()),
            (19, _, _) => Scalar::Null,
            (other, _, _) => Scalar::Other(other),
        };
    }
    Ok(out)
}

/// Feast's null timestamp (`NaT` as an int64).
const NULL_TIMESTAMP: i64 = i64::MIN;

enum Column {
    Raw(BinaryBuilder),
    Bytes(BinaryBuilder),
    String(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Raw => Column::Raw(BinaryBuilder::new()),
            Kind::Bytes => Column::Bytes(BinaryBuilder::new()),
            Kind::String => Column::String(StringBuilder::new()),
            Kind::Int => Column::Int(Int64Builder::new()),
            Kind::Float => Column::Float(Float64Builder::new()),
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Timestamp => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    fn null(&mut self) {
        match self {
            Column::Raw(b) | Column::Bytes(b) => b.append_null(),
            Column::String(b) => b.append_null(),
            Column::Int(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
        }
    }

    /// Appends the stored value `stored` (a serialized `ValueProto`).
    fn append(&mut self, stored: &[u8]) -> Result<(), String> {
        if let Column::Raw(b) = self {
            b.append_value(stored);
            return Ok(());
        }
        let value = decode(stored)?;
        match (self, value) {
            (c, Scalar::Null) => c.null(),
            (Column::Bytes(b), Scalar::Bytes(v)) => b.append_value(v),
            (Column::String(b), Scalar::String(v)) => {
                b.append_value(std::str::from_utf8(v).map_err(|_| "a string is not UTF-8")?)
            }
            (Column::Int(b), Scalar::Int(v)) => b.append_value(v),
            (Column::Float(b), Scalar::Float(v)) => b.append_value(v),
            (Column::Bool(b), Scalar::Bool(v)) => b.append_value(v),
            (Column::Timestamp(b), Scalar::Timestamp(NULL_TIMESTAMP)) => b.append_null(),
            (Column::Timestamp(b), Scalar::Timestamp(secs)) => b.append_value(
                secs.checked_mul(1_000_000)
                    .ok_or("a timestamp out of range")?,
            ),
            (_, other) => return Err(format!("holds {other:?}, not the view's type")),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Raw(mut b) | Column::Bytes(mut b) => Arc::new(b.finish()),
            Column::String(mut b) => Arc::new(b.finish()),
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Timestamp(mut b) => Arc::new(b.finish()),
        }
    }
}

/// One feature view's rows: `values[i * (n + 1) + j]` is row `i`'s stored value of column `j`
/// (the last column is the row's event time, 8 bytes little-endian microseconds). A row with
/// no event time, or one older than `expired_before`, is all null (not stored, or expired).
pub fn build(
    names: &[String],
    kinds: &[Kind],
    rows: usize,
    values: &[Option<Vec<u8>>],
    expired_before: Option<i64>,
) -> Result<RecordBatch, String> {
    let width = names.len() + 1;
    let mut columns: Vec<Column> = kinds.iter().map(|k| Column::new(*k)).collect();
    for i in 0..rows {
        let row = &values[i * width..(i + 1) * width];
        let micros = match &row[width - 1] {
            Some(ts) => Some(i64::from_le_bytes(ts.as_slice().try_into().map_err(
                |_| format!("the event time of row {i} is {} bytes, not 8", ts.len()),
            )?)),
            None => None,
        };
        let served = micros.is_some_and(|m| expired_before.is_none_or(|e| m >= e));
        for (j, column) in columns.iter_mut().enumerate() {
            match (&row[j], served) {
                (Some(stored), true) => column
                    .append(stored)
                    .map_err(|e| format!("field {:?}: {e}", names[j]))?,
                _ => column.null(),
            }
        }
    }
    let arrays: Vec<ArrayRef> = columns.into_iter().map(Column::finish).collect();
    let fields: Vec<Field> = names
        .iter()
        .zip(&arrays)
        .map(|(n, a)| Field::new(n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(field: u32, wire: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = (u64::from(field) << 3) | wire;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn scalars_decode_and_hostile_bytes_are_errors() {
        // int64 -5: ten-byte varint.
        let mut neg = tagged(4, 0);
        neg.extend([0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(decode(&neg), Ok(Scalar::Int(-5)));
        let mut int32 = tagged(3, 0);
        int32.extend([0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(decode(&int32), Ok(Scalar::Int(-5)));
        let mut f = tagged(6, 5);
        f.extend(1.5f32.to_le_bytes());
        assert_eq!(decode(&f), Ok(Scalar::Float(1.5)));
        let mut s = tagged(2, 2);
        s.extend([2, b'h', b'i']);
        assert_eq!(decode(&s), Ok(Scalar::String(b"hi")));
        assert_eq!(decode(&[]), Ok(Scalar::Null));
        let mut list = tagged(14, 2);
        list.extend([0]);
        assert_eq!(decode(&list), Ok(Scalar::Other(14)));
        // Truncated, overlong, wrong wire type: errors, never panics.
        assert!(decode(&s[..3]).is_err());
        assert!(
            decode(&[
                0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .is_err()
        );
        assert!(decode(&tagged(4, 2)).is_err());
        assert!(decode(&[0x0f]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..4000usize {
            let bytes: Vec<u8> = (0..len % 40)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
