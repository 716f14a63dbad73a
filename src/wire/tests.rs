//! Tests of the wire layer: every frame round-trips, the decoder handles any split of the stream,
//! and no input (truncated, oversized, random) makes it panic or over-allocate.

use crate::raft::rng::Rng;
use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::kv::{Command, Session, WriteResult};
use crate::raft::membership::{ChangeOp, MemberChange, MemberRole};
use crate::raft::{ConfState, Entry, EntryKind, Message, MessageBody, SnapshotMeta};

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn peer(body: MessageBody) -> FrameBody {
    FrameBody::Peer(Message { from: 1, to: 2, term: 7, body })
}

fn entry(index: u64, kind: EntryKind, data: &[u8]) -> Entry {
    Entry { index, term: 7, kind, data: Bytes::copy_from_slice(data) }
}

fn session(session_id: u64, seq: u64) -> Session {
    Session::serial(session_id, seq)
}

/// At least one frame of every message type, with edge values where they matter.
fn sample_frames() -> Vec<Frame> {
    let bodies = vec![
        FrameBody::Hello(Hello { role: Role::Client, cluster_id: 42, node_id: 0, protocol_version: 3 }),
        FrameBody::Hello(Hello { role: Role::Peer, cluster_id: u64::MAX, node_id: 3, protocol_version: 1 }),
        FrameBody::HelloOk(HelloOk { cluster_id: 42, node_id: 2, protocol_version: 3 }),
        FrameBody::Error(ErrorReply::new(ErrorCode::ClusterMismatch, "wrong cluster")),
        FrameBody::Error(ErrorReply::new(ErrorCode::Unknown(999), "")),
        peer(MessageBody::PreVote { last_log_index: 10, last_log_term: 6 }),
        peer(MessageBody::PreVoteResponse { granted: true }),
        peer(MessageBody::RequestVote { last_log_index: u64::MAX, last_log_term: 0, transfer: false }),
        peer(MessageBody::RequestVote { last_log_index: 7, last_log_term: 3, transfer: true }),
        peer(MessageBody::TimeoutNow),
        peer(MessageBody::RequestVoteResponse { granted: false }),
        peer(MessageBody::AppendEntries { prev_log_index: 4, prev_log_term: 3, leader_commit: 4, entries: vec![] }),
        peer(MessageBody::AppendEntries {
            prev_log_index: 4,
            prev_log_term: 3,
            leader_commit: 5,
            entries: vec![entry(5, EntryKind::Noop, b""), entry(6, EntryKind::Normal, b"payload")],
        }),
        peer(MessageBody::AppendEntriesResponse { reject: true, index: 9, reject_hint_index: 5, reject_hint_term: 2 }),
        peer(MessageBody::Heartbeat { commit: 8, read_seq: 3 }),
        peer(MessageBody::HeartbeatResponse { read_seq: 3 }),
        peer(MessageBody::LogLost { last_index: 41, last_term: 6 }),
        FrameBody::SnapshotChunk(SnapshotChunk {
            from: 1,
            to: 2,
            term: 7,
            meta: SnapshotMeta { index: 100, term: 6, conf: ConfState::from_voters(vec![1, 2, 3]) },
            offset: 10,
            total_bytes: 15,
            data: b("hello"),
            done: true,
        }),
        FrameBody::Request(ClientRequest::Write(Command::Set {
            session: session(7, 1),
            key: b("foo"),
            value: b("bar"),
        })),
        FrameBody::Request(ClientRequest::Get { key: b("foo"), consistency: ReadConsistency::Linearizable }),
        FrameBody::Request(ClientRequest::Get { key: Bytes::new(), consistency: ReadConsistency::Local }),
        FrameBody::Request(ClientRequest::Write(Command::Delete { session: session(7, 2), key: b("foo") })),
        FrameBody::Request(ClientRequest::Write(Command::Cas {
            session: session(7, 3),
            key: b("k"),
            expected: Some(b("old")),
            new: b("new"),
        })),
        FrameBody::Request(ClientRequest::Write(Command::Cas {
            session: Session { session_id: u64::MAX, seq: u64::MAX, first_outstanding: 1 },
            key: b("k"),
            expected: None,
            new: Bytes::new(),
        })),
        FrameBody::Request(ClientRequest::Status),
        FrameBody::Request(ClientRequest::StatusDetailed),
        FrameBody::Request(ClientRequest::MemberList),
        FrameBody::Request(ClientRequest::MemberChange(vec![
            MemberChange { op: ChangeOp::AddVoter, id: 4, address: "10.0.0.4:7001".into() },
            MemberChange { op: ChangeOp::Remove, id: 3, address: String::new() },
        ])),
        FrameBody::Request(ClientRequest::TransferLeader { to: 0 }),
        FrameBody::Request(ClientRequest::TransferLeader { to: 2 }),
        FrameBody::Request(ClientRequest::RegisterClient),
        FrameBody::Reply(ClientReply::Ok),
        FrameBody::Reply(ClientReply::Value(b("bar"))),
        FrameBody::Reply(ClientReply::NotFound),
        FrameBody::Reply(ClientReply::CasFailed { current: Some(b("other")) }),
        FrameBody::Reply(ClientReply::CasFailed { current: None }),
        FrameBody::Reply(ClientReply::Status(StatusReport {
            node_id: 1,
            role: NodeRole::Leader,
            term: 7,
            leader_id: 1,
            commit_index: 100,
            applied_index: 99,
            last_log_index: 101,
            log_size_bytes: 65536,
            snapshot_index: 50,
            snapshot_term: 5,
            peers: vec![PeerStatus { node_id: 2, match_index: 101, next_index: 102 }],
            http_addr: None,
        })),
        FrameBody::Reply(ClientReply::Status(StatusReport {
            node_id: 2,
            role: NodeRole::Follower,
            term: 7,
            leader_id: 1,
            commit_index: 100,
            applied_index: 99,
            last_log_index: 101,
            log_size_bytes: 65536,
            snapshot_index: 50,
            snapshot_term: 5,
            peers: Vec::new(),
            http_addr: Some("127.0.0.1:7102".to_string()),
        })),
        FrameBody::Reply(ClientReply::NotLeader { leader_id: 2, leader_addr: "10.0.0.2:7001".to_string() }),
        FrameBody::Reply(ClientReply::NotLeader { leader_id: 0, leader_addr: String::new() }),
        FrameBody::Reply(ClientReply::Registered { session_id: 1 }),
        FrameBody::Reply(ClientReply::Registered { session_id: u64::MAX }),
        FrameBody::Reply(ClientReply::Members(crate::wire::MembersReport {
            leader_id: 1,
            conf_index: 12,
            joint: true,
            last_index: 40,
            members: vec![
                crate::wire::MemberStatus {
                    node_id: 1,
                    role: MemberRole::Voter,
                    address: "a:1".into(),
                    match_index: 40,
                },
                crate::wire::MemberStatus {
                    node_id: 3,
                    role: MemberRole::Outgoing,
                    address: "c:3".into(),
                    match_index: 0,
                },
                crate::wire::MemberStatus { node_id: 5, role: MemberRole::Learner, address: "".into(), match_index: 9 },
            ],
        })),
    ];
    bodies.into_iter().enumerate().map(|(i, body)| Frame::new(1000 + i as u64, body)).collect()
}

