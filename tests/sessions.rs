//! Client sessions on real `raftd` processes: exactly-once survives eviction (a retry of an
//! evicted session is refused, never run again), and a pipelined session whose replies are lost
//! gets every write applied exactly once when it resends them, in another order.

mod support;

use std::time::Duration;

use bytes::Bytes;
use mini_raft::client::{ClientError, ClientOptions, PipelinedSession, WriteOp, WriteReply};
use mini_raft::kv::{Command, Session};
use mini_raft::wire::{ClientReply, ClientRequest, ErrorCode, FrameBody, ReadConsistency};
use support::{wait_until, RawConn, TestCluster};

fn ok() -> Option<FrameBody> {
    Some(FrameBody::Reply(ClientReply::Ok))
}

fn set(session: Session, key: &str, value: &str) -> ClientRequest {
    ClientRequest::Write(Command::Set { session, key: key.to_string().into(), value: value.to_string().into() })
}

fn read(cluster: &TestCluster, key: &str) -> Option<Bytes> {
    let mut client = cluster.client();
    let answer = client.get(key.as_bytes(), ReadConsistency::Linearizable);
    answer.unwrap_or_else(|e| panic!("get {key}: {e}\n{}", cluster.dump_logs())).value
}

#[test]
fn a_retry_after_eviction_is_refused_and_the_write_applied_once() {
    let cluster = TestCluster::start(3, &["--sessions-max", "3"]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let mut conn = RawConn::connect(&cluster.addrs[leader - 1]).expect("connect to the leader");
    let mine = conn.register().expect("my session");
    let theirs = conn.register().expect("their session");
    // My increment of n from 0 to 1 succeeds (its reply will be "lost"); then another client
    // resets n to 0, and that reset is acknowledged.
    assert_eq!(conn.request(set(Session::serial(theirs, 1), "n", "0")), ok());
    let increment = ClientRequest::Write(Command::Cas {
        session: Session::serial(mine, 1),
        key: "n".into(),
        expected: Some("0".into()),
        new: "1".into(),
    });
    assert_eq!(conn.request(increment.clone()), ok());
    assert_eq!(conn.request(set(Session::serial(theirs, 2), "n", "0")), ok());
    // Three newer registrations with a cap of 3: mine is the least recently active, evicted first.
    for _ in 0..3 {
        conn.register().expect("another session");
    }
    // The retry must not run again: that would move n to 1 on top of their acknowledged reset.
    match conn.request(increment) {
        Some(FrameBody::Error(e)) => assert_eq!(e.code, ErrorCode::SessionExpired, "{}", e.message),
        other => panic!("the retry of an evicted session got {other:?}\n{}", cluster.dump_logs()),
    }
    assert_eq!(read(&cluster, "n").as_deref(), Some(&b"0"[..]), "the increment ran twice");

    // The client library: its evicted session makes the next write's outcome unknown, and the
    // write after that registers a new session.
    let mut client = cluster.client();
    client.set(b"c", b"1").expect("first write registers");
    for _ in 0..3 {
        conn.register().expect("another session");
    }
    let error = client.set(b"c", b"2").expect_err("the session was evicted");
    assert!(matches!(error, ClientError::OutcomeUnknown { .. }), "{error:?}");
    client.set(b"c", b"3").expect("a fresh session");
    assert_eq!(read(&cluster, "c").as_deref(), Some(&b"3"[..]));
}

#[test]
fn sixty_four_pipelined_writes_with_lost_replies_apply_exactly_once() {
    let cluster = TestCluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let options = ClientOptions { deadline: Duration::from_secs(20), ..ClientOptions::default() };
    let mut session = PipelinedSession::open(cluster.addrs.clone(), options).expect("a session");
    let session_id = session.session_id().expect("registered");
    let keys: Vec<String> = (0..64).map(|i| format!("p{i:02}")).collect();
    for key in &keys {
        let op = WriteOp::Set { key: key.clone().into(), value: "mine".into() };
        session.submit(op).expect("submit");
    }
    let mut answered = Vec::new();
    while answered.len() < 20 {
        answered.extend(session.poll(Duration::from_secs(5)));
    }
    // Every write is in the log and applied (the session id is its registration's index, and a
    // stable leader proposes the 64 writes right after it); then the connection goes, taking the
    // replies not yet read with it.
    let applied = wait_until(Duration::from_secs(10), || {
        cluster.status(leader).is_some_and(|s| s.applied_index >= session_id + 64)
    });
    assert!(applied, "the writes did not apply\n{}", cluster.dump_logs());
    session.disconnect();
    // Another client overwrites every key, acknowledged: a second application of a pipelined
    // write would now show up as "mine".
    let mut other = cluster.client();
    for key in &keys {
        other.set(key.as_bytes(), b"theirs").unwrap_or_else(|e| panic!("set {key}: {e}"));
    }
    let mut unanswered = session.unanswered();
    assert!(!unanswered.is_empty(), "every reply was read before the disconnect");
    unanswered.reverse();
    session.resend(&unanswered);
    answered.extend(session.wait_all());
    assert_eq!(answered.len(), 64);
    for completion in &answered {
        assert_eq!(completion.result, Ok(WriteReply::Ok), "seq {}", completion.handle.seq);
    }
    for key in &keys {
        assert_eq!(read(&cluster, key).as_deref(), Some(&b"theirs"[..]), "{key} was written twice");
    }
}
