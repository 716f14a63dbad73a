//! Blocking frame I/O over any byte stream: one frame out, one frame in. For tools, fake nodes in
//! tests and raw-protocol tests; the [`Client`](super::Client) itself adds deadlines and error
//! classification on top of the same decoder.

use std::io::{self, Read, Write};

use bytes::BytesMut;

use crate::wire::{Frame, FrameDecoder};

/// Bytes read from the stream per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Encodes and writes one frame. A frame that cannot be encoded (over a limit) is `InvalidInput`.
pub fn write_frame(stream: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let mut bytes = BytesMut::new();
    frame.encode(&mut bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    stream.write_all(&bytes)
}

/// Reads until `decoder` yields one complete frame. `None` on end of stream, a read error (a
/// timeout included) or bytes that are not a valid frame.
pub fn read_frame(stream: &mut impl Read, decoder: &mut FrameDecoder) -> Option<Frame> {
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if let Some(raw) = decoder.next_frame().ok()? {
            return Frame::decode(raw).ok();
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(n) => decoder.feed(&buffer[..n]).ok()?,
        }
    }
}
