//! The load of a chaos run: W client threads, each with its own [`Client`] (so its own registered
//! session), doing set / get / delete / cas on a few shared keys, and recording every operation:
//! invocation and completion time (µs since the run's start, one monotonic clock for the whole
//! run) and outcome, in the `mini_raft::history` model.
//!
//! Outcomes, and why they are sound for the checker:
//! - `ok`: a definite reply (`Ok`, `Value`, `NotFound`, `CasFailed`);
//! - `fail`: only when nothing can have happened: the client gave up on a write before sending it
//!   even once (every attempt failed to connect; the registration before it failed), or refused it
//!   before sending (an invalid argument). A `NotLeader`, a timeout, `OutcomeUnknown`,
//!   `ShuttingDown` or `SessionExpired` after the write went out proves nothing: `info`;
//! - `info`: anything else. A failed get is also `info` (the checker ignores it).
//!
//! Every written value is unique (`c<client>-<n>`), so a read names the one write it saw. Reads
//! are linearizable gets (ReadIndex on the leader). A cas expects the value this client last saw
//! for the key, or (one time in four) that the key is absent. A client keeps its connection (so it
//! mostly talks to the leader), except that one operation in [`RECONNECT_ONE_IN`] starts at a
//! random node, like a client that just connected: followers and deposed leaders get requests too.
//!
//! Bounds: the clients stop at the `stop` flag or once `operations_max` operations have started;
//! every operation ends by its client deadline ([`CLIENT_DEADLINE`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_raft::client::{Client, ClientError, ClientOptions};
use mini_raft::history::{CasResult, Op, OpKind, OpResult, Outcome};
use mini_raft::raft::rng::Rng;
use mini_raft::wire::ReadConsistency;

/// One operation, retries included, gives up after this long (then `info` for a write).
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(3);
/// One attempt waits this long for its reply: above two round trips through 250 ms + 250 ms of
/// delay per link (a commit needs the leader's append and the follower's answer).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Percentages of the operation mix; the rest are deletes.
const GET_PCT: u64 = 40;
const SET_PCT: u64 = 30;
const CAS_PCT: u64 = 20;
/// One cas in this many expects the key to be absent, whatever the client saw.
const CAS_ABSENT_ONE_IN: u64 = 4;
/// One operation in this many drops the connection first and starts at a random node.
const RECONNECT_ONE_IN: u64 = 10;

/// Microseconds since the start of the run, for every thread of it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { started: Instant::now() }
    }

    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub fn instant_at(&self, at: Duration) -> Instant {
        self.started + at
    }
}

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub keys: usize,
    /// The nodes' client addresses.
    pub cluster: Vec<String>,
    pub cluster_id: u64,
    pub seed: u64,
    pub operations_max: u64,
}

/// Options of every client of a chaos run.
pub fn client_options(cluster_id: u64) -> ClientOptions {
    ClientOptions {
        cluster_id,
        deadline: CLIENT_DEADLINE,
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
    }
}

/// The key names, `k0`, `k1`, ...
pub fn key_names(keys: usize) -> Vec<Bytes> {
    (0..keys).map(|key| Bytes::from(format!("k{key}"))).collect()
}

/// Running client threads.
pub struct Workload {
    threads: Vec<JoinHandle<Vec<Op>>>,
    stop: Arc<AtomicBool>,
    started: Arc<AtomicU64>,
    operations_max: u64,
}

impl Workload {
    /// Starts the clients; client ids are `1..=clients`.
    pub fn start(config: &WorkloadConfig, clock: Clock) -> Result<Workload, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::with_capacity(config.clients);
        for id in 1..=config.clients as u64 {
            let client = Client::new(config.cluster.clone(), client_options(config.cluster_id))
                .map_err(|e| format!("client {id}: {e}"))?;
            let rng = Rng::new(config.seed ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let keys = key_names(config.keys);
            let known = vec![None; keys.len()];
            let mut worker = Worker { id, client, rng, keys, known, writes: 0 };
            let (stop, started, max) = (Arc::clone(&stop), Arc::clone(&started), config.operations_max);
            let thread = thread::Builder::new()
                .name(format!("chaos client {id}"))
                .spawn(move || {
                    let mut ops = Vec::new();
                    while !stop.load(Ordering::Relaxed) && started.fetch_add(1, Ordering::Relaxed) < max {
                        ops.push(worker.operation(clock));
                    }
                    ops
                })
                .map_err(|e| format!("cannot start client thread {id}: {e}"))?;
            threads.push(thread);
        }
        Ok(Workload { threads, stop, started, operations_max: config.operations_max })
    }

    /// True once the clients started `operations_max` operations.
    pub fn finished(&self) -> bool {
        self.started.load(Ordering::Relaxed) >= self.operations_max
    }

    /// Stops the clients (each finishes its operation) and returns every operation by call time.
    pub fn stop(self) -> Result<Vec<Op>, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = Vec::new();
        for thread in self.threads {
            history.extend(thread.join().map_err(|_| "a client thread panicked".to_string())?);
        }
        // Stable: one client's operations keep their order.
        history.sort_by_key(|op| op.call);
        Ok(history)
    }
}