fn encode(frame: &Frame) -> Bytes {
    frame.to_bytes().expect("sample frames encode")
}

/// Decodes every complete frame in `decoder`.
fn drain(decoder: &mut FrameDecoder) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(raw) = decoder.next_frame().expect("valid stream") {
        frames.push(Frame::decode(raw).expect("valid frame"));
    }
    frames
}

fn raw(message_type: MessageType, payload: &[u8]) -> RawFrame {
    RawFrame { message_type, request_id: 1, payload: Bytes::copy_from_slice(payload) }
}

#[test]
fn samples_cover_every_message_type() {
    let covered: BTreeSet<u8> = sample_frames().iter().map(|f| f.message_type().unwrap().code()).collect();
    let all: BTreeSet<u8> = MessageType::ALL.iter().map(|t| t.code()).collect();
    assert_eq!(covered, all);
    for message_type in MessageType::ALL {
        assert_eq!(MessageType::from_code(message_type.code()), Some(*message_type));
    }
}

#[test]
fn every_frame_round_trips() {
    for frame in sample_frames() {
        let bytes = encode(&frame);
        let mut decoder = FrameDecoder::new();
        decoder.feed(&bytes).unwrap();
        assert_eq!(drain(&mut decoder), vec![frame.clone()]);
        assert_eq!(decoder.buffered_bytes(), 0);
        // The length prefix counts every byte after itself.
        let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(length, bytes.len() - LENGTH_PREFIX_BYTES, "{frame:?}");
    }
}

