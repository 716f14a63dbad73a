//! HTTP/1.1 for a tiny GET-only server, without I/O: an incremental request parser
//! ([`RequestParser`]) and a response writer ([`Response`]). The reactor feeds the parser whatever
//! a socket read returned and queues the writer's [`Bytes`] on the connection.
//!
//! Guarantees and invariants:
//! - Input may arrive split anywhere (one byte at a time is fine) and several pipelined requests
//!   may arrive in one read; requests come out in order, each exactly once.
//! - Memory is bounded: the parser holds at most one partial request head
//!   ([`REQUEST_HEAD_BYTES_MAX`]) plus whatever the last [`RequestParser::feed`] delivered beyond
//!   it, provided the caller drains [`RequestParser::next_request`] after each feed.
//! - No request body is ever accepted, so the end of a head is the end of its request.
//! - The parser never panics on any input. After an error it is poisoned: every later call
//!   returns the same error, and the caller must send [`HttpError::response`] and close.
//! - After a request that ends the connection (`keep_alive == false`) it yields nothing more and
//!   discards further input: the reply to that request is the last on the connection.
//!
//! Status choices (RFC 9110/9112 names):
//! - `400 Bad Request`: malformed request line, request target or header line (including
//!   obsolete line folding, whitespace before a colon, control characters, a bare CR), a
//!   malformed `HTTP-version`, an invalid or repeated `Content-Length`, a repeated `Host`.
//! - `505 HTTP Version Not Supported`: a well-formed version other than HTTP/1.0 and HTTP/1.1
//!   (e.g. `HTTP/2.0`); malformed versions (`HTTP/1`, `HTTX/1.1`) are `400`.
//! - `405 Method Not Allowed` with `Allow: GET, HEAD`: a valid method token other than GET or HEAD
//!   (methods are case-sensitive, so `get` is 405 too).
//! - `414 URI Too Long`: a request line longer than [`REQUEST_LINE_BYTES_MAX`] (RFC 9112 §3
//!   prescribes 414 for a request target longer than the server will parse).
//! - `431 Request Header Fields Too Large`: more than [`HEADER_COUNT_MAX`] header fields, or a head
//!   longer than [`REQUEST_HEAD_BYTES_MAX`].
//! - `413 Content Too Large`: the request announces a body — `Content-Length` above 0, or any
//!   `Transfer-Encoding` (we never read bodies, so we could not find where the next request starts).
//!
//! Tolerated: a missing `Host` on HTTP/1.1 (RFC 9112 says 400, but this endpoint serves one
//! virtual host and a hand-typed `printf ... | nc` request should work); bare LF line endings
//! (RFC 9112 §2.2 allows recipients to accept them); empty lines before the request line (§2.2).
//! Only origin-form targets (`/path?query`) are accepted. The path is not percent-decoded.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Longest request head accepted: request line, header lines and the empty line that ends the
/// head, line terminators included. A head of exactly this many bytes is accepted.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Longest request line accepted, without its line terminator.
pub const REQUEST_LINE_BYTES_MAX: usize = 2 * 1024;
/// Most header fields accepted in one request.
pub const HEADER_COUNT_MAX: usize = 64;

/// `Content-Type` of plain-text bodies (errors, `/health`).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// `Content-Type` of JSON bodies (`/status`).
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The methods this server implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    /// As GET, but the response carries headers only.
    Head,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One parsed request head. Strings hold ASCII only (the target) or lossily decoded bytes (Host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    /// The target up to the first `?`, starting with `/`; not percent-decoded.
    pub path: String,
    /// The target after the first `?`, if there is one (possibly empty).
    pub query: Option<String>,
    pub host: Option<String>,
    /// Whether the connection stays open after the response: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// The response statuses this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    /// The request head did not arrive in time (the server's slow-loris deadline).
    RequestTimeout,
    ContentTooLarge,
    UriTooLong,
    RequestHeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
    HttpVersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::RequestHeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
            Status::HttpVersionNotSupported => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::ContentTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::HttpVersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// Why a request was refused. Each maps to one [`Status`]; the connection is closed after the
/// error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    MalformedRequestLine,
    /// The target is not origin-form or holds a byte outside visible ASCII.
    InvalidTarget,
    MalformedHeader,
    /// A well-formed HTTP version other than 1.0 and 1.1.
    UnsupportedVersion,
    MethodNotAllowed,
    RequestLineTooLong,
    HeadTooLarge,
    TooManyHeaders,
    /// `Content-Length` above 0 or any `Transfer-Encoding`.
    BodyNotAllowed,
    InvalidContentLength,
    DuplicateHost,
}

