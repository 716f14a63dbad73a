//! Process-level chaos: clients write and read while nodes are killed with SIGKILL and restarted
//! (one at a time, the leader more often than not, and now and then the whole cluster at once).
//! Every linearizable read of an acknowledged write must see it, and afterwards every acknowledged
//! write must be readable with its value. Bounded: about 10 seconds of chaos.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mini_raft::client::{Client, ClientOptions};
use mini_raft::raft::rng::Rng;
use mini_raft::wire::{NodeRole, ReadConsistency};
use support::{wait_until, TestCluster};

const WRITERS: usize = 4;
const CHAOS: Duration = Duration::from_secs(10);

#[test]
fn acknowledged_writes_survive_repeated_kill_9() {
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "200"]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addrs, stop, acked) = (cluster.addrs.clone(), Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let options = ClientOptions { deadline: Duration::from_secs(10), ..ClientOptions::default() };
                let mut client = Client::new(addrs, options).expect("client");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                    // An error means "outcome unknown": such a write may or may not exist later.
                    if client.set(key.as_bytes(), value.as_bytes()).is_ok() {
                        acked.lock().expect("lock").push((key, value));
                    }
                    i += 1;
                }
            })
        })
        .collect();

    // Readers: a linearizable get of a key whose write was acknowledged before the get began must
    // return that write's value, on whichever node is leader, through every fault.
    let stale_reads: Arc<Mutex<Vec<String>>> = Arc::default();
    let reads_done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (addrs, stop, acked) = (cluster.addrs.clone(), Arc::clone(&stop), Arc::clone(&acked));
            let (stale_reads, reads_done) = (Arc::clone(&stale_reads), Arc::clone(&reads_done));
            std::thread::spawn(move || {
                let options = ClientOptions { deadline: Duration::from_secs(10), ..ClientOptions::default() };
                let mut client = Client::new(addrs, options).expect("client");
                let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15u64 ^ r as u64);
                while !stop.load(Ordering::Relaxed) {
                    let picked = {
                        let acked = acked.lock().expect("lock");
                        (!acked.is_empty()).then(|| acked[(rng.next_u64() % acked.len() as u64) as usize].clone())
                    };
                    let Some((key, value)) = picked else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if let Ok(got) = client.get(key.as_bytes(), ReadConsistency::Linearizable) {
                        reads_done.fetch_add(1, Ordering::Relaxed);
                        if got.value.as_deref() != Some(value.as_bytes()) {
                            let seen = got.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                            let line = format!("{key}: expected {value:?}, node {} answered {seen:?}", got.node_id);
                            stale_reads.lock().expect("lock").push(line);
                        }
                    }
                }
            })
        })
        .collect();

    let mut rng = Rng::new(0x2545_F491_4F6C_DD1Du64 ^ std::process::id() as u64);
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < CHAOS {
        if kills % 7 == 6 {
            // A power cut: every node at once, then all come back.
            for id in 1..=3 {
                cluster.kill(id);
            }
            for id in 1..=3 {
                cluster.start_node(id);
            }
        } else {
            let leader = (1..=3).find(|&id| cluster.status(id).is_some_and(|s| s.role == NodeRole::Leader));
            let victim = match leader {
                Some(id) if !rng.next_u64().is_multiple_of(3) => id,
                _ => (rng.next_u64() % 3) as usize + 1,
            };
            cluster.kill(victim);
            std::thread::sleep(Duration::from_millis(100 + rng.next_u64() % 400));
            cluster.start_node(victim);
        }
        kills += 1;
        // Let the cluster elect and make some progress before the next fault.
        cluster.wait_leader(Duration::from_secs(10)).expect("a leader after restart");
        std::thread::sleep(Duration::from_millis(200 + rng.next_u64() % 300));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in writers.into_iter().chain(readers) {
        thread.join().expect("client thread");
    }
    let stale = stale_reads.lock().expect("lock").clone();
    let reads = reads_done.load(Ordering::Relaxed);
    assert!(stale.is_empty(), "{} stale reads of {reads}, e.g. {:?}", stale.len(), &stale[..stale.len().min(5)]);
    assert!(reads > 100, "too few reads got through to prove anything: {reads}");

    let acked = acked.lock().expect("lock").clone();
    eprintln!("chaos: {kills} faults, {} acknowledged writes, {reads} linearizable reads checked", acked.len());
    assert!(acked.len() > 100, "too few writes got through to prove anything: {}", acked.len());
    assert!(kills >= 5, "too few faults injected: {kills}");
    cluster.wait_leader(Duration::from_secs(10)).expect("leader after chaos");
    let mut client = cluster.client();
    for (key, value) in &acked {
        let got =
            client.get(key.as_bytes(), ReadConsistency::Linearizable).unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(
            got.value.as_deref(),
            Some(value.as_bytes()),
            "acknowledged write {key} lost\n{}",
            cluster.dump_logs()
        );
    }
    // Every node converges to the same applied state.
    let converged = wait_until(Duration::from_secs(10), || {
        let statuses: Vec<_> = (1..=3).filter_map(|id| cluster.status(id)).collect();
        statuses.len() == 3 && statuses.iter().all(|s| s.applied_index == statuses[0].commit_index)
    });
    assert!(converged, "nodes did not converge\n{}", cluster.dump_logs());
}