/// One client: its session, its generator, and what it last saw of each key.
struct Worker {
    id: u64,
    client: Client,
    rng: Rng,
    keys: Vec<Bytes>,
    known: Vec<Option<Bytes>>,
    writes: u64,
}

impl Worker {
    fn operation(&mut self, clock: Clock) -> Op {
        let index = self.rng.range(0, self.keys.len() as u64) as usize;
        let key = self.keys[index].clone();
        let roll = self.rng.range(0, 100);
        let kind = if roll < GET_PCT {
            OpKind::Get
        } else if roll < GET_PCT + SET_PCT {
            OpKind::Set { value: self.next_value() }
        } else if roll < GET_PCT + SET_PCT + CAS_PCT {
            let expected = if self.rng.chance(1, CAS_ABSENT_ONE_IN) { None } else { self.known[index].clone() };
            OpKind::Cas { expected, new: self.next_value() }
        } else {
            OpKind::Delete
        };
        if self.rng.chance(1, RECONNECT_ONE_IN) {
            self.client.disconnect();
        }
        let call = clock.now_us();
        let outcome = self.send(&key, &kind);
        let ret = clock.now_us();
        if let Some(seen) = seen_value(&kind, &outcome) {
            self.known[index] = seen;
        }
        Op { client: self.id, key, call, ret: Some(ret), kind, outcome }
    }

    fn next_value(&mut self) -> Bytes {
        self.writes += 1;
        Bytes::from(format!("c{}-{}", self.id, self.writes))
    }

    fn send(&mut self, key: &[u8], kind: &OpKind) -> Outcome {
        let client = &mut self.client;
        let result = match kind {
            OpKind::Get => {
                return match client.get(key, ReadConsistency::Linearizable) {
                    Ok(answer) => Outcome::Ok(OpResult::Get { value: answer.value }),
                    Err(_) => Outcome::Info,
                }
            }
            OpKind::Set { value } => client.set(key, value).map(|_| OpResult::Set),
            OpKind::Delete => client.delete(key).map(|answer| OpResult::Delete { existed: answer.value }),
            OpKind::Cas { expected, new } => client.cas(key, expected.as_deref(), new).map(|answer| {
                OpResult::Cas(match answer.value {
                    Ok(()) => CasResult::Ok,
                    Err(failed) => CasResult::Failed { current: failed.current },
                })
            }),
        };
        match result {
            Ok(result) => Outcome::Ok(result),
            Err(error) => write_outcome(&error),
        }
    }
}

/// The outcome of a write that ended in `error`: `fail` only if it was never sent.
pub fn write_outcome(error: &ClientError) -> Outcome {
    match error {
        ClientError::InvalidArgument(_) | ClientError::GaveUp { outcome_unknown: false, .. } => Outcome::Fail,
        _ => Outcome::Info,
    }
}

/// The key's value as this operation saw or left it, if it tells.
fn seen_value(kind: &OpKind, outcome: &Outcome) -> Option<Option<Bytes>> {
    let Outcome::Ok(result) = outcome else { return None };
    Some(match (kind, result) {
        (OpKind::Set { value }, _) => Some(value.clone()),
        (_, OpResult::Get { value }) => value.clone(),
        (_, OpResult::Delete { .. }) => None,
        (OpKind::Cas { new, .. }, OpResult::Cas(CasResult::Ok)) => Some(new.clone()),
        (_, OpResult::Cas(CasResult::Failed { current })) => current.clone(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_raft::wire::ErrorCode;

    fn gave_up(outcome_unknown: bool) -> ClientError {
        ClientError::GaveUp {
            op: "set \"k\"".into(),
            needs_leader: true,
            elapsed: Duration::from_secs(3),
            attempts: 4,
            nodes: Vec::new(),
            outcome_unknown,
        }
    }

    #[test]
    fn only_a_write_never_sent_fails() {
        assert_eq!(write_outcome(&gave_up(false)), Outcome::Fail);
        assert_eq!(write_outcome(&ClientError::InvalidArgument("too big".into())), Outcome::Fail);
        assert_eq!(write_outcome(&gave_up(true)), Outcome::Info);
        let expired = ClientError::OutcomeUnknown { op: "set".into(), addr: "a:1".into(), reason: "expired".into() };
        assert_eq!(write_outcome(&expired), Outcome::Info);
        let refused = ClientError::Refused { addr: "a:1".into(), code: ErrorCode::StaleSequence, message: "".into() };
        assert_eq!(write_outcome(&refused), Outcome::Info);
    }

    #[test]
    fn what_an_operation_tells_about_its_key() {
        let value = Bytes::from("v");
        let set = OpKind::Set { value: value.clone() };
        assert_eq!(seen_value(&set, &Outcome::Ok(OpResult::Set)), Some(Some(value.clone())));
        assert_eq!(seen_value(&set, &Outcome::Info), None);
        let cas = OpKind::Cas { expected: None, new: value.clone() };
        assert_eq!(seen_value(&cas, &Outcome::Ok(OpResult::Cas(CasResult::Ok))), Some(Some(value)));
        let failed = OpResult::Cas(CasResult::Failed { current: None });
        assert_eq!(seen_value(&cas, &Outcome::Ok(failed)), Some(None));
        assert_eq!(seen_value(&OpKind::Delete, &Outcome::Ok(OpResult::Delete { existed: true })), Some(None));
    }
}