impl HttpError {
    pub fn status(self) -> Status {
        match self {
            HttpError::MalformedRequestLine
            | HttpError::InvalidTarget
            | HttpError::MalformedHeader
            | HttpError::InvalidContentLength
            | HttpError::DuplicateHost => Status::BadRequest,
            HttpError::UnsupportedVersion => Status::HttpVersionNotSupported,
            HttpError::MethodNotAllowed => Status::MethodNotAllowed,
            HttpError::RequestLineTooLong => Status::UriTooLong,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => Status::RequestHeaderFieldsTooLarge,
            HttpError::BodyNotAllowed => Status::ContentTooLarge,
        }
    }

    /// The complete response to send before closing: the status, `Connection: close`, a one-line
    /// text body, and `Allow: GET, HEAD` for 405. Sent with a body even to a HEAD request, since
    /// the method of an unparsable request is not known.
    pub fn response(self) -> Bytes {
        let body = format!("{}\n", self);
        let allow: &[(&str, &str)] = &[("Allow", "GET, HEAD")];
        let headers = if self == HttpError::MethodNotAllowed { allow } else { &[] };
        Response::new(self.status(), CONTENT_TYPE_TEXT, body.as_bytes()).with_headers(headers).to_bytes(Method::Get)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            HttpError::MalformedRequestLine => "malformed request line",
            HttpError::InvalidTarget => "request target must be a path of visible ASCII starting with /",
            HttpError::MalformedHeader => "malformed header field",
            HttpError::UnsupportedVersion => "only HTTP/1.0 and HTTP/1.1 are supported",
            HttpError::MethodNotAllowed => "only GET and HEAD are allowed",
            HttpError::RequestLineTooLong => "request line too long",
            HttpError::HeadTooLarge => "request head too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::BodyNotAllowed => "request bodies are not accepted",
            HttpError::InvalidContentLength => "invalid Content-Length",
            HttpError::DuplicateHost => "more than one Host header",
        };
        f.write_str(text)
    }
}

impl std::error::Error for HttpError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ParserState {
    Open,
    /// A request asked to close the connection; later input is ignored.
    Closed,
    Poisoned(HttpError),
}

/// Turns a byte stream into [`Request`]s: [`feed`](RequestParser::feed) bytes as they arrive,
/// then call [`next_request`](RequestParser::next_request) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct RequestParser {
    buffer: BytesMut,
    /// Start of the first line of the current head not yet scanned; every line before it is
    /// complete and within bounds. Makes scanning linear however the input is split.
    scanned_bytes: usize,
    request_line_seen: bool,
    header_count: usize,
    /// Length of the current head once its end has been found.
    head_bytes: Option<usize>,
    state: ParserState,
}

impl Default for RequestParser {
    fn default() -> Self {
        RequestParser::new()
    }
}

impl RequestParser {
    pub fn new() -> RequestParser {
        RequestParser {
            buffer: BytesMut::new(),
            scanned_bytes: 0,
            request_line_seen: false,
            header_count: 0,
            head_bytes: None,
            state: ParserState::Open,
        }
    }

    /// Bytes received but not yet returned as requests.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// A request ended the connection: nothing more will come out, and input is discarded.
    pub fn is_closed(&self) -> bool {
        self.state == ParserState::Closed
    }

