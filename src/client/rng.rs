//! A tiny xorshift64* generator for client ids and backoff jitter. Not cryptographic: it only has to
//! make two clients started at the same moment pick different ids with overwhelming probability.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes generators created in the same process within one clock tick.
static INSTANCE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// xorshift64* (Vigna, 2014). The state is never zero.
#[derive(Clone, Debug)]
pub(crate) struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator seeded from the wall clock, the process id and a per-process counter.
    pub fn from_entropy() -> XorShift {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let pid = u64::from(std::process::id());
        let instance = INSTANCE_COUNTER.fetch_add(1, Ordering::Relaxed);
        XorShift::with_seed(nanos ^ pid.rotate_left(32) ^ splitmix64(instance))
    }

    pub fn with_seed(seed: u64) -> XorShift {
        // splitmix64 spreads nearby seeds apart; `| 1` keeps the state non-zero.
        XorShift { state: splitmix64(seed) | 1 }
    }

    pub fn next_u64(&mut self) -> u64 {
        debug_assert_ne!(self.state, 0);
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random non-zero value: a fresh client id.
    pub fn next_nonzero(&mut self) -> u64 {
        loop {
            let value = self.next_u64();
            if value != 0 {
                return value;
            }
        }
    }

    /// Uniform-ish in `0..bound` (`bound` > 0); the modulo bias is irrelevant for jitter.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0)");
        self.next_u64() % bound
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
