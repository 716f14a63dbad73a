//! The client against tiny fake nodes: a `TcpListener` thread per node that speaks the wire
//! protocol through `crate::wire` and answers each request as the test's script says. A fake node
//! answers `RegisterClient` itself (session ids 101, 102, ...) unless the test scripts it too.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::wire::{
    ErrorCode, ErrorReply, Frame, FrameBody, FrameDecoder, Hello, HelloOk, NodeRole, Role, PROTOCOL_VERSION,
};

/// What a fake node does with one request.
enum Action {
    Reply(ClientReply),
    /// Answer, then close the connection (as a node does with an idle client).
    ReplyAndClose(ClientReply),
    Error(ErrorCode),
    /// Close the connection without answering.
    Drop,
    /// Send bytes that are not a frame of this protocol version.
    Garbage,
}

/// How a fake node answers `Hello`.
#[derive(Clone, Copy)]
enum HelloAnswer {
    Accept { cluster_id: u64 },
    Refuse(ErrorCode),
}

type Script = dyn Fn(usize, &ClientRequest) -> Action + Send + Sync;

/// What a fake node records, shared with its connection threads.
#[derive(Default)]
struct Seen {
    hellos: Mutex<Vec<Hello>>,
    requests: Mutex<Vec<ClientRequest>>,
    /// `RegisterClient`s answered by the node itself.
    registrations: AtomicU64,
}

struct FakeNode {
    addr: String,
    seen: Arc<Seen>,
}

impl FakeNode {
    /// A node with id `node_id` that registers sessions itself and answers the n-th other request
    /// it receives (0-based, over all connections) with `script(n, request)`.
    fn spawn(
        node_id: u64,
        hello: HelloAnswer,
        script: impl Fn(usize, &ClientRequest) -> Action + Send + Sync + 'static,
    ) -> FakeNode {
        FakeNode::spawn_with(node_id, hello, true, script)
    }

    /// Like `spawn`, but `RegisterClient` goes to the script too (`auto_register` false).
    fn spawn_with(
        node_id: u64,
        hello: HelloAnswer,
        auto_register: bool,
        script: impl Fn(usize, &ClientRequest) -> Action + Send + Sync + 'static,
    ) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        let addr = listener.local_addr().expect("local addr").to_string();
        let seen = Arc::new(Seen::default());
        let script: Arc<Script> = Arc::new(script);
        let node_seen = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, script) = (node_seen.clone(), script.clone());
                thread::spawn(move || serve(stream, node_id, hello, auto_register, &seen, &*script));
            }
        });
        FakeNode { addr, seen }
    }

    fn requests(&self) -> Vec<ClientRequest> {
        self.seen.requests.lock().expect("lock").clone()
    }

    fn hellos(&self) -> Vec<Hello> {
        self.seen.hellos.lock().expect("lock").clone()
    }

    fn registrations(&self) -> u64 {
        self.seen.registrations.load(Ordering::SeqCst)
    }
}