    /// Appends received bytes and checks the bounds of the current head as far as it arrived, so
    /// an oversized head is refused without waiting for its end. Errors poison the parser.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        match self.state {
            ParserState::Poisoned(error) => return Err(error),
            ParserState::Closed => return Ok(()),
            ParserState::Open => {}
        }
        self.buffer.extend_from_slice(bytes);
        self.scan_head().map(|_| ())
    }

    /// The next complete request, `Ok(None)` if more bytes are needed (or the connection is
    /// closing), or the error that poisoned the parser.
    pub fn next_request(&mut self) -> Result<Option<Request>, HttpError> {
        match self.state {
            ParserState::Poisoned(error) => return Err(error),
            ParserState::Closed => return Ok(None),
            ParserState::Open => {}
        }
        let Some(head_bytes) = self.scan_head()? else {
            return Ok(None);
        };
        let head = self.buffer.split_to(head_bytes);
        self.scanned_bytes = 0;
        self.request_line_seen = false;
        self.header_count = 0;
        self.head_bytes = None;
        let request = parse_head(&head).map_err(|error| self.poison(error))?;
        if !request.keep_alive {
            self.state = ParserState::Closed;
            self.buffer = BytesMut::new();
        }
        Ok(Some(request))
    }

    fn poison(&mut self, error: HttpError) -> HttpError {
        self.state = ParserState::Poisoned(error);
        self.buffer = BytesMut::new();
        error
    }

    /// Scans complete lines of the current head from `scanned_bytes` on, enforcing the bounds.
    /// Returns the head's length once its terminating empty line has arrived.
    fn scan_head(&mut self) -> Result<Option<usize>, HttpError> {
        if self.head_bytes.is_some() {
            // Bytes past a complete head belong to the next (pipelined) request.
            return Ok(self.head_bytes);
        }
        loop {
            let line_start = self.scanned_bytes;
            let Some(newline) = self.buffer[line_start..].iter().position(|&b| b == b'\n') else {
                return self.check_partial_line(line_start).map(|()| None);
            };
            let line_end = line_start + newline + 1;
            if line_end > REQUEST_HEAD_BYTES_MAX {
                return Err(self.poison(HttpError::HeadTooLarge));
            }
            let line = strip_line_terminator(&self.buffer[line_start..line_end]);
            self.scanned_bytes = line_end;
            if line.is_empty() {
                if self.request_line_seen {
                    self.head_bytes = Some(line_end);
                    return Ok(self.head_bytes);
                }
                continue; // An empty line before the request line is ignored (RFC 9112 §2.2).
            }
            if !self.request_line_seen {
                if line.len() > REQUEST_LINE_BYTES_MAX {
                    return Err(self.poison(HttpError::RequestLineTooLong));
                }
                self.request_line_seen = true;
            } else {
                self.header_count += 1;
                if self.header_count > HEADER_COUNT_MAX {
                    return Err(self.poison(HttpError::TooManyHeaders));
                }
            }
        }
    }

    /// Bounds of a line whose terminator has not arrived yet.
    fn check_partial_line(&mut self, line_start: usize) -> Result<(), HttpError> {
        let partial = self.buffer.len() - line_start;
        // One byte of slack: the line's CR may already be here while its LF is not.
        if !self.request_line_seen && partial > REQUEST_LINE_BYTES_MAX + 1 {
            return Err(self.poison(HttpError::RequestLineTooLong));
        }
        // The LF still to come would make the head longer than the buffer is now.
        if self.buffer.len() >= REQUEST_HEAD_BYTES_MAX {
            return Err(self.poison(HttpError::HeadTooLarge));
        }
        Ok(())
    }
}

/// A line without its LF and the CR before it, if any.
fn strip_line_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a complete head (its lines already bounded by the scan).
fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let mut lines = head.split_inclusive(|&b| b == b'\n').map(strip_line_terminator).skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or(HttpError::MalformedRequestLine)?;
    let (method, target, version) = parse_request_line(request_line)?;
    let (path, query) = parse_target(target)?;
    let mut fields = HeaderSummary::default();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = parse_header_line(line)?;
        fields.record(name, value)?;
    }
    let keep_alive = match version {
        Version::Http11 => !fields.connection_close,
        Version::Http10 => fields.connection_keep_alive && !fields.connection_close,
    };
    Ok(Request { method, version, path, query, host: fields.host, keep_alive })
}

/// `method SP request-target SP HTTP-version`, single spaces. Checks syntax (400) before the
/// version (505) before the method (405), so each error names the first thing wrong.
fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8], Version), HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::MalformedRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_token_byte(b)) || target.is_empty() {
        return Err(HttpError::MalformedRequestLine);
    }
    let version = parse_version(version)?;
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Err(HttpError::MethodNotAllowed),
    };
    Ok((method, target, version))
}

/// `HTTP/DIGIT.DIGIT`; only 1.0 and 1.1 are supported.
fn parse_version(version: &[u8]) -> Result<Version, HttpError> {
    match version {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            Err(HttpError::UnsupportedVersion)
        }
        _ => Err(HttpError::MalformedRequestLine),
    }
}

/// Splits an origin-form target into path and query. Every byte must be visible ASCII.
fn parse_target(target: &[u8]) -> Result<(String, Option<String>), HttpError> {
    if target.first() != Some(&b'/') || !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HttpError::InvalidTarget);
    }
    let text = std::str::from_utf8(target).map_err(|_| HttpError::InvalidTarget)?;
    Ok(match text.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (text.to_string(), None),
    })
}

