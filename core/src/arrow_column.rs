//! A field's Arrow column, by its type: the one place that maps ikv's five field types to
//! Arrow arrays and builders. Snapshot files, import runs, the reader's bootstrap and the
//! Python crate's tables all go through it, so a sixth type is added here once.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray,
};
use arrow_schema::DataType;

use crate::value::{FieldType, ValueRef};

/// The Arrow type a field of type `t` is stored as.
pub fn data_type(t: FieldType) -> DataType {
    match t {
        FieldType::String => DataType::Utf8,
        FieldType::Bytes => DataType::Binary,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
    }
}

/// Builds one field's column a value at a time.
pub enum ColumnBuilder {
    String(StringBuilder),
    Bytes(BinaryBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
}

impl ColumnBuilder {
    pub fn new(t: FieldType) -> Self {
        match t {
            FieldType::String => ColumnBuilder::String(StringBuilder::new()),
            FieldType::Bytes => ColumnBuilder::Bytes(BinaryBuilder::new()),
            FieldType::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            FieldType::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            FieldType::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
        }
    }

    /// Appends the value if it has this column's type, else a null.
    pub fn append(&mut self, value: Option<ValueRef<'_>>) {
        match (self, value) {
            (ColumnBuilder::String(b), Some(ValueRef::String(v))) => b.append_value(v),
            (ColumnBuilder::Bytes(b), Some(ValueRef::Bytes(v))) => b.append_value(v),
            (ColumnBuilder::Int64(b), Some(ValueRef::Int64(v))) => b.append_value(v),
            (ColumnBuilder::Float64(b), Some(ValueRef::Float64(v))) => b.append_value(v),
            (ColumnBuilder::Bool(b), Some(ValueRef::Bool(v))) => b.append_value(v),
            (ColumnBuilder::String(b), _) => b.append_null(),
            (ColumnBuilder::Bytes(b), _) => b.append_null(),
            (ColumnBuilder::Int64(b), _) => b.append_null(),
            (ColumnBuilder::Float64(b), _) => b.append_null(),
            (ColumnBuilder::Bool(b), _) => b.append_null(),
        }
    }

    /// The column built so far (the builder starts again empty).
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::String(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// One field's column of a record batch, downcast once to its type, read a row at a time.
pub enum TypedColumn<'a> {
    String(&'a StringArray),
    Bytes(&'a BinaryArray),
    Int64(&'a Int64Array),
    Float64(&'a Float64Array),
    Bool(&'a BooleanArray),
}

impl<'a> TypedColumn<'a> {
    /// `array` as a column of type `t`; `None` when it is of another Arrow type (bytes from a
    /// file are input: the caller says which file and column).
    pub fn of(array: &'a dyn Array, t: FieldType) -> Option<Self> {
        let any = array.as_any();
        Some(match t {
            FieldType::String => TypedColumn::String(any.downcast_ref()?),
            FieldType::Bytes => TypedColumn::Bytes(any.downcast_ref()?),
            FieldType::Int64 => TypedColumn::Int64(any.downcast_ref()?),
            FieldType::Float64 => TypedColumn::Float64(any.downcast_ref()?),
            FieldType::Bool => TypedColumn::Bool(any.downcast_ref()?),
        })
    }

    /// Row `i`'s value, `None` when it is null. `i` must be below the batch's row count.
    pub fn value(&self, i: usize) -> Option<ValueRef<'a>> {
        match self {
            TypedColumn::String(a) => a.is_valid(i).then(|| ValueRef::String(a.value(i))),
            TypedColumn::Bytes(a) => a.is_valid(i).then(|| ValueRef::Bytes(a.value(i))),
            TypedColumn::Int64(a) => a.is_valid(i).then(|| ValueRef::Int64(a.value(i))),
            TypedColumn::Float64(a) => a.is_valid(i).then(|| ValueRef::Float64(a.value(i))),
            TypedColumn::Bool(a) => a.is_valid(i).then(|| ValueRef::Bool(a.value(i))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_builds_and_reads_back_with_nulls() {
        let values = [
            ValueRef::String("s"),
            ValueRef::Bytes(b"b"),
            ValueRef::Int64(-7),
            ValueRef::Float64(2.5),
            ValueRef::Bool(true),
        ];
        for v in values {
            let t = v.field_type();
            let mut b = ColumnBuilder::new(t);
            b.append(Some(v));
            b.append(None);
            // A value of another type is a null, never a wrong value.
            b.append(Some(if t == FieldType::Bool {
                ValueRef::Int64(1)
            } else {
                ValueRef::Bool(true)
            }));
            let array = b.finish();
            assert_eq!(array.data_type(), &data_type(t));
            let col = TypedColumn::of(array.as_ref(), t).unwrap();
            assert_eq!(col.value(0), Some(v));
            assert_eq!(col.value(1), None);
            assert_eq!(col.value(2), None);
            let other = if t == FieldType::Int64 {
                FieldType::Bool
            } else {
                FieldType::Int64
            };
            assert!(TypedColumn::of(array.as_ref(), other).is_none());
        }
    }
}
