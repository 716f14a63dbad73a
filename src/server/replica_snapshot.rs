//! The replica's own snapshots: when to take one ([`SnapshotPolicy`]) and how, without stopping
//! the event loop.
//!
//! Taking one: the loop freezes the state machine ([`KvStore::freeze`]: O(1) in the number of
//! keys, the map is structurally shared) and hands the frozen copy to the snapshot lane, which
//! serializes, writes and syncs it while the loop keeps applying; the log is compacted under it
//! only once the file is durable (`IoDone::SnapshotSaved` → `IoJob::CompactLog`).
//!
//! The policy (README "Snapshots"): a snapshot is due when the entries logged since the last one
//! add up to `max(log_bytes, image_bytes)` bytes, `image_bytes` being the size of the last image
//! (or `entries` entries were applied, if that flag is set). Hence snapshot bytes written ≤ log
//! bytes written (write amplification ≤ 2×, whatever the state size), and the log on disk and
//! the replay after a restart stay under `max(log_bytes, image_bytes)` + one snapshot's worth.
//!
//! Invariants: at most one snapshot of the node's own is in flight (`compaction_in_flight`); the
//! frozen state is at the index the snapshot's metadata names (checked again by the lane).

use std::time::{Duration, Instant};

use log::warn;

use super::{IoJob, Replica};
use crate::kv::KvStore;
use crate::raft::SnapshotMeta;

/// Freezing the state machine for longer than this is logged (only the session table is copied;
/// see [`KvStore::freeze`]).
const SNAPSHOT_FREEZE_WARN: Duration = Duration::from_millis(5);

/// When the node takes its own snapshot: once the entries written since the last snapshot reach
/// `max(log_bytes, size of the last image)` bytes, or after `entries` applied entries, whichever
/// comes first (`entries: u64::MAX` turns the count off, `raftd`'s default). Scaling the byte
/// trigger with the image bounds the snapshot write rate to the log write rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub entries: u64,
    pub log_bytes: u64,
}

impl SnapshotPolicy {
    /// True if a snapshot is due after `entries_since` entries and `bytes_since` logged bytes,
    /// the last image being `image_bytes` long.
    pub fn due(&self, entries_since: u64, bytes_since: u64, image_bytes: u64) -> bool {
        entries_since >= self.entries || bytes_since >= self.log_bytes.max(image_bytes)
    }
}

/// The size of `kv`'s image, to start the policy off after a restart (O(keys), once).
pub(super) fn image_bytes(kv: &KvStore) -> u64 {
    kv.image_len() as u64
}

impl Replica {
    /// Takes a snapshot when the policy says so: freezes the state machine here, in O(1), and
    /// leaves serializing and saving it to the snapshot lane.
    pub(super) fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        let entries_since = applied.saturating_sub(self.snapshot_meta.index);
        let bytes_since = self.logged_bytes_since_snapshot;
        let due = entries_since > 0 && self.snapshot_policy.due(entries_since, bytes_since, self.snapshot_image_bytes);
        if self.compaction_in_flight || !due {
            return;
        }
        let Some(term) = self.raft.log_term(applied) else { return };
        let started = Instant::now();
        let state = self.kv.freeze();
        let frozen_in = started.elapsed();
        if frozen_in > SNAPSHOT_FREEZE_WARN {
            warn!("freezing the state at index {applied} ({} sessions) took {frozen_in:?}", self.kv.session_count());
        }
        debug_assert_eq!(state.applied_index(), applied);
        // The configuration in force at the snapshot's index, not the latest appended one.
        let conf = self.raft.conf_state_at(applied).unwrap_or_else(|| self.raft.conf_state());
        let meta = SnapshotMeta { index: applied, term, conf };
        self.out.jobs.push(IoJob::SaveSnapshot { meta, state });
        self.compaction_in_flight = true;
        self.logged_bytes_since_snapshot = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn the_byte_trigger_grows_with_the_image() {
        let policy = SnapshotPolicy { entries: u64::MAX, log_bytes: 64 << 20 };
        assert!(!policy.due(1_000_000, (64 << 20) - 1, 0));
        assert!(policy.due(1, 64 << 20, 0));
        // A 200 MiB image: 64 MiB of log is not enough any more.
        assert!(!policy.due(1_000_000, 64 << 20, 200 << 20));
        assert!(policy.due(1, 200 << 20, 200 << 20));
    }

    #[test]
    fn the_entry_count_still_triggers_when_set() {
        let policy = SnapshotPolicy { entries: 10, log_bytes: u64::MAX };
        assert!(!policy.due(9, 0, 0));
        assert!(policy.due(10, 0, u64::MAX));
    }
}
