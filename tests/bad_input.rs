//! Bad input on a real node: each case gets an error frame (where the protocol allows) and a
//! closed connection, and the node keeps serving a normal client afterwards.

mod support;

use std::time::Duration;

use mini_raft::kv::{Command, Session};
use mini_raft::wire::{
    ClientReply, ClientRequest, ErrorCode, Frame, FrameBody, Hello, ReadConsistency, Role, PROTOCOL_VERSION,
};
use support::{RawConn, TestCluster};

fn node() -> TestCluster {
    let cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("single node elects itself");
    cluster
}

/// A normal client can still write and read.
fn assert_still_serving(cluster: &TestCluster, tag: &str) {
    let mut conn = RawConn::connect(&cluster.addrs[0]).unwrap_or_else(|| panic!("after {tag}: cannot connect"));
    // A fresh session per check: each is a new client.
    let session_id = conn.register().unwrap_or_else(|| panic!("after {tag}: cannot register"));
    let set = Command::Set { session: Session::serial(session_id, 1), key: tag.to_string().into(), value: "ok".into() };
    let reply = conn.request(ClientRequest::Write(set));
    assert!(matches!(reply, Some(FrameBody::Reply(ClientReply::Ok))), "after {tag}: set got {reply:?}");
    let get =
        conn.request(ClientRequest::Get { key: tag.to_string().into(), consistency: ReadConsistency::Linearizable });
    assert_eq!(get, Some(FrameBody::Reply(ClientReply::Value("ok".into()))), "after {tag}");
}

fn expect_error_and_close(conn: &mut RawConn, code: ErrorCode, tag: &str) {
    match conn.recv().map(|f| f.body) {
        Some(FrameBody::Error(e)) => assert_eq!(e.code, code, "{tag}: {}", e.message),
        other => panic!("{tag}: expected an error frame, got {other:?}"),
    }
    assert!(conn.is_closed_by_server(), "{tag}: connection left open");
}

fn handshaken(cluster: &TestCluster) -> RawConn {
    RawConn::connect(&cluster.addrs[0]).expect("connect")
}

#[test]
fn oversized_length_is_refused_before_buffering() {
    let cluster = node();
    let mut conn = handshaken(&cluster);
    conn.send_bytes(&[0xff, 0xff, 0xff, 0xff]);
    expect_error_and_close(&mut conn, ErrorCode::FrameTooLarge, "oversized length");
    assert_still_serving(&cluster, "oversized");
}