fn stream_of_samples() -> (Vec<Frame>, Vec<u8>) {
    let frames = sample_frames();
    let mut stream = BytesMut::new();
    for frame in &frames {
        frame.encode(&mut stream).unwrap();
    }
    (frames, stream.to_vec())
}

#[test]
fn decoder_fed_one_byte_at_a_time_yields_every_frame() {
    let (frames, stream) = stream_of_samples();
    let mut decoder = FrameDecoder::new();
    let mut decoded = Vec::new();
    for byte in &stream {
        decoder.feed(std::slice::from_ref(byte)).unwrap();
        decoded.extend(drain(&mut decoder));
    }
    assert_eq!(decoded, frames);
}

#[test]
fn decoder_fed_random_splits_yields_every_frame() {
    let (frames, stream) = stream_of_samples();
    let mut rng = Rng::new(42);
    for _ in 0..200 {
        let mut decoder = FrameDecoder::new();
        let mut decoded = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let take = 1 + (rng.next_u64() as usize) % rest.len().min(97);
            decoder.feed(&rest[..take]).unwrap();
            rest = &rest[take..];
            decoded.extend(drain(&mut decoder));
        }
        assert_eq!(decoded, frames);
    }
}

#[test]
fn oversized_length_is_rejected_before_the_body_is_buffered() {
    let mut decoder = FrameDecoder::new();
    let error = decoder.feed(&[0xff, 0xff, 0xff, 0xff, 1]).unwrap_err();
    assert_eq!(error.to_string(), "frame length 4294967295 exceeds maximum 16777216");
    assert_eq!(error.error_code(), ErrorCode::FrameTooLarge);
    assert_eq!(decoder.buffered_bytes(), 0);
    // The stream has lost its framing: the decoder stays failed and buffers nothing more.
    assert_eq!(decoder.feed(&[0; 64]), Err(error.clone()));
    assert_eq!(decoder.next_frame(), Err(error));
    assert_eq!(decoder.buffered_bytes(), 0);

    let just_over = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
    assert!(matches!(FrameDecoder::new().feed(&just_over), Err(WireError::FrameTooLarge { .. })));
    let mut at_limit = FrameDecoder::new();
    at_limit.feed(&(FRAME_BYTES_MAX as u32).to_be_bytes()).unwrap();
    assert_eq!(at_limit.next_frame(), Ok(None));
    let mut small = FrameDecoder::with_max_frame_bytes(100);
    assert_eq!(small.feed(&101u32.to_be_bytes()).unwrap_err().to_string(), "frame length 101 exceeds maximum 100");
}

#[test]
fn bad_header_bytes_are_rejected_as_soon_as_they_arrive() {
    let cases: [(&[u8], &str); 4] = [
        (&[0, 0, 0, 10, 9], "unsupported protocol version 9; this node speaks 3"),
        (&[0, 0, 0, 10, 1], "unsupported protocol version 1; this node speaks 3"),
        (&[0, 0, 0, 10, 3, 0x7f], "unknown message type 0x7f"),
        (&[0, 0, 0, 3], "frame length 3 is below the minimum 10"),
    ];
    for (bytes, message) in cases {
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.feed(bytes).unwrap_err().to_string(), message);
    }
}

