//! Histories as JSON lines: one operation per line, one flat JSON object per operation.
//!
//! ```text
//! {"client":3,"key":"k1","op":"set","value":"a","call":100,"ret":250,"outcome":"ok"}
//! {"client":4,"key":"k1","op":"get","call":120,"ret":300,"outcome":"ok","value":null}
//! {"client":3,"key":"k1","op":"delete","call":260,"ret":null,"outcome":"info"}
//! {"client":5,"key":"k1","op":"cas","expected":"a","new":"b","call":12003000,"ret":12104000,"outcome":"ok","result":"failed","current":"c"}
//! ```
//!
//! Fields (the writer emits them in this order; the parser accepts any order):
//! - `client`, `call`: non-negative integers (`u64`); `ret`: integer, or `null`/missing for none;
//! - `key`: byte string;
//! - `op`: `"set"` with `value` (byte string); `"get"`; `"delete"`; or `"cas"` with `expected`
//!   (byte string, or `null` for "must be absent") and `new` (byte string);
//! - `outcome`: `"ok"`, `"fail"` or `"info"`. Only `"ok"` carries a result: a get has `value`
//!   (byte string, or `null` for absent), a delete `existed` (`true`/`false`), a cas `result`
//!   (`"ok"`, or `"failed"` with `current`: byte string or `null`); a set has none.
//!
//! Every listed field is required except `ret`; unknown, duplicate or misplaced fields (a `value`
//! on a failed get, say) are errors, so a typo cannot silently change a history.
//!
//! Byte strings are JSON strings in which each character U+0000..U+00FF stands for the byte of
//! that value (Latin-1), so arbitrary bytes survive any JSON tool. The writer emits printable ASCII
//! as is, `"` and `\` as `\"` and `\\`, and every other byte as `\u00XX` (lower-case hex); the
//! parser also accepts the other JSON escapes (`\/ \b \f \n \r \t`) and raw characters up to
//! U+00FF, and refuses any character above U+00FF, raw control characters and bad escapes.
//!
//! The parser never panics; each error names its line (1-based; blank lines are skipped but
//! counted) and, for syntax errors, the byte column.

use std::fmt::{self, Write as _};

use bytes::Bytes;

use super::{CasResult, Op, OpKind, OpResult, Outcome};

/// A line of JSON-lines input that is not a valid operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The history as JSON lines, each line ending in `\n`.
pub fn to_json_lines(history: &[Op]) -> String {
    let mut text = String::new();
    for op in history {
        text.push_str(&op_to_json_line(op));
        text.push('\n');
    }
    text
}

/// One operation as a JSON object on one line (no newline).
pub fn op_to_json_line(op: &Op) -> String {
    let mut line = format!("{{\"client\":{},\"key\":{},\"op\":\"{}\"", op.client, json_bytes(&op.key), op.kind.name());
    match &op.kind {
        OpKind::Set { value } => write_field(&mut line, "value", &json_bytes(value)),
        OpKind::Get | OpKind::Delete => {}
        OpKind::Cas { expected, new } => {
            write_field(&mut line, "expected", &json_optional_bytes(expected));
            write_field(&mut line, "new", &json_bytes(new));
        }
    }
    write_field(&mut line, "call", &op.call.to_string());
    write_field(&mut line, "ret", &op.ret.map_or_else(|| "null".to_string(), |ret| ret.to_string()));
    let outcome = match op.outcome {
        Outcome::Ok(_) => "\"ok\"",
        Outcome::Fail => "\"fail\"",
        Outcome::Info => "\"info\"",
    };
    write_field(&mut line, "outcome", outcome);
    match &op.outcome {
        Outcome::Ok(OpResult::Get { value }) => write_field(&mut line, "value", &json_optional_bytes(value)),
        Outcome::Ok(OpResult::Delete { existed }) => write_field(&mut line, "existed", &existed.to_string()),
        Outcome::Ok(OpResult::Cas(CasResult::Ok)) => write_field(&mut line, "result", "\"ok\""),
        Outcome::Ok(OpResult::Cas(CasResult::Failed { current })) => {
            write_field(&mut line, "result", "\"failed\"");
            write_field(&mut line, "current", &json_optional_bytes(current));
        }
        Outcome::Ok(OpResult::Set) | Outcome::Fail | Outcome::Info => {}
    }
    line.push('}');
    line
}

fn write_field(line: &mut String, name: &str, json: &str) {
    let _ = write!(line, ",\"{name}\":{json}");
}

fn json_bytes(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() + 2);
    text.push('"');
    for &byte in bytes {
        match byte {
            b'"' => text.push_str("\\\""),
            b'\\' => text.push_str("\\\\"),
            0x20..=0x7e => text.push(byte as char),
            _ => {
                let _ = write!(text, "\\u{byte:04x}");
            }
        }
    }
    text.push('"');
    text
}

