//! The WAL lane of `raftd`: a thread that runs WAL jobs in order, and, when that thread has
//! nothing queued or running, the event loop itself making a ready batch durable.
//!
//! Why the loop syncs: handing a batch to a thread and back costs two thread wake-ups (a futex
//! to wake the thread, the waker's eventfd to wake the loop) on every batch, on every node, and
//! on a follower both sit on the commit path. On a 2-core machine running three nodes those
//! hand-offs, not the work, were most of the server CPU per write at one client. Syncing on the
//! loop costs the loop the sync (≈ 0.1 ms, logged as a stall when it is long), which is time
//! nothing else could use for this batch anyway: the core has at most one batch in flight.
//! The loop runs the batch only after it has flushed its sockets, so a leader's appends are on
//! the wire while it syncs its own copy.
//!
//! A sync on the loop that takes longer than [`SLOW_SYNC`] (a disk in trouble) sends the batches
//! of the next [`SLOW_SYNC_HOLD`] to the thread, so one slow sync, not every one, holds the
//! loop's heartbeats.
//!
//! The thread keeps what must not hold the loop: reading evicted entries back for followers,
//! compacting the log, the steps that allocate the next segment (a synced MiB each), a batch
//! that could rotate into a segment not allocated yet (the rotation writes the rest of it), and
//! the confirmation of an idle batch. While the thread holds the WAL (or has a job queued), a batch
//! goes to the thread like any other job, so the WAL sees its jobs in the order they were
//! submitted.
//!
//! Invariants: a job runs on the loop only if every job submitted before it has finished and
//! been reported (`queued == 0` and the WAL's lock taken); outcomes reach the replica in job
//! order (outcomes already sent by the thread are moved ahead of an outcome produced on the
//! loop); after the first failure nothing more is written, on either side.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Waker;

use super::storage_thread::{IoDone, IoJob, WalWorker};

/// A message to the WAL thread.
enum ToThread {
    Job(Box<IoJob>),
    /// A batch was made durable on the loop: time to look at allocation and confirmation. Not
    /// a job (no outcome, not counted in `queued`).
    Nudge,
}

/// What the loop and the thread share.
struct Shared {
    worker: Mutex<WalWorker>,
    /// Jobs sent to the thread and not yet reported.
    queued: AtomicUsize,
    /// Batches made durable on the loop, so the thread does not confirm a batch that was not idle.
    loop_batches: AtomicU64,
    /// A nudge is on its way (one is enough).
    nudged: AtomicBool,
    failed: AtomicBool,
    /// Tests hold the thread before it takes its next job (see `pause_thread`).
    #[cfg(test)]
    paused: AtomicBool,
}

/// The WAL lane as the event loop sees it.
pub struct WalLane {
    shared: Arc<Shared>,
    jobs: Option<Sender<ToThread>>,
    handle: Option<JoinHandle<()>>,
    /// Jobs submitted this iteration, run (or passed to the thread) by `run_deferred`.
    deferred: VecDeque<IoJob>,
    /// Whether ready batches may be made durable on the loop.
    on_loop: bool,
    /// A sync on the loop longer than this sends the batches of the next [`SLOW_SYNC_HOLD`] to
    /// the thread.
    slow_sync: Duration,
    /// Until then, batches go to the thread: the last sync on the loop was slow.
    thread_until: Option<Instant>,
}

/// A sync on the loop that took longer than this (a disk in trouble) ...
pub const SLOW_SYNC: Duration = Duration::from_millis(5);
/// ... sends batches to the thread for this long, so the loop keeps heartbeating through a slow
/// disk (a follower would otherwise call an election after ~150 ms of a leader blocked in syncs).
pub const SLOW_SYNC_HOLD: Duration = Duration::from_secs(1);