#[test]
fn truncated_payload_of_every_frame_is_an_error() {
    for frame in sample_frames() {
        let bytes = encode(&frame);
        let message_type = frame.message_type().unwrap();
        let payload = &bytes[LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES..];
        // Cut just before its optional tail (§7.2), a frame is the same frame without it.
        let tail_start = match &frame.body {
            FrameBody::Request(ClientRequest::StatusDetailed) => Some(0),
            FrameBody::Reply(ClientReply::Status(StatusReport { http_addr: Some(addr), .. })) => {
                Some(payload.len() - 4 - addr.len())
            }
            _ => None,
        };
        for cut in 0..payload.len() {
            let result = Frame::decode(raw(message_type, &payload[..cut]));
            assert!(result.is_err() || tail_start == Some(cut), "{frame:?} cut at {cut} decoded as {result:?}");
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        let error = Frame::decode(raw(message_type, &longer)).unwrap_err();
        // A plain `Status` and a report without its extension have an optional tail (§7.2): an
        // extra byte starts it, and is refused by the tail's own rules instead.
        let optional_tail = matches!(
            &frame.body,
            FrameBody::Request(ClientRequest::Status)
                | FrameBody::Reply(ClientReply::Status(StatusReport { http_addr: None, .. }))
        );
        if !optional_tail {
            assert_eq!(error, WireError::TrailingBytes { message: message_type.name(), count: 1 });
        }
    }
}

#[test]
fn truncated_stream_yields_no_frame_until_complete() {
    for frame in sample_frames() {
        let bytes = encode(&frame);
        let mut decoder = FrameDecoder::new();
        decoder.feed(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.feed(&bytes[bytes.len() - 1..]).unwrap();
        assert_eq!(drain(&mut decoder), vec![frame]);
    }
}

#[test]
fn truncation_error_names_the_field_and_the_shortfall() {
    let entries = vec![
        entry(1, EntryKind::Normal, b"a"),
        entry(2, EntryKind::Normal, b"b"),
        entry(3, EntryKind::Normal, b"c"),
        entry(4, EntryKind::Normal, &[0xab; 100]),
    ];
    let frame = Frame::new(
        1,
        peer(MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, leader_commit: 0, entries }),
    );
    let bytes = encode(&frame);
    let payload = &bytes[LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES..bytes.len() - 88];
    let error = Frame::decode(raw(MessageType::AppendEntries, payload)).unwrap_err();
    assert_eq!(error.to_string(), "truncated payload: field `entries[3].data` needs 100 bytes, 12 left");
}

#[test]
fn huge_element_counts_are_refused_before_allocation() {
    let mut payload = vec![0u8; 8 * 6];
    payload.extend_from_slice(&u32::MAX.to_be_bytes());
    let error = Frame::decode(raw(MessageType::AppendEntries, &payload)).unwrap_err();
    assert_eq!(error.to_string(), "field `entries` is 4294967295, above the limit 8192");
    payload.truncate(8 * 6);
    payload.extend_from_slice(&(ENTRIES_PER_APPEND_MAX as u32).to_be_bytes());
    let error = Frame::decode(raw(MessageType::AppendEntries, &payload)).unwrap_err();
    assert!(matches!(error, WireError::Truncated { ref field, .. } if field == "entries"), "{error}");
}

#[test]
fn client_key_and_value_limits_hold_on_both_sides() {
    let big_key = Frame::new(
        1,
        FrameBody::Request(ClientRequest::Write(Command::Set {
            session: session(1, 1),
            key: Bytes::from(vec![0; KEY_BYTES_MAX + 1]),
            value: Bytes::new(),
        })),
    );
    let mut out = BytesMut::from(&b"keep"[..]);
    let error = big_key.encode(&mut out).unwrap_err();
    assert_eq!(error.to_string(), "field `key` is 4097, above the limit 4096");
    assert_eq!(&out[..], b"keep");
    // A hand-built frame with the same key is refused by the decoder with the same error.
    let mut payload = [1u64, 1, 1].iter().flat_map(|n| n.to_be_bytes()).collect::<Vec<u8>>();
    payload.extend_from_slice(&(KEY_BYTES_MAX as u32 + 1).to_be_bytes());
    let decoded = Frame::decode(raw(MessageType::Set, &payload)).unwrap_err();
    assert_eq!(decoded, error);
    assert_eq!(decoded.error_code(), ErrorCode::LimitExceeded);
    let zero_session = [0u8; 24];
    let error = Frame::decode(raw(MessageType::Delete, &zero_session)).unwrap_err();
    assert_eq!(error.to_string(), "invalid field `session_id`: 0 is not a valid session id (register first)");
}

/// The session header of a write (session id, seq, first outstanding) and an empty key.
fn delete_payload(session_id: u64, seq: u64, first_outstanding: u64) -> Vec<u8> {
    let mut payload: Vec<u8> = [session_id, seq, first_outstanding].iter().flat_map(|n| n.to_be_bytes()).collect();
    payload.extend_from_slice(&0u32.to_be_bytes());
    payload
}

#[test]
fn session_fields_are_checked_on_both_sides() {
    let decode = |payload: Vec<u8>| Frame::decode(raw(MessageType::Delete, &payload));
    assert!(decode(delete_payload(3, 5, 5)).is_ok());
    assert!(decode(delete_payload(3, 5, 1)).is_ok());
    for (payload, field) in [
        (delete_payload(3, 0, 0), "seq"),
        (delete_payload(3, 5, 0), "first_outstanding"),
        (delete_payload(3, 5, 6), "first_outstanding"),
    ] {
        let error = decode(payload).unwrap_err();
        assert!(matches!(&error, WireError::InvalidField { field: f, .. } if f == field), "{error}");
        assert_eq!(error.error_code(), ErrorCode::MalformedFrame);
    }
    // The encoder refuses the same values, and a registration is no client request.
    let ahead = Session { session_id: 3, seq: 5, first_outstanding: 6 };
    let write = FrameBody::Request(ClientRequest::Write(Command::Delete { session: ahead, key: b("k") }));
    assert!(matches!(Frame::new(1, write).to_bytes(), Err(WireError::InvalidField { .. })));
    let register = FrameBody::Request(ClientRequest::Write(Command::Register { sessions_max: 3 }));
    assert!(Frame::new(1, register).to_bytes().is_err());
    // A registration is answered with a non-zero session id.
    let error = Frame::decode(raw(MessageType::Registered, &0u64.to_be_bytes())).unwrap_err();
    assert_eq!(error.to_string(), "invalid field `session_id`: 0 is not a valid session id");
    assert!(Frame::new(1, FrameBody::Reply(ClientReply::Registered { session_id: 0 })).to_bytes().is_err());
    assert!(Frame::decode(raw(MessageType::RegisterClient, &[0])).is_err(), "RegisterClient has no payload");
}

#[test]
fn encoder_refuses_frames_above_the_maximum_and_unchunked_snapshots() {
    let entries: Vec<Entry> = (1..=17).map(|i| entry(i, EntryKind::Normal, &vec![0; 1024 * 1024])).collect();
    let frame = Frame::new(
        1,
        peer(MessageBody::AppendEntries { prev_log_index: 0, prev_log_term: 0, leader_commit: 0, entries }),
    );
    let mut out = BytesMut::new();
    assert!(matches!(frame.encode(&mut out), Err(WireError::FrameTooLarge { .. })));
    assert!(out.is_empty());
    let snapshot = peer(MessageBody::InstallSnapshot { meta: SnapshotMeta::default() });
    assert_eq!(Frame::new(1, snapshot).to_bytes(), Err(WireError::SnapshotMustBeChunked));
}

#[test]
fn chunk_that_overruns_its_snapshot_is_malformed() {
    let chunk = SnapshotChunk {
        from: 1,
        to: 2,
        term: 1,
        meta: SnapshotMeta::default(),
        offset: 10,
        total_bytes: 12,
        data: b("abc"),
        done: true,
    };
    let error = Frame::new(1, FrameBody::SnapshotChunk(chunk.clone())).to_bytes().unwrap_err();
    assert_eq!(error.to_string(), "invalid field `offset`: chunk 10+3 runs past total_bytes 12");
    let not_done = SnapshotChunk { total_bytes: 13, done: false, ..chunk };
    assert!(Frame::new(1, FrameBody::SnapshotChunk(not_done)).to_bytes().is_err());
}

#[test]
fn hello_is_checked_against_cluster_role_and_version() {
    let client = Hello { role: Role::Client, cluster_id: 42, node_id: 0, protocol_version: PROTOCOL_VERSION };
    assert_eq!(check_hello(&client, 42), Ok(()));
    assert_eq!(check_hello(&client, 43).unwrap_err().code, ErrorCode::ClusterMismatch);
    assert_eq!(check_hello(&Hello { node_id: 5, ..client }, 42).unwrap_err().code, ErrorCode::BadHello);
    assert_eq!(check_hello(&Hello { role: Role::Peer, ..client }, 42).unwrap_err().code, ErrorCode::BadHello);
    assert_eq!(check_hello(&Hello { role: Role::Peer, node_id: 3, ..client }, 42), Ok(()));
    let old = check_hello(&Hello { protocol_version: 1, ..client }, 42).unwrap_err();
    assert_eq!(old.code, ErrorCode::UnsupportedVersion);
    assert_eq!(old.message, "unsupported protocol version 1; this node speaks 3");
}

#[test]
fn error_codes_and_write_results_map_as_documented() {
    for code in 0..=20u16 {
        assert_eq!(ErrorCode::from_u16(code).to_u16(), code);
    }
    assert!(ErrorCode::MalformedFrame.closes_connection());
    assert!(!ErrorCode::OutcomeUnknown.closes_connection());
    assert_eq!(ErrorCode::SessionWindowFull.to_u16(), 16);
    for code in [ErrorCode::SessionExpired, ErrorCode::StaleSequence, ErrorCode::SessionWindowFull] {
        assert!(!code.closes_connection(), "{code:?} is about one write, not the connection");
    }
    assert_eq!(ClientReply::from_write_result(&WriteResult::Deleted { existed: false }), ClientReply::NotFound);
    assert_eq!(ClientReply::from_write_result(&WriteResult::CasOk), ClientReply::Ok);
    let long = ErrorReply::new(ErrorCode::Internal, "é".repeat(ERROR_MESSAGE_BYTES_MAX));
    assert!(long.message.len() <= ERROR_MESSAGE_BYTES_MAX);
    assert!(Frame::new(1, FrameBody::Error(long)).to_bytes().is_ok());
}

#[test]
fn random_garbage_never_panics_the_decoder() {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let valid: Vec<Bytes> = sample_frames().iter().map(encode).collect();
    let (mut payloads_accepted, mut payloads_rejected) = (0u32, 0u32);
    for round in 0..100_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            // Pure garbage, sometimes behind a plausible header so the payload decoders run.
            let len = (rng.next_u64() % 80) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if round % 4 == 0 {
                let code = MessageType::ALL[(rng.next_u64() as usize) % MessageType::ALL.len()].code();
                let mut header = vec![0, 0, 0, 0, PROTOCOL_VERSION, code, 0, 0, 0, 0, 0, 0, 0, 0];
                header[..4].copy_from_slice(&((len + FRAME_HEADER_BYTES) as u32).to_be_bytes());
                header.append(&mut bytes);
                bytes = header;
            }
            bytes
        } else {
            // A valid frame with a few bytes changed after the header.
            let mut bytes = valid[(rng.next_u64() as usize) % valid.len()].to_vec();
            for _ in 0..1 + rng.next_u64() % 3 {
                let position = 6 + (rng.next_u64() as usize) % (bytes.len() - 6);
                bytes[position] = rng.next_u64() as u8;
            }
            bytes
        };
        let mut decoder = FrameDecoder::new();
        if decoder.feed(&bytes).is_err() {
            continue;
        }
        while let Ok(Some(raw)) = decoder.next_frame() {
            match Frame::decode(raw) {
                Ok(frame) => {
                    // Whatever decodes must encode again (the encoder accepts what the decoder accepts).
                    assert!(frame.to_bytes().is_ok(), "{frame:?}");
                    payloads_accepted += 1;
                }
                Err(_) => payloads_rejected += 1,
            }
        }
    }
    // The garbage reached the payload decoders, both ways, rather than dying at the header check.
    assert!(payloads_accepted > 1_000 && payloads_rejected > 1_000, "{payloads_accepted} / {payloads_rejected}");
}

