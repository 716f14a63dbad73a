//! [`PipelinedSession`] against a fake single-node cluster that runs the real state machine
//! ([`KvStore`]) and loses some replies on purpose: every write must be applied exactly once.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::kv::{ApplyResult, KvStore, SESSION_REPLIES_MAX};
use crate::wire::{ErrorCode, ErrorReply, Frame, FrameBody, FrameDecoder, HelloOk, PROTOCOL_VERSION};

/// Decides, per (connection number, write seq), whether the reply is lost after the write applied.
type LoseReply = dyn Fn(usize, u64) -> bool + Send + Sync;

struct KvNode {
    addr: String,
    kv: Arc<Mutex<KvStore>>,
    /// Every write's seq in the order it reached the state machine (retries included).
    arrivals: Arc<Mutex<Vec<u64>>>,
}

impl KvNode {
    fn spawn(lose_reply: impl Fn(usize, u64) -> bool + Send + Sync + 'static) -> KvNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        let addr = listener.local_addr().expect("local addr").to_string();
        let kv = Arc::new(Mutex::new(KvStore::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let lose: Arc<LoseReply> = Arc::new(lose_reply);
        let (node_kv, node_arrivals) = (kv.clone(), arrivals.clone());
        thread::spawn(move || {
            for (number, stream) in listener.incoming().flatten().enumerate() {
                let (kv, arrivals, lose) = (node_kv.clone(), node_arrivals.clone(), lose.clone());
                thread::spawn(move || serve(stream, number, &kv, &arrivals, &*lose));
            }
        });
        KvNode { addr, kv, arrivals }
    }
}

fn serve(mut stream: TcpStream, number: usize, kv: &Mutex<KvStore>, arrivals: &Mutex<Vec<u64>>, lose: &LoseReply) {
    let mut decoder = FrameDecoder::new();
    while let Some(frame) = frames::read_frame(&mut stream, &mut decoder) {
        let (command, seq) = match frame.body {
            FrameBody::Hello(_) => {
                let ok = HelloOk { cluster_id: 7, node_id: 1, protocol_version: PROTOCOL_VERSION };
                let _ = frames::write_frame(&mut stream, &Frame::new(frame.request_id, FrameBody::HelloOk(ok)));
                continue;
            }
            FrameBody::Request(ClientRequest::RegisterClient) => (Command::Register { sessions_max: 100 }, 0),
            FrameBody::Request(ClientRequest::Write(command)) => {
                let seq = command.session().map_or(0, |s| s.seq);
                arrivals.lock().expect("lock").push(seq);
                (command, seq)
            }
            _ => return,
        };
        let result = {
            let mut kv = kv.lock().expect("lock");
            let index = kv.applied_index() + 1;
            kv.apply(index, &command.to_bytes()).expect("consecutive")
        };
        if seq != 0 && lose(number, seq) {
            continue;
        }
        let body = match result {
            ApplyResult::Registered { session_id } => FrameBody::Reply(ClientReply::Registered { session_id }),
            ApplyResult::Applied(r) | ApplyResult::Duplicate(r) => FrameBody::Reply(ClientReply::from_write_result(&r)),
            other => FrameBody::Error(ErrorReply::new(ErrorCode::StaleSequence, format!("{other:?}"))),
        };
        let _ = frames::write_frame(&mut stream, &Frame::new(frame.request_id, body));
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        cluster_id: 7,
        deadline: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(300),
    }
}

fn create(key: String) -> WriteOp {
    WriteOp::Cas { key: Bytes::from(key), expected: None, new: Bytes::from_static(b"1") }
}

#[test]
fn pipelined_writes_with_lost_replies_are_applied_exactly_once() {
    // On the first two connections every third reply is lost (the write did apply).
    let node = KvNode::spawn(|connection, seq| connection < 2 && seq % 3 == 0);
    let mut session = PipelinedSession::open(vec![node.addr.clone()], options()).expect("registered");
    let handles: Vec<WriteHandle> = (0..64).map(|i| session.submit(create(format!("k{i}"))).expect("submit")).collect();
    assert_eq!(handles.iter().map(|h| h.seq).collect::<Vec<_>>(), (1..=64).collect::<Vec<_>>());
    let completions = session.wait_all();
    assert_eq!(completions.len(), 64);
    for completion in &completions {
        // Creating a key that exists fails: a second application would answer CasFailed.
        assert_eq!(completion.result, Ok(WriteReply::Ok), "{:?}", completion.handle);
    }
    let kv = node.kv.lock().expect("lock");
    assert_eq!(kv.len(), 64);
    assert!(kv.iter().all(|(_, value)| value.as_ref() == b"1"));
    let arrivals = node.arrivals.lock().expect("lock");
    assert!(arrivals.len() > 64, "the lost replies were retried: {} arrivals", arrivals.len());
    assert_eq!(session.first_outstanding(), 65);
    assert_eq!(session.in_flight(), 0);
}

#[test]
fn unanswered_writes_are_resent_in_the_order_given_with_their_seqs() {
    // The first connection answers nothing; later ones answer everything.
    let node = KvNode::spawn(|connection, _| connection == 0);
    let mut session = PipelinedSession::open(vec![node.addr.clone()], options()).expect("registered");
    let handles: Vec<WriteHandle> = (0..8).map(|i| session.submit(create(format!("r{i}"))).expect("submit")).collect();
    assert!(session.poll(Duration::from_millis(100)).is_empty(), "no reply on the first connection");
    session.disconnect();
    let reversed: Vec<WriteHandle> = handles.iter().rev().copied().collect();
    session.resend(&reversed);
    let completions = session.wait_all();
    assert!(completions.iter().all(|c| c.result == Ok(WriteReply::Ok)), "{completions:?}");
    let arrivals = node.arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals[..8], [1, 2, 3, 4, 5, 6, 7, 8], "first sent in seq order");
    assert_eq!(arrivals[8..], [8, 7, 6, 5, 4, 3, 2, 1], "resent in the order given");
}

#[test]
fn first_outstanding_is_the_lowest_unanswered_seq_and_the_window_is_bounded() {
    let node = KvNode::spawn(|_, seq| seq == 1); // seq 1's reply is always lost
    let mut options = options();
    options.deadline = Duration::from_millis(1_500);
    let mut session = PipelinedSession::open(vec![node.addr.clone()], options).expect("registered");
    session.submit(create("stuck".to_string())).expect("submit");
    for i in 0..3 {
        session.submit(create(format!("w{i}"))).expect("submit");
    }
    let mut answered = Vec::new();
    while answered.len() < 3 {
        answered.extend(session.poll(Duration::from_secs(1)).into_iter().map(|c| c.handle.seq));
    }
    answered.sort_unstable();
    assert_eq!(answered, vec![2, 3, 4]);
    assert_eq!(session.first_outstanding(), 1, "seq 1 is still outstanding");
    // Fill the window: the cap is the session's reply window.
    let mut submitted = 1;
    let refused = loop {
        match session.submit(create(format!("fill{submitted}"))) {
            Ok(_) => submitted += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(refused, ClientError::WindowFull { first_outstanding: 1, .. }), "{refused:?}");
    let highest = session.unanswered().last().map_or(0, |h| h.seq);
    assert_eq!(highest - session.first_outstanding(), SESSION_REPLIES_MAX as u64 - 1, "the window is used to the end");
    assert!(session.in_flight() <= PIPELINE_WRITES_IN_FLIGHT_MAX);
    // Seq 1 never gets a definite answer: at its deadline its outcome is unknown.
    let stuck = loop {
        if let Some(c) = session.poll(Duration::from_secs(2)).into_iter().find(|c| c.handle.seq == 1) {
            break c;
        }
    };
    assert!(matches!(stuck.result, Err(ref e) if e.is_outcome_unknown()), "{stuck:?}");
    let kv = node.kv.lock().expect("lock");
    assert_eq!(kv.get(b"stuck").map(|v| v.as_ref()), Some(&b"1"[..]), "it did apply, once");
}

#[test]
fn an_address_that_refused_a_connection_is_skipped_in_redirects_only_for_a_while() {
    use super::pipeline::{refused_recently, REFUSED_HOLD};
    let now = Instant::now();
    let marked = ("127.0.0.1:1".to_string(), now);
    assert!(refused_recently(Some(&marked), "127.0.0.1:1", now + Duration::from_millis(10)));
    assert!(!refused_recently(Some(&marked), "127.0.0.1:2", now), "only the address that refused");
    assert!(
        !refused_recently(Some(&marked), "127.0.0.1:1", now + REFUSED_HOLD),
        "a node back up is followed again once the hold passed"
    );
    assert!(!refused_recently(None, "127.0.0.1:1", now));
}
