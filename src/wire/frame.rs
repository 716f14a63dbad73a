//! Framing: the length prefix and fixed header, [`MessageType`] codes, and the streaming
//! [`FrameDecoder`].
//!
//! ```text
//! u32 length | u8 version | u8 type | u64 request_id | payload
//!            `------------- length bytes -------------'
//! ```
//!
//! The decoder validates the length (and, as soon as they arrive, the version and type bytes) of the
//! next frame before it waits for that frame's body, so an oversized or foreign frame is refused
//! after at most [`FRAME_HEADER_BYTES`] + 4 bytes of it have been seen. After an error the decoder is
//! poisoned: the stream has lost its framing and the connection must be closed.

use byteorder::{BigEndian, ByteOrder};
use bytes::{Bytes, BytesMut};

use super::{WireError, FRAME_BYTES_MAX, FRAME_HEADER_BYTES, LENGTH_PREFIX_BYTES, PROTOCOL_VERSION};

macro_rules! message_types {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// The message type byte of a frame. Codes are listed in `protocol.md`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $($(#[$doc])* $name,)*
        }

        impl MessageType {
            /// Every message type, in code order.
            pub const ALL: &'static [MessageType] = &[$(MessageType::$name,)*];

            pub fn code(self) -> u8 {
                match self {
                    $(MessageType::$name => $code,)*
                }
            }

            pub fn from_code(code: u8) -> Option<MessageType> {
                match code {
                    $($code => Some(MessageType::$name),)*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $(MessageType::$name => stringify!($name),)*
                }
            }
        }
    };
}

message_types! {
    Hello = 0x01,
    HelloOk = 0x02,
    Error = 0x03,
    PreVote = 0x10,
    PreVoteResponse = 0x11,
    RequestVote = 0x12,
    RequestVoteResponse = 0x13,
    AppendEntries = 0x14,
    AppendEntriesResponse = 0x15,
    Heartbeat = 0x16,
    HeartbeatResponse = 0x17,
    SnapshotChunk = 0x18,
    LogLost = 0x19,
    TimeoutNow = 0x1a,
    Set = 0x20,
    Get = 0x21,
    Delete = 0x22,
    CompareAndSwap = 0x23,
    Status = 0x24,
    RegisterClient = 0x25,
    MemberList = 0x26,
    MemberChange = 0x27,
    TransferLeader = 0x28,
    Ok = 0x30,
    Value = 0x31,
    NotFound = 0x32,
    CasFailed = 0x33,
    StatusReport = 0x34,
    NotLeader = 0x35,
    Registered = 0x36,
    Members = 0x37,
}

/// One complete frame whose header has been validated but whose payload has not been parsed.
/// `payload` is a zero-copy slice of the bytes the decoder received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub message_type: MessageType,
    pub request_id: u64,
    pub payload: Bytes,
}

/// Turns a byte stream into [`RawFrame`]s. Feed it bytes as they arrive, in pieces of any size, and
/// pull complete frames with [`FrameDecoder::next_frame`]. Buffers at most one partial frame (at most
/// `max_frame_bytes + 4` bytes) plus whatever the last `feed` delivered beyond it.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max_frame_bytes: usize,
    poisoned: Option<WireError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_max_frame_bytes(FRAME_BYTES_MAX)
    }

    /// A decoder with a smaller frame limit. `max_frame_bytes` is clamped to
    /// `FRAME_HEADER_BYTES..=FRAME_BYTES_MAX`.
    pub fn with_max_frame_bytes(max_frame_bytes: usize) -> FrameDecoder {
        let max_frame_bytes = max_frame_bytes.clamp(FRAME_HEADER_BYTES, FRAME_BYTES_MAX);
        FrameDecoder { buffer: BytesMut::new(), max_frame_bytes, poisoned: None }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Appends received bytes, then validates the header of the next frame as far as it has
    /// arrived. On error the bytes are dropped and the decoder stays poisoned.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        self.buffer.extend_from_slice(bytes);
        self.check_next_header().map(|_| ())
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the error that poisoned the
    /// stream.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>, WireError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let Some(length) = self.check_next_header()? else {
            return Ok(None);
        };
        let frame_bytes = LENGTH_PREFIX_BYTES + length;
        if self.buffer.len() < frame_bytes {
            return Ok(None);
        }
        let frame = self.buffer.split_to(frame_bytes).freeze();
        let (header, payload) = frame.split_at(LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES);
        debug_assert_eq!(header[LENGTH_PREFIX_BYTES], PROTOCOL_VERSION);
        let type_code = header[LENGTH_PREFIX_BYTES + 1];
        let message_type = MessageType::from_code(type_code).ok_or(WireError::UnknownMessageType(type_code))?;
        let request_id = BigEndian::read_u64(&header[LENGTH_PREFIX_BYTES + 2..]);
        let payload = frame.slice_ref(payload);
        Ok(Some(RawFrame { message_type, request_id, payload }))
    }

    /// Validates what has arrived of the next frame's header. Returns its length once the prefix is
    /// complete. Poisons the decoder on error.
    fn check_next_header(&mut self) -> Result<Option<usize>, WireError> {
        let result = check_header(&self.buffer, self.max_frame_bytes);
        if let Err(error) = &result {
            self.poisoned = Some(error.clone());
            self.buffer = BytesMut::new();
        }
        result
    }
}

/// Checks the length prefix, version and type of the frame starting at `bytes[0]`, as far as
/// `bytes` reaches. `Ok(None)`: the length prefix is incomplete.
fn check_header(bytes: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, WireError> {
    let Some(prefix) = bytes.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let length = BigEndian::read_u32(prefix);
    if length as u64 > max_frame_bytes as u64 {
        return Err(WireError::FrameTooLarge { length: length as u64, max: max_frame_bytes });
    }
    if (length as usize) < FRAME_HEADER_BYTES {
        return Err(WireError::FrameTooShort { length });
    }
    if let Some(&version) = bytes.get(LENGTH_PREFIX_BYTES) {
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
    }
    if let Some(&code) = bytes.get(LENGTH_PREFIX_BYTES + 1) {
        if MessageType::from_code(code).is_none() {
            return Err(WireError::UnknownMessageType(code));
        }
    }
    Ok(Some(length as usize))
}

/// Appends a frame header with a placeholder length; returns the offset to pass to [`finish_frame`].
pub(crate) fn start_frame(out: &mut BytesMut, message_type: MessageType, request_id: u64) -> usize {
    use bytes::BufMut;
    let start = out.len();
    out.put_u32(0);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u8(message_type.code());
    out.put_u64(request_id);
    start
}

/// Writes the length prefix of the frame that starts at `start`. If the frame is too large it is
/// removed from `out` again and an error returned, so `out` never holds a frame a peer would refuse.
pub(crate) fn finish_frame(out: &mut BytesMut, start: usize) -> Result<(), WireError> {
    let length = out.len() - start - LENGTH_PREFIX_BYTES;
    if length > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(WireError::FrameTooLarge { length: length as u64, max: FRAME_BYTES_MAX });
    }
    BigEndian::write_u32(&mut out[start..start + LENGTH_PREFIX_BYTES], length as u32);
    Ok(())
}