impl WalLane {
    /// Starts the WAL thread; outcomes go to `done` and wake the loop through `waker`.
    pub fn spawn(worker: WalWorker, done: Sender<IoDone>, waker: Arc<Waker>, on_loop: bool) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            worker: Mutex::new(worker),
            queued: AtomicUsize::new(0),
            loop_batches: AtomicU64::new(0),
            nudged: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            #[cfg(test)]
            paused: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<ToThread>();
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("raft-wal".into())
            .spawn(move || wal_thread(&thread_shared, &rx, &done, &waker))?;
        Ok(WalLane {
            shared,
            jobs: Some(tx),
            handle: Some(handle),
            deferred: VecDeque::new(),
            on_loop,
            slow_sync: SLOW_SYNC,
            thread_until: None,
        })
    }

    /// Queues a WAL job: it runs at the end of this loop iteration (`run_deferred`).
    pub fn submit(&mut self, job: IoJob) -> Result<(), String> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err("the WAL has failed".into());
        }
        self.deferred.push_back(job);
        Ok(())
    }

    /// True if jobs wait for `run_deferred`.
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Runs this iteration's jobs, in order: a ready batch on the loop if the thread is idle,
    /// anything else (and everything after it) on the thread. Outcomes produced here go to
    /// `ready`, after whatever the thread had already reported (drained from `channel`).
    pub fn run_deferred(&mut self, channel: &Receiver<IoDone>, ready: &mut VecDeque<IoDone>) -> Result<(), String> {
        while let Some(job) = self.deferred.pop_front() {
            if self.shared.failed.load(Ordering::Acquire) {
                // The failure's own outcome, already queued, stops the node with its reason.
                self.deferred.clear();
                return Ok(());
            }
            if let Some(job) = self.try_on_loop(job, channel, ready) {
                self.send(job)?;
            }
        }
        Ok(())
    }

    /// Runs `job` on the loop if it is a batch (one that compacts nothing: that deletes files)
    /// and the thread holds nothing; gives it back if not.
    fn try_on_loop(&mut self, job: IoJob, channel: &Receiver<IoDone>, ready: &mut VecDeque<IoDone>) -> Option<IoJob> {
        let batch = matches!(job, IoJob::Persist { snapshot: None, .. });
        if !self.on_loop || !batch || self.shared.queued.load(Ordering::Acquire) != 0 {
            return Some(job);
        }
        if self.thread_until.is_some_and(|until| Instant::now() < until) {
            return Some(job);
        }
        let mut worker = match self.shared.worker.try_lock() {
            Ok(w) => w,
            Err(TryLockError::WouldBlock) => return Some(job),
            // A panic on the thread while it held the WAL: let the thread's path report it.
            Err(TryLockError::Poisoned(_)) => return Some(job),
        };
        // Checked again under the lock: the thread may have failed since the caller looked.
        // A batch that could rotate into a segment not yet allocated goes to the thread: the
        // rotation would write the rest of that segment.
        if self.shared.failed.load(Ordering::Acquire) || worker.may_rotate_unprepared(&job) {
            return Some(job);
        }
        // Every job before this one has been reported; keep their outcomes ahead of this one's.
        while let Ok(done) = channel.try_recv() {
            ready.push_back(done);
        }
        let was_unconfirmed = worker.idle_after().is_some();
        let started = Instant::now();
        let outcome = worker.run(job);
        let took = started.elapsed();
        if took > self.slow_sync {
            log::warn!(
                "a WAL sync on the event loop took {took:?}: batches go to the WAL thread for {SLOW_SYNC_HOLD:?}"
            );
            self.thread_until = Some(Instant::now() + SLOW_SYNC_HOLD);
        }
        let nudge = !was_unconfirmed || worker.wants_allocation();
        drop(worker);
        self.shared.loop_batches.fetch_add(1, Ordering::Release);
        match outcome {
            Ok(done) => {
                ready.push_back(done);
                if nudge && !self.shared.nudged.swap(true, Ordering::AcqRel) {
                    // A failed send means the thread is gone; the next submit reports it.
                    if let Some(tx) = &self.jobs {
                        let _ = tx.send(ToThread::Nudge);
                    }
                }
            }
            Err(e) => {
                self.shared.failed.store(true, Ordering::Release);
                ready.push_back(IoDone::Failed(e.to_string()));
            }
        }
        None
    }

    fn send(&self, job: IoJob) -> Result<(), String> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err("the WAL has failed".into());
        }
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match &self.jobs {
            Some(tx) if tx.send(ToThread::Job(Box::new(job))).is_ok() => Ok(()),
            _ => Err("the WAL thread has stopped".into()),
        }
    }
}

