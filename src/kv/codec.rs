//! A bounds-checked reader for the kv byte formats (commands and snapshot images).
//!
//! Every read checks the remaining length before it looks at or copies a byte, so a corrupt length
//! field produces [`KvError::Truncated`] or [`KvError::LimitExceeded`], never a panic or a large
//! allocation. Integers are big-endian; byte strings are a `u32` length then the bytes.

use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, Bytes};

use super::KvError;

/// A field name for error messages, rendered only when an error is built.
pub(crate) trait FieldName: Copy {
    fn render(self) -> String;
}

impl FieldName for &str {
    fn render(self) -> String {
        self.to_string()
    }
}

/// A field of the `index`-th element of a list: renders as `list[index].field`.
#[derive(Clone, Copy)]
pub(crate) struct Indexed {
    pub list: &'static str,
    pub index: usize,
    pub field: &'static str,
}

impl FieldName for Indexed {
    fn render(self) -> String {
        format!("{}[{}].{}", self.list, self.index, self.field)
    }
}

pub(crate) struct Cursor<'a> {
    input: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(input: &'a [u8]) -> Cursor<'a> {
        Cursor { input }
    }

    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    fn take(&mut self, field: impl FieldName, len: usize) -> Result<&'a [u8], KvError> {
        if len > self.input.len() {
            return Err(KvError::Truncated { field: field.render(), needed: len, left: self.input.len() });
        }
        let (head, tail) = self.input.split_at(len);
        self.input = tail;
        Ok(head)
    }

    pub fn u8(&mut self, field: impl FieldName) -> Result<u8, KvError> {
        Ok(self.take(field, 1)?[0])
    }

    pub fn u32(&mut self, field: impl FieldName) -> Result<u32, KvError> {
        Ok(BigEndian::read_u32(self.take(field, 4)?))
    }

    pub fn u64(&mut self, field: impl FieldName) -> Result<u64, KvError> {
        Ok(BigEndian::read_u64(self.take(field, 8)?))
    }

    pub fn bool(&mut self, field: impl FieldName) -> Result<bool, KvError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => {
                Err(KvError::InvalidField { field: field.render(), reason: format!("{other} is not a bool (0 or 1)") })
            }
        }
    }

    /// A `u32` length then that many bytes, copied into a fresh `Bytes` (so the result never pins a
    /// larger buffer). The length is checked against `max` and against the input before copying.
    pub fn bytes(&mut self, field: impl FieldName, max: usize) -> Result<Bytes, KvError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(KvError::LimitExceeded { field: field.render(), len: len as u64, max: max as u64 });
        }
        Ok(Bytes::copy_from_slice(self.take(field, len)?))
    }

    /// A presence byte (0 absent, 1 present) then, if present, a byte string.
    pub fn optional_bytes(&mut self, field: impl FieldName, max: usize) -> Result<Option<Bytes>, KvError> {
        if self.bool(field)? {
            Ok(Some(self.bytes(field, max)?))
        } else {
            Ok(None)
        }
    }

    pub fn finish(self) -> Result<(), KvError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(KvError::TrailingBytes { count: self.input.len() })
        }
    }
}

/// Appends a `u32` length then the bytes. Callers have checked the length against a limit far below
/// `u32::MAX`.
pub(crate) fn put_bytes<B: BufMut>(out: &mut B, bytes: &[u8]) {
    debug_assert!(bytes.len() <= u32::MAX as usize);
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

pub(crate) fn put_optional_bytes<B: BufMut>(out: &mut B, bytes: Option<&Bytes>) {
    match bytes {
        None => out.put_u8(0),
        Some(bytes) => {
            out.put_u8(1);
            put_bytes(out, bytes);
        }
    }
}
