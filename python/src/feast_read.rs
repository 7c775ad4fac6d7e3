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
use arrow_array::{Array, ArrayRef, NullArray, RecordBatch};
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

/// What is kept of one stored value until its row's event time is known: scalars as they
/// are, bytes and strings as a range of one shared buffer (no allocation per value).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Missing,
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(i64),
    /// `start, len` in the buffer.
    Span(usize, usize),
}

/// Collects one feature view's values as a multiget visits them (`visit`), then builds the
/// view's columns (`finish`). Column `kinds.len()` is the row's event time (8 bytes,
/// little-endian microseconds); a row without one, or older than `expired_before`, is all
/// null (never written, or expired).
pub struct Collector {
    names: Vec<String>,
    kinds: Vec<Kind>,
    cells: Vec<Cell>,
    times: Vec<Option<i64>>,
    buffer: Vec<u8>,
    error: Option<String>,
}

impl Collector {
    pub fn new(names: Vec<String>, kinds: Vec<Kind>, rows: usize) -> Collector {
        Collector {
            names,
            cells: vec![Cell::Missing; rows * kinds.len()],
            times: vec![None; rows],
            kinds,
            buffer: Vec::new(),
            error: None,
        }
    }

    fn span(&mut self, bytes: &[u8]) -> Cell {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(bytes);
        Cell::Span(start, bytes.len())
    }

    /// Row `row`'s stored value of column `column` (the event time when `column` is the
    /// number of kinds). The first malformed value is kept as the error `finish` returns.
    pub fn visit(&mut self, row: usize, column: usize, stored: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let Some(kind) = self.kinds.get(column).copied() else {
            match <[u8; 8]>::try_from(stored) {
                Ok(b) => self.times[row] = Some(i64::from_le_bytes(b)),
                Err(_) => {
                    self.error = Some(format!(
                        "the event time of row {row} is {} bytes, not 8",
                        stored.len()
                    ))
                }
            }
            return;
        };
        let cell = if kind == Kind::Raw {
            self.span(stored)
        } else {
            match decode(stored) {
                Err(e) => {
                    self.error = Some(format!("field {:?}: {e}", self.names[column]));
                    return;
                }
                Ok(value) => match (kind, value) {
                    (_, Scalar::Null) => Cell::Missing,
                    (Kind::Bytes, Scalar::Bytes(v)) => self.span(v),
                    (Kind::String, Scalar::String(v)) => {
                        if std::str::from_utf8(v).is_err() {
                            self.error = Some(format!(
                                "field {:?}: a string is not UTF-8",
                                self.names[column]
                            ));
                            return;
                        }
                        self.span(v)
                    }
                    (Kind::Int, Scalar::Int(v)) => Cell::Int(v),
                    (Kind::Float, Scalar::Float(v)) => Cell::Float(v),
                    (Kind::Bool, Scalar::Bool(v)) => Cell::Bool(v),
                    (Kind::Timestamp, Scalar::Timestamp(NULL_TIMESTAMP)) => Cell::Missing,
                    (Kind::Timestamp, Scalar::Timestamp(secs)) => match secs.checked_mul(1_000_000)
                    {
                        Some(micros) => Cell::Timestamp(micros),
                        None => {
                            self.error = Some(format!(
                                "field {:?}: a timestamp out of range",
                                self.names[column]
                            ));
                            return;
                        }
                    },
                    (_, other) => {
                        self.error = Some(format!(
                            "field {:?} holds {other:?}, not the view's type",
                            self.names[column]
                        ));
                        return;
                    }
                },
            }
        };
        self.cells[row * self.kinds.len() + column] = cell;
    }