fn json_optional_bytes(bytes: &Option<Bytes>) -> String {
    bytes.as_ref().map_or_else(|| "null".to_string(), |bytes| json_bytes(bytes))
}

/// Parses JSON lines (see the module doc), skipping blank lines.
pub fn parse_json_lines(text: &str) -> Result<Vec<Op>, ParseError> {
    let mut history = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op = op_from_json_line(line).map_err(|message| ParseError { line: number + 1, message })?;
        history.push(op);
    }
    Ok(history)
}

/// Parses one line holding one operation.
pub fn op_from_json_line(line: &str) -> Result<Op, String> {
    let mut fields = Fields { fields: Cursor { text: line, position: 0 }.object()? };
    let client = fields.integer("client")?;
    let key = fields.bytes("key")?;
    let kind = match fields.string("op")?.as_slice() {
        b"set" => OpKind::Set { value: fields.bytes("value")? },
        b"get" => OpKind::Get,
        b"delete" => OpKind::Delete,
        b"cas" => OpKind::Cas { expected: fields.optional_bytes("expected")?, new: fields.bytes("new")? },
        other => return Err(format!("unknown op {:?}", String::from_utf8_lossy(other))),
    };
    let call = fields.integer("call")?;
    let ret = fields.optional_integer("ret")?;
    let outcome = match fields.string("outcome")?.as_slice() {
        b"ok" => Outcome::Ok(fields.result(&kind)?),
        b"fail" => Outcome::Fail,
        b"info" => Outcome::Info,
        other => return Err(format!("unknown outcome {:?}", String::from_utf8_lossy(other))),
    };
    fields.finish()?;
    let op = Op { client, key, call, ret, kind, outcome };
    op.validate()?;
    Ok(op)
}

/// A parsed JSON value of the kinds this format uses.
#[derive(Debug)]
enum Value {
    String(Vec<u8>),
    Integer(u64),
    Bool(bool),
    Null,
}

/// The fields of one object, consumed by name.
struct Fields {
    fields: Vec<(Vec<u8>, Value)>,
}

impl Fields {
    /// Removes field `name`; `None` if it is missing.
    fn take(&mut self, name: &str) -> Option<Value> {
        let position = self.fields.iter().position(|(field, _)| field == name.as_bytes())?;
        Some(self.fields.swap_remove(position).1)
    }

    fn required(&mut self, name: &str) -> Result<Value, String> {
        self.take(name).ok_or_else(|| format!("missing field \"{name}\""))
    }

    fn integer(&mut self, name: &str) -> Result<u64, String> {
        match self.required(name)? {
            Value::Integer(value) => Ok(value),
            other => Err(wrong_type(name, "a non-negative integer", &other)),
        }
    }

    fn optional_integer(&mut self, name: &str) -> Result<Option<u64>, String> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Integer(value)) => Ok(Some(value)),
            Some(other) => Err(wrong_type(name, "a non-negative integer or null", &other)),
        }
    }

    fn string(&mut self, name: &str) -> Result<Vec<u8>, String> {
        match self.required(name)? {
            Value::String(bytes) => Ok(bytes),
            other => Err(wrong_type(name, "a string", &other)),
        }
    }

    fn bytes(&mut self, name: &str) -> Result<Bytes, String> {
        self.string(name).map(Bytes::from)
    }

    /// A required field holding a byte string or `null`.
    fn optional_bytes(&mut self, name: &str) -> Result<Option<Bytes>, String> {
        match self.required(name)? {
            Value::String(bytes) => Ok(Some(Bytes::from(bytes))),
            Value::Null => Ok(None),
            other => Err(wrong_type(name, "a string or null", &other)),
        }
    }

    fn boolean(&mut self, name: &str) -> Result<bool, String> {
        match self.required(name)? {
            Value::Bool(value) => Ok(value),
            other => Err(wrong_type(name, "true or false", &other)),
        }
    }

    /// The result fields of an `"ok"` operation of `kind`.
    fn result(&mut self, kind: &OpKind) -> Result<OpResult, String> {
        Ok(match kind {
            OpKind::Set { .. } => OpResult::Set,
            OpKind::Get => OpResult::Get { value: self.optional_bytes("value")? },
            OpKind::Delete => OpResult::Delete { existed: self.boolean("existed")? },
            OpKind::Cas { .. } => match self.string("result")?.as_slice() {
                b"ok" => OpResult::Cas(CasResult::Ok),
                b"failed" => OpResult::Cas(CasResult::Failed { current: self.optional_bytes("current")? }),
                other => return Err(format!("unknown cas result {:?}", String::from_utf8_lossy(other))),
            },
        })
    }

    /// Fails on any field no one took.
    fn finish(self) -> Result<(), String> {
        match self.fields.first() {
            None => Ok(()),
            Some((name, _)) => Err(format!("unexpected field \"{}\"", String::from_utf8_lossy(name))),
        }
    }
}