/// The worked examples in `protocol.md` are checked byte for byte against the encoder.
#[test]
fn protocol_md_examples_match_the_encoder() {
    let doc = include_str!("../../protocol.md");
    let request = |id, request| Frame::new(id, FrameBody::Request(request));
    let reply = |id, reply| Frame::new(id, FrameBody::Reply(reply));
    let error = |id, code, text: &str| Frame::new(id, FrameBody::Error(ErrorReply::new(code, text)));
    let hello = Hello { role: Role::Client, cluster_id: 42, node_id: 0, protocol_version: 3 };
    let set = Command::Set { session: session(17, 1), key: b("foo"), value: b("bar") };
    let pipelined = Session { session_id: 17, seq: 3, first_outstanding: 2 };
    let cas = Command::Cas { session: pipelined, key: b("n"), expected: Some(b("1")), new: b("2") };
    let examples = [
        ("hello", Frame::new(1, FrameBody::Hello(hello))),
        ("hello_ok", Frame::new(1, FrameBody::HelloOk(HelloOk { cluster_id: 42, node_id: 3, protocol_version: 3 }))),
        ("error", error(1, ErrorCode::ClusterMismatch, "wrong cluster")),
        (
            "unsupported_version",
            error(0, ErrorCode::UnsupportedVersion, "unsupported protocol version 1; this node speaks 3"),
        ),
        ("register_client", request(2, ClientRequest::RegisterClient)),
        ("registered", reply(2, ClientReply::Registered { session_id: 17 })),
        ("set", request(3, ClientRequest::Write(set.clone()))),
        ("ok", reply(3, ClientReply::Ok)),
        ("cas_pipelined", request(5, ClientRequest::Write(cas))),
        ("cas_failed", reply(5, ClientReply::CasFailed { current: Some(b("7")) })),
        ("session_expired", error(6, ErrorCode::SessionExpired, "session 17 is unknown")),
        ("get", request(7, ClientRequest::Get { key: b("foo"), consistency: ReadConsistency::Linearizable })),
        ("value", reply(7, ClientReply::Value(b("bar")))),
        ("not_leader", reply(8, ClientReply::NotLeader { leader_id: 2, leader_addr: "10.0.0.2:7001".to_string() })),
        ("status_detailed", request(9, ClientRequest::StatusDetailed)),
    ];
    for (name, frame) in examples {
        let documented = example_bytes(doc, name);
        assert_eq!(documented, encode(&frame).to_vec(), "protocol.md example `{name}` disagrees with the encoder");
    }
    assert_eq!(example_bytes(doc, "command_set"), set.to_bytes());
    assert_eq!(example_bytes(doc, "command_register"), Command::Register { sessions_max: 10_000 }.to_bytes());
}

