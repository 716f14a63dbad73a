//! The load of `raftctl bench`: closed-loop clients, each with its own session, running until an
//! operation count or a deadline. With `--pipeline N` a client keeps N writes in flight on one
//! connection ([`PipelinedSession`]); otherwise it waits for each reply before the next request.
//!
//! Keys: uniform over `key_space` keys, or (`distinct`) a key no client wrote before, to grow the
//! state: client `w` of `C` writes keys `w`, `w + C`, `w + 2C`, ... .

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_raft::client::{Client, PipelinedSession, WriteOp};
use mini_raft::raft::rng::Rng;
use mini_raft::wire::ReadConsistency;

use super::{Op, Params};
use crate::Global;

/// Latency samples a client keeps (beyond it the run still counts operations, unsampled).
const SAMPLES_PER_CLIENT_MAX: usize = 4 << 20;

/// One client's outcome: latency samples (at most [`SAMPLES_PER_CLIENT_MAX`]) and counts.
#[derive(Default)]
pub struct WorkerResult {
    pub latencies_us: Vec<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connecting or pre-populating failed: the worker ran no timed operations.
    pub setup_error: Option<String>,
}

impl WorkerResult {
    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                if self.latencies_us.len() < SAMPLES_PER_CLIENT_MAX {
                    self.latencies_us.push(started.elapsed().as_micros() as u64);
                }
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert(error);
            }
        }
    }
}

/// When a worker stops: after its share of operations, or at the deadline.
#[derive(Clone, Copy)]
pub struct Budget {
    pub ops: u64,
    pub until: Option<Instant>,
}

impl Budget {
    fn more(&self, done: u64) -> bool {
        done < self.ops && self.until.is_none_or(|until| Instant::now() < until)
    }
}

pub fn key_name(index: u64) -> String {
    format!("bench-{index:010}")
}

struct Keys {
    rng: Rng,
    next_distinct: u64,
    stride: u64,
}

impl Keys {
    fn new(params: &Params, worker: usize) -> Keys {
        Keys { rng: Rng::new(worker as u64 + 1), next_distinct: worker as u64, stride: params.clients as u64 }
    }

    fn next(&mut self, params: &Params) -> String {
        if params.distinct {
            let key = self.next_distinct;
            self.next_distinct += self.stride;
            key_name(key)
        } else {
            key_name(self.rng.range(0, params.key_space))
        }
    }
}

/// One client: connects (and pre-populates its keys for `get`), waits at `start_line`, runs.
pub fn work(
    global: &Global,
    params: &Params,
    worker: usize,
    budget: impl Fn() -> Budget,
    start_line: &Barrier,
) -> WorkerResult {
    if params.pipeline > 1 {
        return work_pipelined(global, params, worker, budget, start_line);
    }
    let mut result = WorkerResult::default();
    let value = vec![b'v'; params.value_size];
    let setup = Client::connect(global.cluster.clone(), global.client.clone()).map_err(|e| e.to_string());
    let setup = setup.and_then(|mut client| {
        if params.op == Op::Get {
            for key in (worker as u64..params.key_space).step_by(params.clients) {
                client.set(key_name(key).as_bytes(), &value).map_err(|e| format!("pre-populating: {e}"))?;
            }
        }
        Ok(client)
    });
    start_line.wait();
    let mut client = match setup {
        Ok(client) => client,
        Err(error) => return WorkerResult { setup_error: Some(error), ..result },
    };
    let budget = budget();
    let mut keys = Keys::new(params, worker);
    let mut done = 0;
    while budget.more(done) {
        let key = keys.next(params);
        let started = Instant::now();
        let outcome = match params.op {
            Op::Set => client.set(key.as_bytes(), &value).map(|_| ()),
            Op::Get => client.get(key.as_bytes(), params.consistency).map(|_| ()),
        };
        result.record(started, outcome.map_err(|e| e.to_string()));
        done += 1;
    }
    result
}

/// One session with up to `params.pipeline` writes in flight; latency runs from submit to reply.
fn work_pipelined(
    global: &Global,
    params: &Params,
    worker: usize,
    budget: impl Fn() -> Budget,
    start_line: &Barrier,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    let value = Bytes::from(vec![b'v'; params.value_size]);
    let setup = PipelinedSession::open(global.cluster.clone(), global.client.clone()).map_err(|e| e.to_string());
    start_line.wait();
    let mut session = match setup {
        Ok(session) => session,
        Err(error) => return WorkerResult { setup_error: Some(error), ..result },
    };
    let budget = budget();
    let mut keys = Keys::new(params, worker);
    let mut sent: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut submitted = 0;
    loop {
        while session.in_flight() < params.pipeline && budget.more(submitted) {
            let op = WriteOp::Set { key: Bytes::from(keys.next(params)), value: value.clone() };
            match session.submit(op) {
                Ok(handle) => {
                    sent.insert(handle.seq, Instant::now());
                }
                Err(error) => result.record(Instant::now(), Err(error.to_string())),
            }
            submitted += 1;
        }
        if session.in_flight() == 0 && !budget.more(submitted) {
            return result;
        }
        for completion in session.poll(Duration::from_millis(100)) {
            let started = sent.remove(&completion.handle.seq).unwrap_or_else(Instant::now);
            result.record(started, completion.result.map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

/// `Local` or `Linearizable`, for the report.
pub fn consistency_name(consistency: ReadConsistency) -> &'static str {
    if consistency == ReadConsistency::Local {
        "local"
    } else {
        "linearizable"
    }
}