fn wrong_type(name: &str, expected: &str, found: &Value) -> String {
    let found = match found {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    format!("field \"{name}\" must be {expected}, not {found}")
}

/// A position in one line of input.
struct Cursor<'a> {
    text: &'a str,
    /// Byte offset; always on a character boundary.
    position: usize,
}

impl Cursor<'_> {
    fn error(&self, message: &str) -> String {
        format!("{message} at column {}", self.position + 1)
    }

    fn peek(&self) -> Option<char> {
        self.text.get(self.position..).and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.position += c.len_utf8();
        Some(c)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
            self.position += 1;
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), String> {
        self.skip_whitespace();
        match self.bump() {
            Some(c) if c == wanted => Ok(()),
            Some(c) => Err(self.error(&format!("expected '{wanted}', found {c:?}"))),
            None => Err(self.error(&format!("expected '{wanted}', found end of line"))),
        }
    }

    /// A whole line: one flat object, nothing after it.
    fn object(&mut self) -> Result<Vec<(Vec<u8>, Value)>, String> {
        self.expect('{')?;
        let mut fields: Vec<(Vec<u8>, Value)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some('}') {
            self.position += 1;
        } else {
            loop {
                self.skip_whitespace();
                let name = self.string()?;
                if fields.iter().any(|(field, _)| *field == name) {
                    return Err(self.error(&format!("duplicate field \"{}\"", String::from_utf8_lossy(&name))));
                }
                self.expect(':')?;
                let value = self.value()?;
                fields.push((name, value));
                self.skip_whitespace();
                match self.bump() {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return Err(self.error("expected ',' or '}'")),
                }
            }
        }
        self.skip_whitespace();
        match self.peek() {
            None => Ok(fields),
            Some(_) => Err(self.error("unexpected text after the object")),
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_whitespace();
        match self.peek() {
            Some('"') => self.string().map(Value::String),
            Some('0'..='9') => self.integer().map(Value::Integer),
            Some(c) if c.is_ascii_alphabetic() => self.word(),
            Some(c) => {
                Err(self.error(&format!("unexpected {c:?} (values are strings, integers, true, false or null)")))
            }
            None => Err(self.error("expected a value, found end of line")),
        }
    }

    fn word(&mut self) -> Result<Value, String> {
        let start = self.position;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            self.position += 1;
        }
        match self.text.get(start..self.position) {
            Some("true") => Ok(Value::Bool(true)),
            Some("false") => Ok(Value::Bool(false)),
            Some("null") => Ok(Value::Null),
            _ => Err(format!("unknown literal at column {}", start + 1)),
        }
    }

    fn integer(&mut self) -> Result<u64, String> {
        let start = self.position;
        let mut value: u64 = 0;
        while let Some(digit) = self.peek().and_then(|c| c.to_digit(10)) {
            if self.position > start && value == 0 {
                return Err(self.error("leading zero in integer"));
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
                .ok_or_else(|| format!("integer at column {} does not fit in 64 bits", start + 1))?;
            self.position += 1;
        }
        if matches!(self.peek(), Some('.' | 'e' | 'E')) {
            return Err(self.error("only integers are allowed"));
        }
        Ok(value)
    }

    /// A JSON string decoded as bytes, one byte per character U+0000..U+00FF.
    fn string(&mut self) -> Result<Vec<u8>, String> {
        self.expect('"')?;
        let mut bytes = Vec::new();
        loop {
            let c = match self.bump() {
                None => return Err(self.error("unterminated string")),
                Some('"') => return Ok(bytes),
                Some('\\') => self.escape()?,
                Some(c) if (c as u32) < 0x20 => return Err(self.error("raw control character in string")),
                Some(c) => c,
            };
            let byte = u8::try_from(u32::from(c))
                .map_err(|_| self.error(&format!("character {c:?} is above U+00FF, so no byte")))?;
            bytes.push(byte);
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        Ok(match self.bump() {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('/') => '/',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => {
                let hex = self.text.get(self.position..self.position + 4).unwrap_or("");
                let code = u32::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| self.error("\\u must be followed by four hex digits"))?;
                self.position += 4;
                char::from_u32(code).ok_or_else(|| self.error("\\u escape of a surrogate"))?
            }
            _ => return Err(self.error("unknown escape")),
        })
    }
}