/// `field-name ":" OWS field-value OWS`. The name must be a token right up to the colon; the value
/// may hold visible ASCII, spaces, tabs and obs-text, but no other control byte.
fn parse_header_line(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let colon = line.iter().position(|&b| b == b':').ok_or(HttpError::MalformedHeader)?;
    let (name, rest) = line.split_at(colon);
    if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
        // Also refuses obsolete line folding: a continuation line starts with SP or HTAB.
        return Err(HttpError::MalformedHeader);
    }
    let value = trim_ows(&rest[1..]);
    if !value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
        return Err(HttpError::MalformedHeader);
    }
    Ok((name, value))
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the parser keeps of the header fields.
#[derive(Default)]
struct HeaderSummary {
    host: Option<String>,
    content_length_seen: bool,
    connection_close: bool,
    connection_keep_alive: bool,
}

impl HeaderSummary {
    fn record(&mut self, name: &[u8], value: &[u8]) -> Result<(), HttpError> {
        if name.eq_ignore_ascii_case(b"host") {
            if self.host.is_some() {
                return Err(HttpError::DuplicateHost);
            }
            self.host = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length_seen || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::InvalidContentLength);
            }
            self.content_length_seen = true;
            // All digits: anything but zeros is a body, however long the number.
            if value.iter().any(|&b| b != b'0') {
                return Err(HttpError::BodyNotAllowed);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(HttpError::BodyNotAllowed);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim_ows) {
                self.connection_close |= option.eq_ignore_ascii_case(b"close");
                self.connection_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }
}

/// Response header names the writer sets itself; extra headers with these names are dropped.
const MANAGED_HEADER_NAMES: [&str; 3] = ["content-type", "content-length", "connection"];
/// `Content-Type` written in place of one that is not a valid header value.
const CONTENT_TYPE_FALLBACK: &str = "application/octet-stream";

/// A response to encode. The writer always sends `HTTP/1.1` (RFC 9110 §2.5: a server sends its
/// own version, also to HTTP/1.0 clients) and sets `Content-Type`, `Content-Length` and
/// `Connection` itself.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    pub status: Status,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// `Connection: keep-alive` if true, else `Connection: close`.
    pub keep_alive: bool,
    /// Further headers, written in order. A name that is not a token, a value with a control
    /// character, or a managed name is skipped: nothing here can split the response.
    pub extra_headers: &'a [(&'a str, &'a str)],
}

impl<'a> Response<'a> {
    /// A response that closes the connection and has no extra headers.
    pub fn new(status: Status, content_type: &'a str, body: &'a [u8]) -> Response<'a> {
        Response { status, content_type, body, keep_alive: false, extra_headers: &[] }
    }

    /// The answer to `request`: its method decides whether the body is sent, its `keep_alive`
    /// the `Connection` header.
    pub fn answer(request: &Request, status: Status, content_type: &'a str, body: &'a [u8]) -> Bytes {
        Response::new(status, content_type, body).with_keep_alive(request.keep_alive).to_bytes(request.method)
    }

    pub fn with_keep_alive(self, keep_alive: bool) -> Response<'a> {
        Response { keep_alive, ..self }
    }

    pub fn with_headers(self, extra_headers: &'a [(&'a str, &'a str)]) -> Response<'a> {
        Response { extra_headers, ..self }
    }

    /// Appends the encoded response. For `Method::Head` the headers (including the body's
    /// `Content-Length`) are written but the body is not.
    pub fn encode(&self, method: Method, out: &mut BytesMut) {
        let content_type =
            if is_valid_header_value(self.content_type) { self.content_type } else { CONTENT_TYPE_FALLBACK };
        let connection = if self.keep_alive { "keep-alive" } else { "close" };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status.code(),
            self.status.reason(),
            content_type,
            self.body.len(),
            connection
        );
        out.reserve(head.len() + self.body.len() + 64);
        out.put_slice(head.as_bytes());
        for &(name, value) in self.extra_headers {
            let managed = MANAGED_HEADER_NAMES.iter().any(|m| m.eq_ignore_ascii_case(name));
            if managed || name.is_empty() || !name.bytes().all(is_token_byte) || !is_valid_header_value(value) {
                continue;
            }
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        if method == Method::Get {
            out.put_slice(self.body);
        }
    }

    pub fn to_bytes(&self, method: Method) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(method, &mut out);
        out.freeze()
    }
}

/// Visible ASCII, spaces and tabs, with no surrounding whitespace.
fn is_valid_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) && trim_ows(value.as_bytes()).len() == value.len()
}

#[cfg(test)]
mod tests;