#[test]
fn unknown_type_and_version_are_refused() {
    let cluster = node();
    let mut conn = handshaken(&cluster);
    conn.send_bytes(&[0, 0, 0, 10, PROTOCOL_VERSION, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect_error_and_close(&mut conn, ErrorCode::UnknownMessageType, "unknown type");
    let mut conn = handshaken(&cluster);
    conn.send_bytes(&[0, 0, 0, 10, 9, 0x24, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect_error_and_close(&mut conn, ErrorCode::UnsupportedVersion, "unknown version");
    assert_still_serving(&cluster, "unknown-type");
}

#[test]
fn truncated_payload_is_refused() {
    let cluster = node();
    let mut conn = handshaken(&cluster);
    // A Get whose key claims 100 bytes but carries 3.
    let mut payload = vec![0u8];
    payload.extend_from_slice(&100u32.to_be_bytes());
    payload.extend_from_slice(b"abc");
    let mut frame = ((10 + payload.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[PROTOCOL_VERSION, 0x21, 0, 0, 0, 0, 0, 0, 0, 5]);
    frame.extend_from_slice(&payload);
    conn.send_bytes(&frame);
    expect_error_and_close(&mut conn, ErrorCode::MalformedFrame, "truncated payload");
    assert_still_serving(&cluster, "truncated");
}

#[test]
fn garbage_never_takes_the_node_down() {
    let cluster = node();
    let mut rng = mini_raft::raft::rng::Rng::new(0x9E37_79B9_7F4A_7C15);
    for round in 0..20 {
        let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
        let mut garbage = vec![0u8; 512];
        rng.fill(&mut garbage);
        conn.send_bytes(&garbage);
        // Whatever it says, the node must close this connection and keep serving.
        assert!(conn.is_closed_by_server(), "round {round}: garbage connection left open");
    }
    assert_still_serving(&cluster, "garbage");
}

#[test]
fn a_client_that_stops_mid_frame_does_not_block_others() {
    let cluster = node();
    let mut stalled = handshaken(&cluster);
    stalled.send_bytes(&[0, 0, 0, 40, PROTOCOL_VERSION, 0x20, 0, 0]); // half a header, then silence
    assert_still_serving(&cluster, "stalled-neighbour");
    drop(stalled);
    assert_still_serving(&cluster, "stalled-gone");
}

#[test]
fn handshake_is_required_and_other_clusters_are_refused() {
    let cluster = node();
    let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
    conn.send(&Frame::new(1, FrameBody::Request(ClientRequest::Status)));
    expect_error_and_close(&mut conn, ErrorCode::HandshakeRequired, "no hello");

    let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
    let hello = Hello { role: Role::Peer, cluster_id: 999, node_id: 2, protocol_version: PROTOCOL_VERSION };
    conn.send(&Frame::new(1, FrameBody::Hello(hello)));
    expect_error_and_close(&mut conn, ErrorCode::ClusterMismatch, "wrong cluster peer");

    let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
    let hello = Hello { role: Role::Peer, cluster_id: 1, node_id: 9, protocol_version: PROTOCOL_VERSION };
    conn.send(&Frame::new(1, FrameBody::Hello(hello)));
    expect_error_and_close(&mut conn, ErrorCode::BadHello, "unknown peer id");
    assert_still_serving(&cluster, "handshake");
}

#[test]
fn raftd_rejects_bad_flags_and_occupied_ports() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftd")).args(["--id", "x"]).output().expect("run raftd");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id needs a positive integer"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftd"))
        .args(["--id", "1", "--listen", "127.0.0.1:0", "--peers", "1=127.0.0.1:1", "--data-dir", "unused"])
        .args(["--wal-sync", "sometimes"])
        .output()
        .expect("run raftd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--wal-sync must be loop or thread, got \"sometimes\""), "{stderr}");

    let cluster = node();
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = format!("1={}", cluster.addrs[0]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftd"))
        .args(["--id", "1", "--listen", &cluster.addrs[0], "--peers", &peers, "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run raftd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    // The running node holds its data directory: a second node on it is refused.
    let other = "1=127.0.0.1:1".to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftd"))
        .args(["--id", "1", "--listen", "127.0.0.1:0", "--peers", &other, "--data-dir"])
        .arg(cluster.node_dir(1))
        .output()
        .expect("run raftd");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_half_closed_client_still_gets_its_replies() {
    let cluster = node();
    let mut conn = handshaken(&cluster);
    let session_id = conn.register().expect("a session");
    let set = Command::Set { session: Session::serial(session_id, 1), key: "half".into(), value: "closed".into() };
    conn.send(&Frame::new(1, FrameBody::Request(ClientRequest::Write(set))));
    conn.send(&Frame::new(2, FrameBody::Request(ClientRequest::Status)));
    conn.stream.shutdown(std::net::Shutdown::Write).expect("half-close");
    // Replies may come in any order (protocol.md §2): collect both, match by request id.
    let mut replies: Vec<(u64, FrameBody)> =
        (0..2).filter_map(|_| conn.recv()).map(|f| (f.request_id, f.body)).collect();
    replies.sort_by_key(|(id, _)| *id);
    assert_eq!(replies.len(), 2, "both requests answered after the half-close: {replies:?}");
    assert_eq!(replies[0], (1, FrameBody::Reply(ClientReply::Ok)));
    assert!(matches!(replies[1], (2, FrameBody::Reply(ClientReply::Status(_)))), "{:?}", replies[1]);
    assert!(conn.is_closed_by_server(), "the server closes once everything is answered");
}

#[test]
fn an_undecodable_frame_is_refused_with_its_own_request_id() {
    let cluster = node();
    let mut conn = handshaken(&cluster);
    // A Get whose key is over the 4 KiB limit, request id 7.
    let key = vec![b'k'; 5000];
    let mut payload = vec![0u8];
    payload.extend_from_slice(&(key.len() as u32).to_be_bytes());
    payload.extend_from_slice(&key);
    let mut frame = ((10 + payload.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[PROTOCOL_VERSION, 0x21, 0, 0, 0, 0, 0, 0, 0, 7]);
    frame.extend_from_slice(&payload);
    conn.send_bytes(&frame);
    let reply = conn.recv().expect("an error frame");
    assert_eq!(reply.request_id, 7);
    assert!(matches!(reply.body, FrameBody::Error(ref e) if e.code == ErrorCode::LimitExceeded), "{reply:?}");
    assert_still_serving(&cluster, "oversized-key");
}

#[test]
fn a_hello_trickled_byte_by_byte_is_cut_off_at_the_handshake_timeout() {
    let cluster = node();
    let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
    let hello = Hello { role: Role::Client, cluster_id: 1, node_id: 0, protocol_version: PROTOCOL_VERSION };
    let bytes = Frame::new(1, FrameBody::Hello(hello)).to_bytes().expect("encode");
    let started = std::time::Instant::now();
    // One byte every 300 ms: each byte resets an idle timer, but not a handshake deadline.
    for byte in bytes.iter() {
        if std::io::Write::write_all(&mut conn.stream, &[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    assert!(conn.is_closed_by_server(), "a trickled Hello must not hold a connection past the handshake timeout");
    assert!(started.elapsed() < Duration::from_secs(9), "cut off only after {:?}", started.elapsed());
}

#[test]
fn forged_peer_frames_are_refused_and_the_node_keeps_serving() {
    use mini_raft::raft::{ConfState, Entry, EntryKind, Message, MessageBody, SnapshotMeta};
    use mini_raft::wire::{SnapshotChunk, PROTOCOL_VERSION};
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let entry = |index| Entry { index, term: 1, kind: EntryKind::Normal, data: "x".into() };
    let forged: Vec<(&str, FrameBody)> = vec![
        (
            "overflowing prev index",
            FrameBody::Peer(Message {
                from: 2,
                to: 1,
                term: 1,
                body: MessageBody::AppendEntries {
                    prev_log_index: u64::MAX,
                    prev_log_term: 1,
                    leader_commit: u64::MAX,
                    entries: vec![entry(u64::MAX)],
                },
            }),
        ),
        (
            "huge term",
            FrameBody::Peer(Message {
                from: 2,
                to: 1,
                term: u64::MAX,
                body: MessageBody::Heartbeat { commit: 0, read_seq: 0 },
            }),
        ),
        (
            "voter 0 in a snapshot",
            FrameBody::SnapshotChunk(SnapshotChunk {
                from: 2,
                to: 1,
                term: 1,
                meta: SnapshotMeta { index: 50, term: 1, conf: ConfState::from_voters(vec![0, 2]) },
                offset: 0,
                total_bytes: 1,
                data: "x".into(),
                done: true,
            }),
        ),
    ];
    for (tag, body) in forged {
        let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
        let hello = Hello { role: Role::Peer, cluster_id: 1, node_id: 2, protocol_version: PROTOCOL_VERSION };
        conn.send(&Frame::new(0, FrameBody::Hello(hello)));
        assert!(matches!(conn.recv().map(|f| f.body), Some(FrameBody::HelloOk(_))), "{tag}: handshake");
        conn.send(&Frame::new(0, body));
        match conn.recv().map(|f| f.body) {
            Some(FrameBody::Error(e)) => assert!(
                matches!(e.code, ErrorCode::MalformedFrame | ErrorCode::LimitExceeded),
                "{tag}: {:?} {}",
                e.code,
                e.message
            ),
            other => panic!("{tag}: expected an error frame, got {other:?}"),
        }
        assert!(conn.is_closed_by_server(), "{tag}: connection left open");
    }
    let mut client = cluster.client();
    client.set(b"after-forgery", b"ok").expect("the cluster still takes writes");
    let got = client.get(b"after-forgery", ReadConsistency::Linearizable).expect("and reads");
    assert_eq!(got.value.as_deref(), Some(&b"ok"[..]));
    for id in 1..=3 {
        assert!(cluster.status(id).is_some(), "node {id} is still up");
    }
    cluster.kill(1);
}

#[test]
fn a_version_1_client_is_told_the_version_this_node_speaks() {
    let cluster = node();
    let mut conn = RawConn::open(&cluster.addrs[0]).expect("connect");
    // A protocol-1 Hello (version byte 1, protocol_version 1), request id 1.
    let mut hello = vec![0, 0, 0, 28, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    hello.extend_from_slice(&1u64.to_be_bytes());
    hello.extend_from_slice(&0u64.to_be_bytes());
    hello.push(1);
    conn.send_bytes(&hello);
    let reply = conn.recv().expect("an error frame");
    assert_eq!(reply.request_id, 0, "the header was not parsed (protocol.md §2.1)");
    match reply.body {
        FrameBody::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion);
            assert_eq!(e.message, "unsupported protocol version 1; this node speaks 3");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(conn.is_closed_by_server());
    assert_still_serving(&cluster, "version-1");
}
