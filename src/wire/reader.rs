//! A bounds-checked reader over a frame payload.
//!
//! Every read checks the remaining length before it touches a byte; byte strings are zero-copy
//! slices of the payload. A length is compared with its limit first (so the error names the limit)
//! and then with the bytes left; an element count is capped by its limit and by
//! `remaining / smallest_element_bytes` before anything is allocated for it.

use byteorder::{BigEndian, ByteOrder};
use bytes::Bytes;

use super::WireError;
use crate::kv::codec::FieldName;

pub(crate) struct PayloadReader {
    payload: Bytes,
    message: &'static str,
}

impl PayloadReader {
    pub fn new(payload: Bytes, message: &'static str) -> PayloadReader {
        PayloadReader { payload, message }
    }

    fn take(&mut self, field: impl FieldName, len: usize) -> Result<Bytes, WireError> {
        let left = self.payload.len();
        if len > left {
            return Err(WireError::Truncated { field: field.render(), needed: len, left });
        }
        Ok(self.payload.split_to(len))
    }

    fn take_array<const N: usize>(&mut self, field: impl FieldName) -> Result<[u8; N], WireError> {
        let left = self.payload.len();
        match self.payload.get(..N).and_then(|s| <[u8; N]>::try_from(s).ok()) {
            Some(array) => {
                let _ = self.payload.split_to(N);
                Ok(array)
            }
            None => Err(WireError::Truncated { field: field.render(), needed: N, left }),
        }
    }

    pub fn u8(&mut self, field: impl FieldName) -> Result<u8, WireError> {
        Ok(self.take_array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: impl FieldName) -> Result<u16, WireError> {
        Ok(BigEndian::read_u16(&self.take_array::<2>(field)?))
    }

    pub fn u32(&mut self, field: impl FieldName) -> Result<u32, WireError> {
        Ok(BigEndian::read_u32(&self.take_array::<4>(field)?))
    }

    pub fn u64(&mut self, field: impl FieldName) -> Result<u64, WireError> {
        Ok(BigEndian::read_u64(&self.take_array::<8>(field)?))
    }

    pub fn bool(&mut self, field: impl FieldName) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(field, format!("{other} is not a bool (0 or 1)"))),
        }
    }

    /// `u32` length, then that many bytes (a slice of the payload, no copy).
    pub fn bytes(&mut self, field: impl FieldName, max: usize) -> Result<Bytes, WireError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(WireError::LimitExceeded { field: field.render(), len: len as u64, max: max as u64 });
        }
        self.take(field, len)
    }

    /// `u8` presence flag (0 or 1), then `bytes` if present.
    pub fn optional_bytes(&mut self, field: impl FieldName, max: usize) -> Result<Option<Bytes>, WireError> {
        if self.bool(field)? {
            Ok(Some(self.bytes(field, max)?))
        } else {
            Ok(None)
        }
    }

    /// `bytes` that must be valid UTF-8.
    pub fn string(&mut self, field: impl FieldName, max: usize) -> Result<String, WireError> {
        let bytes = self.bytes(field, max)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid(field, "not valid UTF-8".to_string()))
    }

    /// A `u32` element count, checked against `max` and against the bytes left (each element takes
    /// at least `element_bytes_min`), so a caller may allocate `count` elements.
    pub fn count(&mut self, field: impl FieldName, max: usize, element_bytes_min: usize) -> Result<usize, WireError> {
        let count = self.u32(field)? as usize;
        if count > max {
            return Err(WireError::LimitExceeded { field: field.render(), len: count as u64, max: max as u64 });
        }
        let needed = count.saturating_mul(element_bytes_min);
        if needed > self.payload.len() {
            return Err(WireError::Truncated { field: field.render(), needed, left: self.payload.len() });
        }
        Ok(count)
    }

    /// Payload bytes not read yet (for a trailing optional extension).
    pub fn remaining(&self) -> usize {
        self.payload.len()
    }

    pub fn finish(self) -> Result<(), WireError> {
        if self.payload.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes { message: self.message, count: self.payload.len() })
        }
    }
}

pub(crate) fn invalid(field: impl FieldName, reason: String) -> WireError {
    WireError::InvalidField { field: field.render(), reason }
}