    /// The columns; a malformed value met by `visit` is the error, naming its field.
    pub fn finish(self, expired_before: Option<i64>) -> Result<RecordBatch, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let width = self.kinds.len();
        let served: Vec<bool> = self
            .times
            .iter()
            .map(|t| t.is_some_and(|m| expired_before.is_none_or(|e| m >= e)))
            .collect();
        let rows = self.times.len();
        let buffer = &self.buffer;
        let span = |c: Cell| match c {
            Cell::Span(start, len) => Some(&buffer[start..start + len]),
            _ => None,
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(width);
        for (j, kind) in self.kinds.iter().enumerate() {
            let cells = (0..rows).map(|i| {
                if served[i] {
                    self.cells[i * width + j]
                } else {
                    Cell::Missing
                }
            });
            let array: ArrayRef = match kind {
                Kind::Raw | Kind::Bytes => {
                    let mut b = BinaryBuilder::new();
                    cells.for_each(|c| b.append_option(span(c)));
                    Arc::new(b.finish())
                }
                Kind::String => {
                    let mut b = StringBuilder::new();
                    // Checked as UTF-8 when visited.
                    cells.for_each(|c| {
                        b.append_option(span(c).map(|v| std::str::from_utf8(v).unwrap_or_default()))
                    });
                    Arc::new(b.finish())
                }
                Kind::Int => {
                    let mut b = Int64Builder::with_capacity(rows);
                    cells.for_each(|c| {
                        b.append_option(if let Cell::Int(v) = c { Some(v) } else { None })
                    });
                    Arc::new(b.finish())
                }
                Kind::Float => {
                    let mut b = Float64Builder::with_capacity(rows);
                    cells.for_each(|c| {
                        b.append_option(if let Cell::Float(v) = c {
                            Some(v)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                Kind::Bool => {
                    let mut b = BooleanBuilder::with_capacity(rows);
                    cells.for_each(|c| {
                        b.append_option(if let Cell::Bool(v) = c { Some(v) } else { None })
                    });
                    Arc::new(b.finish())
                }
                Kind::Timestamp => {
                    let mut b =
                        TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
                    cells.for_each(|c| {
                        b.append_option(if let Cell::Timestamp(v) = c {
                            Some(v)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
            };
            // A column with no value at all is of type null, as Feast's `to_arrow()` types it.
            arrays.push(if array.null_count() == array.len() {
                Arc::new(NullArray::new(array.len()))
            } else {
                array
            });
        }
        let fields: Vec<Field> = self
            .names
            .iter()
            .zip(&arrays)
            .map(|(n, a)| Field::new(n, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
    }
}

/// `batch` with an int64 column `name` of `values` first (the join key's column, typed as
/// pyarrow types a list of Python ints).
pub fn with_int_column(
    batch: RecordBatch,
    name: &str,
    values: Vec<i64>,
) -> Result<RecordBatch, String> {
    let column: ArrayRef = Arc::new(arrow_array::Int64Array::from(values));
    let mut fields = vec![Arc::new(Field::new(name, column.data_type().clone(), true))];
    fields.extend(batch.schema().fields().iter().cloned());
    let mut columns = vec![column];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
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
    fn rows_without_or_past_their_event_time_are_null_and_bad_values_named() {
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        let names = vec!["v:a".to_string(), "v:s".to_string()];
        let mut int = tagged(4, 0);
        int.push(7);
        let mut s = tagged(2, 2);
        s.extend([1, b'x']);
        let mut c = Collector::new(names.clone(), vec![Kind::Int, Kind::String], 3);
        for row in 0..3 {
            c.visit(row, 0, &int);
            c.visit(row, 1, &s);
        }
        c.visit(0, 2, &100i64.to_le_bytes()); // served
        c.visit(1, 2, &10i64.to_le_bytes()); // expired
        // row 2: no event time (never written through the store)
        let batch = c.finish(Some(50)).unwrap();
        let a = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![Some(7), None, None]);
        assert_eq!(batch.column(1).as_string::<i32>().value(0), "x");
        assert_eq!(batch.column(1).null_count(), 2);

        let mut c = Collector::new(names.clone(), vec![Kind::Int, Kind::String], 1);
        c.visit(0, 1, &int);
        assert!(
            c.finish(None)
                .unwrap_err()
                .contains("field \"v:s\" holds Int(7)")
        );
        let mut c = Collector::new(names, vec![Kind::Int, Kind::String], 1);
        c.visit(0, 2, b"short");
        assert!(c.finish(None).unwrap_err().contains("5 bytes, not 8"));
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