/// The hex bytes of the code block after `<!-- example: NAME -->`; on each line, the hex is left of `|`.
fn example_bytes(doc: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- example: {name} -->");
    let start = doc.find(&marker).unwrap_or_else(|| panic!("protocol.md has no example `{name}`")) + marker.len();
    let block = doc[start..].split("```").nth(1).expect("a code block follows the marker");
    block
        .lines()
        .skip(1)
        .flat_map(|line| line.split('|').next().unwrap_or("").split_whitespace())
        .map(|hex| {
            u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("`{hex}` in example `{name}` is not a hex byte"))
        })
        .collect()
}

/// §7.2: the report's extension changes nothing for a client that does not ask for it.
#[test]
fn status_extension_leaves_the_plain_exchange_unchanged() {
    let plain = encode(&Frame::new(1, FrameBody::Request(ClientRequest::Status)));
    assert_eq!(plain.len(), LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES, "a plain Status has an empty payload");
    let detailed = encode(&Frame::new(1, FrameBody::Request(ClientRequest::StatusDetailed)));
    assert_eq!(&detailed[LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES..], &[1]);
    let refused = Frame::decode(raw(MessageType::Status, &[2])).unwrap_err();
    assert!(matches!(&refused, WireError::InvalidField { field, .. } if field == "detail"), "{refused:?}");
    let report = |http_addr: Option<&str>| StatusReport {
        node_id: 3,
        role: NodeRole::Follower,
        term: 1,
        leader_id: 2,
        commit_index: 4,
        applied_index: 4,
        last_log_index: 4,
        log_size_bytes: 1,
        snapshot_index: 0,
        snapshot_term: 0,
        peers: Vec::new(),
        http_addr: http_addr.map(str::to_string),
    };
    let old_layout = encode(&Frame::new(1, FrameBody::Reply(ClientReply::Status(report(None)))));
    // node_id, role, 8 u64 fields, an empty peer list: the layout before the extension.
    assert_eq!(old_layout.len(), LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES + 8 + 1 + 8 * 8 + 4);
    let extended = encode(&Frame::new(1, FrameBody::Reply(ClientReply::Status(report(Some("h:1"))))));
    assert_eq!(extended.len(), old_layout.len() + 4 + 3);
    assert_eq!(&extended[..LENGTH_PREFIX_BYTES], &(old_layout.len() as u32 + 7 - 4).to_be_bytes());
    assert_eq!(&extended[4..old_layout.len()], &old_layout[4..], "the extension only appends");
}