fn serve(
    mut stream: TcpStream,
    node_id: u64,
    hello_answer: HelloAnswer,
    auto_register: bool,
    seen: &Seen,
    script: &Script,
) {
    let mut decoder = FrameDecoder::new();
    let Some(frame) = frames::read_frame(&mut stream, &mut decoder) else { return };
    let FrameBody::Hello(hello) = frame.body else { return };
    seen.hellos.lock().expect("lock").push(hello);
    match hello_answer {
        HelloAnswer::Accept { cluster_id } => {
            let ok = HelloOk { cluster_id, node_id, protocol_version: PROTOCOL_VERSION };
            write_frame(&mut stream, Frame::new(frame.request_id, FrameBody::HelloOk(ok)));
        }
        HelloAnswer::Refuse(code) => {
            let error = ErrorReply::new(code, "refused by the fake node");
            write_frame(&mut stream, Frame::new(frame.request_id, FrameBody::Error(error)));
            return;
        }
    }
    while let Some(frame) = frames::read_frame(&mut stream, &mut decoder) {
        let FrameBody::Request(request) = frame.body else { return };
        if auto_register && request == ClientRequest::RegisterClient {
            let session_id = 101 + seen.registrations.fetch_add(1, Ordering::SeqCst);
            let reply = FrameBody::Reply(ClientReply::Registered { session_id });
            write_frame(&mut stream, Frame::new(frame.request_id, reply));
            continue;
        }
        let number = {
            let mut requests = seen.requests.lock().expect("lock");
            requests.push(request.clone());
            requests.len() - 1
        };
        let body = match script(number, &request) {
            Action::Reply(reply) => FrameBody::Reply(reply),
            Action::ReplyAndClose(reply) => {
                write_frame(&mut stream, Frame::new(frame.request_id, FrameBody::Reply(reply)));
                return;
            }
            Action::Error(code) => FrameBody::Error(ErrorReply::new(code, "scripted error")),
            Action::Drop => return,
            Action::Garbage => {
                let _ = stream.write_all(&[0, 0, 0, 10, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
                return;
            }
        };
        write_frame(&mut stream, Frame::new(frame.request_id, body));
    }
}

fn write_frame(stream: &mut TcpStream, frame: Frame) {
    let _ = frames::write_frame(stream, &frame);
}

/// An address where nothing listens: bound, then released.
fn closed_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
    listener.local_addr().expect("local addr").to_string()
}

fn options(deadline_ms: u64) -> ClientOptions {
    ClientOptions {
        cluster_id: 7,
        deadline: Duration::from_millis(deadline_ms),
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
    }
}

fn accept() -> HelloAnswer {
    HelloAnswer::Accept { cluster_id: 7 }
}

fn session_of(request: &ClientRequest) -> Session {
    match request {
        ClientRequest::Write(command) => command.session().unwrap_or_else(|| panic!("{command:?} has no session")),
        other => panic!("expected a write, got {other:?}"),
    }
}

#[test]
fn handshake_sends_a_client_hello_and_reports_the_answering_node() {
    let node = FakeNode::spawn(3, accept(), |_, _| Action::Reply(ClientReply::Ok));
    let mut client = Client::connect(vec![node.addr.clone()], options(2_000)).expect("connects");
    assert_eq!(client.connected_to(), Some(node.addr.as_str()));
    let hellos = node.hellos();
    assert_eq!(hellos, vec![Hello { role: Role::Client, cluster_id: 7, node_id: 0, protocol_version: 3 }]);

    let answer = client.set(b"foo", b"bar").expect("set succeeds");
    assert_eq!((answer.addr.as_str(), answer.node_id), (node.addr.as_str(), 3));
    // One connection serves both the handshake and the request.
    assert_eq!(node.hellos().len(), 1);
    let session = session_of(&node.requests()[0]);
    assert_eq!(session, Session { session_id: 101, seq: 1, first_outstanding: 1 });
}

#[test]
fn not_leader_redirects_to_the_leader_address() {
    let leader = FakeNode::spawn(2, accept(), |_, _| Action::Reply(ClientReply::Value(Bytes::from_static(b"v"))));
    let leader_addr = leader.addr.clone();
    let follower = FakeNode::spawn(1, accept(), move |_, _| {
        Action::Reply(ClientReply::NotLeader { leader_id: 2, leader_addr: leader_addr.clone() })
    });
    let mut client = Client::new(vec![follower.addr.clone()], options(2_000)).expect("client");

    let answer = client.get(b"k", ReadConsistency::Linearizable).expect("get succeeds");
    assert_eq!(answer.value, Some(Bytes::from_static(b"v")));
    assert_eq!((answer.addr.as_str(), answer.node_id), (leader.addr.as_str(), 2));
    assert_eq!(follower.requests().len(), 1);
    assert_eq!(leader.requests().len(), 1);

    // The next call goes straight to the leader.
    client.get(b"k", ReadConsistency::Linearizable).expect("second get");
    assert_eq!(follower.requests().len(), 1);
}

#[test]
fn disconnect_starts_the_next_call_at_a_random_node_with_the_same_session() {
    let nodes: Vec<FakeNode> =
        (1..=2).map(|id| FakeNode::spawn(id, accept(), |_, _| Action::Reply(ClientReply::Ok))).collect();
    let mut client = Client::new(nodes.iter().map(|node| node.addr.clone()).collect(), options(2_000)).expect("client");
    client.set(b"k", b"v0").expect("first set");
    for i in 1..40 {
        client.disconnect();
        assert_eq!(client.connected_to(), None);
        client.set(b"k", format!("v{i}").as_bytes()).expect("set");
    }
    let requests: Vec<Vec<ClientRequest>> = nodes.iter().map(FakeNode::requests).collect();
    assert!(
        requests.iter().all(|node| !node.is_empty()),
        "every node got calls: {:?}",
        requests.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut seqs: Vec<u64> = requests.iter().flatten().map(|request| session_of(request).seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    assert_eq!(nodes.iter().map(FakeNode::registrations).sum::<u64>(), 1, "one session throughout");
}

#[test]
fn write_is_retried_with_the_same_session_after_the_connection_drops() {
    // The first request is dropped mid-flight; every later one succeeds.
    let node = FakeNode::spawn(1, accept(), |n, _| if n == 0 { Action::Drop } else { Action::Reply(ClientReply::Ok) });
    let mut client = Client::new(vec![node.addr.clone()], options(2_000)).expect("client");

    client.set(b"k", b"v1").expect("set succeeds after a retry");
    client.set(b"k", b"v2").expect("second set");
    let requests = node.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0], requests[1], "the retry resends the identical write");
    let (first, retry, next) = (session_of(&requests[0]), session_of(&requests[1]), session_of(&requests[2]));
    assert_eq!(first, retry);
    assert_eq!(first.seq, 1);
    assert_eq!(next, Session::serial(first.session_id, 2));
    assert_eq!(node.registrations(), 1, "one registration serves every write");
    assert_eq!(node.hellos().len(), 2, "the client reconnected once");
}

#[test]
fn overloaded_and_outcome_unknown_are_retried_with_the_same_seq() {
    let node = FakeNode::spawn(1, accept(), |n, _| match n {
        0 => Action::Error(ErrorCode::Overloaded),
        1 => Action::Error(ErrorCode::OutcomeUnknown),
        _ => Action::Reply(ClientReply::Ok),
    });
    let mut client = Client::new(vec![node.addr.clone()], options(2_000)).expect("client");
    client.set(b"k", b"v").expect("set succeeds");
    let sessions: Vec<Session> = node.requests().iter().map(session_of).collect();
    assert_eq!(sessions.len(), 3);
    assert!(sessions.iter().all(|s| *s == sessions[0]), "{sessions:?}");
}

#[test]
fn exhausted_deadline_names_every_node_tried_and_what_it_said() {
    let refused = closed_addr();
    let lost = FakeNode::spawn(2, accept(), |_, _| {
        Action::Reply(ClientReply::NotLeader { leader_id: 0, leader_addr: String::new() })
    });
    let mut client = Client::new(vec![refused.clone(), lost.addr.clone()], options(300)).expect("client");
    client.register().expect("the node registers sessions, though it knows no leader");
    let first_session = client.session().expect("registered");

    let started = Instant::now();
    let error = client.set(b"foo", b"bar").expect_err("no leader");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let message = error.to_string();
    assert!(message.starts_with("set \"foo\": no leader within"), "{message}");
    assert!(message.contains(&format!("{refused} refused connection")), "{message}");
    assert!(message.contains(&format!("{} answered NotLeader(leader unknown)", lost.addr)), "{message}");
    assert!(message.contains("may or may not have taken effect"), "{message}");
    assert!(error.is_outcome_unknown());
    let ClientError::GaveUp { nodes, attempts, .. } = error else { panic!("expected GaveUp, got {error:?}") };
    assert_eq!(nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>(), vec![refused, lost.addr.clone()]);
    assert!(attempts >= 2, "{attempts}");
    // A write whose fate is unknown retires its seq, not its session: the next write takes seq 2,
    // whose first_outstanding seals seq 1.
    assert_eq!(client.session(), Some(Session::serial(first_session.session_id, 2)));
}

#[test]
fn cluster_mismatch_is_reported_without_waiting_for_the_deadline() {
    let foreign = FakeNode::spawn(1, HelloAnswer::Refuse(ErrorCode::ClusterMismatch), |_, _| Action::Drop);
    let other_cluster = FakeNode::spawn(2, HelloAnswer::Accept { cluster_id: 99 }, |_, _| Action::Drop);
    let started = Instant::now();
    let cluster = vec![foreign.addr.clone(), other_cluster.addr.clone()];
    let error = Client::connect(cluster, options(5_000)).err().expect("refused");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(error, ClientError::ClusterMismatch { cluster_id: 7, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("no node belongs to cluster 7"), "{message}");
    assert!(message.contains(&format!("{} answered ClusterMismatch", foreign.addr)), "{message}");
    assert!(message.contains(&format!("{} belongs to cluster 99", other_cluster.addr)), "{message}");
}

#[test]
fn a_node_of_another_cluster_is_skipped_for_the_right_one() {
    let foreign = FakeNode::spawn(1, HelloAnswer::Refuse(ErrorCode::ClusterMismatch), |_, _| Action::Drop);
    let good = FakeNode::spawn(2, accept(), |_, _| Action::Reply(ClientReply::NotFound));
    let mut client = Client::new(vec![foreign.addr.clone(), good.addr.clone()], options(2_000)).expect("client");
    for _ in 0..3 {
        let answer = client.get(b"k", ReadConsistency::Local).expect("get");
        assert_eq!((answer.value, answer.node_id), (None, 2));
    }
}

#[test]
fn definite_answers_advance_the_seq() {
    let node = FakeNode::spawn(1, accept(), |_, request| match request {
        ClientRequest::Write(Command::Delete { .. }) => Action::Reply(ClientReply::NotFound),
        ClientRequest::Write(Command::Cas { .. }) => {
            Action::Reply(ClientReply::CasFailed { current: Some(Bytes::from_static(b"now")) })
        }
        _ => Action::Reply(ClientReply::Ok),
    });
    let mut client = Client::new(vec![node.addr.clone()], options(2_000)).expect("client");
    assert!(!client.delete(b"k").expect("delete").value);
    let cas = client.cas(b"k", None, b"new").expect("cas answered").value;
    assert_eq!(cas, Err(CasFailed { current: Some(Bytes::from_static(b"now")) }));
    client.set(b"k", b"v").expect("set");
    let seqs: Vec<u64> = node.requests().iter().map(|r| session_of(r).seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let ClientRequest::Write(Command::Cas { expected, .. }) = &node.requests()[1] else { panic!("not a cas") };
    assert_eq!(*expected, None);
}

#[test]
fn session_expired_is_an_unknown_outcome_and_the_next_write_registers_again() {
    // The node forgets session 101 after its first write; 102 works.
    let node = FakeNode::spawn(1, accept(), |_, request| match session_of(request).session_id {
        101 => Action::Error(ErrorCode::SessionExpired),
        _ => Action::Reply(ClientReply::Ok),
    });
    let mut client = Client::new(vec![node.addr.clone()], options(2_000)).expect("client");
    let error = client.set(b"k", b"v").expect_err("expired");
    assert!(matches!(error, ClientError::OutcomeUnknown { .. }), "{error:?}");
    assert!(error.is_outcome_unknown());
    assert!(error.to_string().contains("may or may not have taken effect"), "{error}");
    assert_eq!(node.requests().len(), 1, "not retried on the dead session");
    assert_eq!(client.session(), None, "the expired session is dropped");
    client.set(b"k", b"v2").expect("a new session");
    assert_eq!(node.registrations(), 2);
    assert_eq!(session_of(&node.requests()[1]), Session::serial(102, 1));
}

#[test]
fn a_lost_registration_is_sent_again() {
    // The first RegisterClient gets OutcomeUnknown, the second is dropped mid-flight; the third works.
    let node = FakeNode::spawn_with(1, accept(), false, |n, request| match (n, request) {
        (0, _) => Action::Error(ErrorCode::OutcomeUnknown),
        (1, _) => Action::Drop,
        (_, ClientRequest::RegisterClient) => Action::Reply(ClientReply::Registered { session_id: 9 }),
        _ => Action::Reply(ClientReply::Ok),
    });
    let mut client = Client::new(vec![node.addr.clone()], options(2_000)).expect("client");
    client.set(b"k", b"v").expect("set after the registration went through");
    let requests = node.requests();
    assert_eq!(
        requests[..3],
        [ClientRequest::RegisterClient, ClientRequest::RegisterClient, ClientRequest::RegisterClient]
    );
    assert_eq!(session_of(&requests[3]), Session::serial(9, 1));
}

#[test]
fn reads_and_status_need_no_session() {
    let node = FakeNode::spawn(1, accept(), |_, _| Action::Reply(ClientReply::NotFound));
    let mut client = Client::new(vec![node.addr.clone()], options(2_000)).expect("client");
    assert_eq!(client.get(b"k", ReadConsistency::Linearizable).expect("get").value, None);
    assert_eq!(node.registrations(), 0);
    assert_eq!(client.session(), None);
}

#[test]
fn a_dead_leader_named_by_followers_is_not_hammered() {
    // Both nodes keep naming a leader that refuses connections (a failover in progress).
    let dead = closed_addr();
    let redirect_to = dead.clone();
    let name_dead = move |_: usize, _: &ClientRequest| {
        Action::Reply(ClientReply::NotLeader { leader_id: 3, leader_addr: redirect_to.clone() })
    };
    let (a, b) = (FakeNode::spawn(1, accept(), name_dead.clone()), FakeNode::spawn(2, accept(), name_dead));
    let mut client = Client::new(vec![a.addr.clone(), b.addr.clone()], options(600)).expect("client");
    let error = client.get(b"k", ReadConsistency::Linearizable).expect_err("no leader");
    let ClientError::GaveUp { nodes, attempts, .. } = error else { panic!("expected GaveUp, got {error:?}") };
    let dead_attempts = nodes.iter().find(|n| n.addr == dead).map_or(0, |n| n.attempts);
    // It is tried once; after that the client backs off and asks the followers instead of
    // bouncing between a follower and the refused port.
    assert_eq!(dead_attempts, 1, "{nodes:?}");
    assert!((3..40).contains(&attempts), "{attempts} attempts in 600 ms: {nodes:?}");
    assert!(a.requests().len() + b.requests().len() >= 2);
}

#[test]
fn garbage_from_a_node_is_survived_and_the_next_node_answers() {
    let liar = FakeNode::spawn(1, accept(), |_, _| Action::Garbage);
    let good = FakeNode::spawn(2, accept(), |_, _| Action::Reply(ClientReply::Ok));
    let mut client = Client::new(vec![liar.addr.clone(), good.addr.clone()], options(2_000)).expect("client");
    for _ in 0..2 {
        assert_eq!(client.set(b"k", b"v").expect("set").node_id, 2);
    }
}

#[test]
fn status_asks_one_node_once() {
    let report = StatusReport {
        node_id: 4,
        role: NodeRole::Leader,
        term: 3,
        leader_id: 4,
        commit_index: 10,
        applied_index: 9,
        last_log_index: 11,
        log_size_bytes: 4096,
        snapshot_index: 5,
        snapshot_term: 2,
        peers: Vec::new(),
        http_addr: None,
    };
    let expected = report.clone();
    let node = FakeNode::spawn(4, accept(), move |_, _| Action::Reply(ClientReply::Status(report.clone())));
    let refused = closed_addr();
    let mut client = Client::new(vec![node.addr.clone(), refused.clone()], options(2_000)).expect("client");
    assert_eq!(client.status(&node.addr).expect("status").value, expected);
    let error = client.status(&refused).expect_err("nothing listens");
    assert_eq!(error.to_string(), format!("{refused} refused connection"));
}

#[test]
fn oversized_key_is_refused_before_sending() {
    let mut client = Client::new(vec!["127.0.0.1:1".to_string()], options(2_000)).expect("client");
    let key = vec![b'k'; KEY_BYTES_MAX + 1];
    // Refused before anything is sent: not even a registration (nothing listens at that address).
    let started = Instant::now();
    assert!(matches!(client.set(&key, b"v"), Err(ClientError::InvalidArgument(_))));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(matches!(client.get(&key, ReadConsistency::Local), Err(ClientError::InvalidArgument(_))));
    assert!(Client::new(Vec::new(), options(100)).is_err());
}

#[test]
fn a_connection_the_node_closed_while_idle_is_replaced_without_moving_on() {
    let close_after_answer = |_: usize, _: &ClientRequest| Action::ReplyAndClose(ClientReply::Ok);
    let (a, b) = (FakeNode::spawn(1, accept(), close_after_answer), FakeNode::spawn(2, accept(), close_after_answer));
    let mut client = Client::new(vec![a.addr.clone(), b.addr.clone()], options(2_000)).expect("client");
    let first = client.set(b"k", b"v1").expect("first set");
    let (same, other) = if first.addr == a.addr { (&a, &b) } else { (&b, &a) };
    // Each next write finds the connection closed (EOF or reset) and reconnects to the same node.
    for _ in 0..3 {
        assert_eq!(client.set(b"k", b"v").expect("set").addr, first.addr);
    }
    assert_eq!(same.requests().len(), 4);
    assert!(other.requests().is_empty(), "the client must not wander to another node");
}
