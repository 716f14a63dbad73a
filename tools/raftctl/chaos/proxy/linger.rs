//! Resetting a TCP connection on purpose (RST instead of FIN).

use std::io;
use std::net::TcpStream;

/// Arms SO_LINGER {on, 0 s}: closing the socket then sends RST and discards unsent data, which is
/// how the proxy imitates a connection reset. std has no stable setter, so this declares libc's
/// `setsockopt` (std already links libc) with the Linux constants.
#[cfg(target_os = "linux")]
pub(super) fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::raw::{c_int, c_void};

    const SOL_SOCKET: c_int = 1;
    const SO_LINGER: c_int = 13;
    #[repr(C)]
    struct Linger {
        l_onoff: c_int,
        l_linger: c_int,
    }
    extern "C" {
        fn setsockopt(socket: c_int, level: c_int, name: c_int, value: *const c_void, length: u32) -> c_int;
    }
    let linger = Linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the fd is open for as long as `stream` is borrowed; `value` points to a live, properly
    // laid out `struct linger` of exactly `length` bytes, which setsockopt only reads.
    let status = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            (&linger as *const Linger).cast::<c_void>(),
            std::mem::size_of::<Linger>() as u32,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere a "reset" is a plain close (FIN).
#[cfg(not(target_os = "linux"))]
pub(super) fn set_linger_zero(_stream: &TcpStream) -> io::Result<()> {
    Err(io::Error::new(ErrorKind::Unsupported, "SO_LINGER is only set on Linux"))
}
