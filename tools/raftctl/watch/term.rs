//! The terminal for `raftctl watch`: keys without Enter, no echo, the alternate screen, a hidden
//! cursor — and all of it undone on every way out (`q`, Ctrl-C, SIGTERM, SIGHUP, a panic).
//!
//! Raw mode needs termios, which std does not have. This file declares `tcgetattr` and
//! `tcsetattr` from the C library in a tiny `extern "C"` block, for Linux on the architectures
//! whose termios layout and flag values it knows (x86, x86-64, ARM, AArch64, RISC-V: the
//! generic Linux ABI). Only `ICANON` and `ECHO` are cleared ("cbreak"): output processing and
//! `ISIG` stay on, so Ctrl-C still raises SIGINT. Elsewhere, or when stdin is not a terminal,
//! watch runs without raw mode: `q` then Enter quits.
//!
//! Signals are caught with signal-hook's flag (no work in the handler); the watch loop polls it
//! every [`SIGNAL_POLL`] and leaves through the same [`TerminalGuard`] drop as `q`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the loop looks at the signal flag and for a key while waiting for the next frame.
pub const SIGNAL_POLL: Duration = Duration::from_millis(50);

const ENTER_ALTERNATE_SCREEN: &str = "\x1b[?1049h";
const LEAVE_ALTERNATE_SCREEN: &str = "\x1b[?1049l";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";

#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )
))]
mod termios {
    //! The generic Linux termios ABI (`asm-generic/termbits.h`, glibc's `struct termios`).
    use std::os::raw::c_int;

    const NCCS: usize = 32;
    pub const ICANON: u32 = 0o000002;
    pub const ECHO: u32 = 0o000010;
    pub const VTIME: usize = 5;
    pub const VMIN: usize = 6;
    const TCSANOW: c_int = 0;
    const STDIN_FILENO: c_int = 0;

    /// glibc's `struct termios` (60 bytes), followed by spare room so that a C library with a
    /// longer struct cannot write past the value.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Termios {
        pub c_iflag: u32,
        pub c_oflag: u32,
        pub c_cflag: u32,
        pub c_lflag: u32,
        pub c_line: u8,
        pub c_cc: [u8; NCCS],
        pub c_ispeed: u32,
        pub c_ospeed: u32,
        spare: [u8; 64],
    }

    extern "C" {
        fn tcgetattr(fd: c_int, termios: *mut Termios) -> c_int;
        fn tcsetattr(fd: c_int, optional_actions: c_int, termios: *const Termios) -> c_int;
    }

    /// The settings of stdin, or `None` if it is not a terminal.
    pub fn get() -> Option<Termios> {
        let mut t = Termios {
            c_iflag: 0,
            c_oflag: 0,
            c_cflag: 0,
            c_lflag: 0,
            c_line: 0,
            c_cc: [0; NCCS],
            c_ispeed: 0,
            c_ospeed: 0,
            spare: [0; 64],
        };
        // SAFETY: `t` is a valid, writable termios (with spare room); fd 0 is ours to query.
        let rc = unsafe { tcgetattr(STDIN_FILENO, &mut t) };
        (rc == 0).then_some(t)
    }

    /// Applies `t` to stdin at once; false if the terminal refused.
    pub fn set(t: &Termios) -> bool {
        // SAFETY: `t` points to a valid termios obtained from `get`, read-only for the call.
        unsafe { tcsetattr(STDIN_FILENO, TCSANOW, t) == 0 }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    )
)))]
mod termios {
    //! No known termios ABI here: watch runs in line mode (`q` + Enter).
    #[derive(Clone, Copy)]
    pub struct Termios;
    pub fn get() -> Option<Termios> {
        None
    }
    pub fn set(_: &Termios) -> bool {
        false
    }
}

/// Puts the terminal into the watch's mode; dropping it restores everything it changed.
pub struct TerminalGuard {
    saved: Option<termios::Termios>,
    screen: bool,
}

impl TerminalGuard {
    /// Enters cbreak mode (if stdin is a terminal), the alternate screen and hides the cursor.
    /// Returns the guard and whether single keys work (otherwise `q` needs Enter).
    pub fn enter() -> (TerminalGuard, bool) {
        let saved = termios::get();
        let mut raw = false;
        #[cfg(all(
            target_os = "linux",
            any(
                target_arch = "x86_64",
                target_arch = "x86",
                target_arch = "aarch64",
                target_arch = "arm",
                target_arch = "riscv64"
            )
        ))]
        if let Some(original) = saved {
            let mut cbreak = original;
            cbreak.c_lflag &= !(termios::ICANON | termios::ECHO);
            cbreak.c_cc[termios::VMIN] = 1;
            cbreak.c_cc[termios::VTIME] = 0;
            raw = termios::set(&cbreak);
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{ENTER_ALTERNATE_SCREEN}{HIDE_CURSOR}");
        let _ = out.flush();
        (TerminalGuard { saved, screen: true }, raw)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if self.screen {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "{SHOW_CURSOR}{LEAVE_ALTERNATE_SCREEN}");
            let _ = out.flush();
        }
        if let Some(original) = &self.saved {
            let _ = termios::set(original);
        }
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP.
pub fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        // A signal that cannot be watched keeps its default action (the process ends; the
        // terminal may then stay in cbreak mode, which `reset` fixes) — better than no watch.
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}

pub fn signalled(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}