/// The thread: jobs in order; after each, and after a nudge, a step of allocation; when no job
/// came for a while after a batch, the confirmation. Stops after the first failure.
fn wal_thread(shared: &Shared, jobs: &Receiver<ToThread>, done: &Sender<IoDone>, waker: &Waker) {
    let report = |result: Result<IoDone, String>| -> bool {
        let failed = result.is_err();
        if failed {
            shared.failed.store(true, Ordering::Release);
        }
        let message = result.unwrap_or_else(IoDone::Failed);
        let sent = done.send(message).is_ok();
        let _ = waker.wake(); // a failed wake only delays the outcome until the loop's next tick
        sent && !failed
    };
    let lock = || shared.worker.lock().map_err(|_| "the WAL lock was poisoned".to_string());
    loop {
        if shared.failed.load(Ordering::Acquire) {
            return; // a batch on the loop failed: nothing more may be written here either
        }
        let idle_after = match lock() {
            Ok(w) => w.idle_after(),
            Err(e) => {
                report(Err(e));
                return;
            }
        };
        let batches_before = shared.loop_batches.load(Ordering::Acquire);
        let message = match idle_after {
            Some(wait) => jobs.recv_timeout(wait),
            None => jobs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let ok = match message {
            Ok(ToThread::Job(job)) => {
                #[cfg(test)]
                while shared.paused.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let outcome = lock().and_then(|mut w| w.run(*job).map_err(|e| e.to_string()));
                let ok = report(outcome);
                // Counted down only once reported: the loop may run a batch only after this.
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                ok && after_job(shared, &report)
            }
            Ok(ToThread::Nudge) => {
                shared.nudged.store(false, Ordering::Release);
                after_job(shared, &report)
            }
            // Batches ran on the loop meanwhile: the last one is not idle yet.
            Err(RecvTimeoutError::Timeout) if shared.loop_batches.load(Ordering::Acquire) != batches_before => true,
            Err(RecvTimeoutError::Timeout) => match lock().and_then(|mut w| w.idle().map_err(|e| e.to_string())) {
                Ok(()) => true,
                Err(e) => report(Err(e)),
            },
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if !ok {
            return; // nothing more may be written after a storage failure
        }
    }
}

fn after_job(shared: &Shared, report: &dyn Fn(Result<IoDone, String>) -> bool) -> bool {
    let step = shared.worker.lock().map_err(|_| "the WAL lock was poisoned".to_string());
    match step.and_then(|mut w| w.after_job().map_err(|e| e.to_string())) {
        Ok(()) => true,
        Err(e) => report(Err(e)),
    }
}

#[cfg(test)]
impl WalLane {
    /// The thread takes no job until `paused` is false again (it has received them: they count
    /// as queued, and the WAL's lock is free).
    pub fn pause_thread(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
    }

    /// Makes every sync on the loop count as slow.
    pub fn every_sync_is_slow(&mut self) {
        self.slow_sync = Duration::ZERO;
    }

    /// No job queued on the thread and the WAL not held by it.
    pub fn thread_idle(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) == 0 && self.shared.worker.try_lock().is_ok()
    }
}

impl Drop for WalLane {
    fn drop(&mut self) {
        #[cfg(test)]
        self.pause_thread(false); // a test that failed while the thread was held must still end
                                  // Jobs submitted in the last iteration still run; closing the channel then lets the
                                  // thread finish them and exit.
        while let Some(job) = self.deferred.pop_front() {
            if self.send(job).is_err() {
                break;
            }
        }
        self.jobs.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
