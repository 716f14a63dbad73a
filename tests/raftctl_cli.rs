//! `raftctl` as a user runs it: usage errors, an unreachable cluster, a fake single-node cluster
//! (an in-memory node speaking the wire protocol through `mini_raft::wire`), and `cluster up` with
//! a fake `raftd` script.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_raft::client::frames;
use mini_raft::kv::Command as KvCommand;
use mini_raft::wire::{
    ClientReply, ClientRequest, ErrorCode, ErrorReply, Frame, FrameBody, FrameDecoder, HelloOk, NodeRole, StatusReport,
    PROTOCOL_VERSION,
};

fn raftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftctl")).args(args).output().expect("raftctl runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_usage_error(args: &[&str], expected: &str) {
    let output = raftctl(args);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
    assert!(stderr(&output).contains(expected), "{args:?}: stderr lacks {expected:?}: {}", stderr(&output));
    assert!(stderr(&output).contains("raftctl --help"), "{}", stderr(&output));
}

/// An address where nothing listens: bound, then released.
fn closed_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
    listener.local_addr().expect("local addr").to_string()
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    assert_usage_error(&[], "no command given");
    assert_usage_error(&["--bogus", "get", "k"], "bogus");
    assert_usage_error(&["frobnicate"], "unknown command 'frobnicate'");
    assert_usage_error(&["get", "k", "--wat"], "wat");
    assert_usage_error(&["--timeout", "soon", "get", "k"], "--timeout: 'soon' is not a valid number");
    assert_usage_error(&["--timeout", "-1", "get", "k"], "--timeout");
    assert_usage_error(&["--cluster", "localhost", "get", "k"], "'localhost' is not HOST:PORT");
    assert_usage_error(&["--cluster-id", "x", "get", "k"], "--cluster-id");
    assert_usage_error(&["cas", "k", "old"], "cas takes KEY OLD NEW");
    assert_usage_error(&["cluster", "up"], "--nodes");
    assert_usage_error(&["cluster", "up", "--nodes", "0"], "--nodes must be between");
    assert_usage_error(&["cluster", "down"], "'up'");
    assert_usage_error(&["cluster", "up", "--nodes", "3", "--base-port", "65534"], "leaves no room");
    assert_usage_error(&["bench", "--op", "scan"], "'scan' is not set or get");
}

#[test]
fn argument_errors_are_reported_before_any_network_io() {
    // A long timeout against a dead cluster: only a check before connecting can make this quick.
    let started = Instant::now();
    assert_usage_error(&["--cluster", &closed_addr(), "--timeout", "30", "set", "only-a-key"], "set takes KEY VALUE");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn help_exits_0_and_documents_commands_and_exit_codes() {
    let output = raftctl(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    for needle in [
        "set KEY VALUE",
        "get KEY [--stale]",
        "cas --absent KEY NEW",
        "cluster up --nodes N",
        "bench",
        "Exit status",
        "4 outcome unknown",
    ] {
        assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn get_against_an_unreachable_cluster_fails_naming_every_address() {
    let (a, b) = (closed_addr(), closed_addr());
    let cluster = format!("{a},{b}");
    let started = Instant::now();
    let output = raftctl(&["--cluster", &cluster, "--timeout", "0.5", "get", "foo"]);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("get \"foo\": no leader within"), "{message}");
    assert!(message.contains(&format!("{a} refused connection")), "{message}");
    assert!(message.contains(&format!("{b} refused connection")), "{message}");
}

#[test]
fn status_json_prints_one_line_per_node_even_when_unreachable() {
    let (a, b) = (closed_addr(), closed_addr());
    let output = raftctl(&["--cluster", &format!("{a},{b}"), "--timeout", "0.5", "--json", "status"]);
    assert_eq!(output.status.code(), Some(3), "no node answered: {}", stderr(&output));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        vec![
            format!("{{\"addr\":\"{a}\",\"ok\":false,\"error\":\"refused connection\"}}"),
            format!("{{\"addr\":\"{b}\",\"ok\":false,\"error\":\"refused connection\"}}"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A fake single-node cluster: node 1 of cluster 1, always the leader, an in-memory map.

type Store = Arc<Mutex<BTreeMap<Bytes, Bytes>>>;

fn spawn_fake_leader() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
    let addr = listener.local_addr().expect("local addr").to_string();
    let store: Store = Arc::default();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let store = store.clone();
            thread::spawn(move || serve(stream, &store));
        }
    });
    addr
}

fn serve(mut stream: TcpStream, store: &Store) {
    let mut decoder = FrameDecoder::new();
    while let Some(frame) = frames::read_frame(&mut stream, &mut decoder) {
        let body = match frame.body {
            FrameBody::Hello(hello) if hello.cluster_id == 1 => {
                FrameBody::HelloOk(HelloOk { cluster_id: 1, node_id: 1, protocol_version: PROTOCOL_VERSION })
            }
            FrameBody::Hello(_) => {
                let error = ErrorReply::new(ErrorCode::ClusterMismatch, "this node belongs to cluster 1");
                write_frame(&mut stream, Frame::new(frame.request_id, FrameBody::Error(error)));
                return;
            }
            FrameBody::Request(request) => answer(request, store),
            _ => return,
        };
        write_frame(&mut stream, Frame::new(frame.request_id, body));
    }
}

/// The fake leader's answer. A write to a key starting with `expired` gets `SessionExpired`.
fn answer(request: ClientRequest, store: &Store) -> FrameBody {
    if let ClientRequest::Write(command) = &request {
        if command.key().is_some_and(|key| key.starts_with(b"expired")) {
            let error = ErrorReply::new(ErrorCode::SessionExpired, "session 1 is unknown");
            return FrameBody::Error(error);
        }
    }
    FrameBody::Reply(answer_reply(request, store))
}

fn answer_reply(request: ClientRequest, store: &Store) -> ClientReply {
    let mut map = store.lock().expect("lock");
    match request {
        ClientRequest::RegisterClient => ClientReply::Registered { session_id: 1 },
        ClientRequest::Write(KvCommand::Register { .. }) => ClientReply::NotFound,
        ClientRequest::Write(KvCommand::Set { key, value, .. }) => {
            map.insert(key, value);
            ClientReply::Ok
        }
        ClientRequest::Write(KvCommand::Delete { key, .. }) => match map.remove(&key) {
            Some(_) => ClientReply::Ok,
            None => ClientReply::NotFound,
        },
        ClientRequest::Write(KvCommand::Cas { key, expected, new, .. }) => {
            let current = map.get(&key).cloned();
            if current == expected {
                map.insert(key, new);
                ClientReply::Ok
            } else {
                ClientReply::CasFailed { current }
            }
        }
        ClientRequest::Get { key, .. } => map.get(&key).cloned().map_or(ClientReply::NotFound, ClientReply::Value),
        ClientRequest::MemberList | ClientRequest::MemberChange(_) | ClientRequest::TransferLeader { .. } => {
            ClientReply::NotFound
        }
        ClientRequest::Status | ClientRequest::StatusDetailed => ClientReply::Status(StatusReport {
            node_id: 1,
            role: NodeRole::Leader,
            term: 2,
            leader_id: 1,
            commit_index: 5,
            applied_index: 5,
            last_log_index: 6,
            log_size_bytes: 1234,
            snapshot_index: 0,
            snapshot_term: 0,
            peers: Vec::new(),
            http_addr: None,
        }),
    }
}

fn write_frame(stream: &mut TcpStream, frame: Frame) {
    let _ = frames::write_frame(stream, &frame);
}

#[test]
fn kv_commands_against_a_fake_leader() {
    let addr = spawn_fake_leader();
    let run = |args: &[&str]| {
        let mut all = vec!["--cluster", addr.as_str(), "--timeout", "5"];
        all.extend_from_slice(args);
        raftctl(&all)
    };
    let output = run(&["-v", "set", "greeting", "hello world"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "OK\n");
    assert_eq!(stderr(&output), format!("answered by node 1 at {addr}\n"));

    let output = run(&["get", "greeting"]);
    assert_eq!((output.status.code(), stdout(&output)), (Some(0), "hello world\n".to_string()));
    let output = run(&["get", "missing", "--stale"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "not found\n");

    let output = run(&["cas", "greeting", "wrong", "new"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "hello world\n", "prints the current value");
    let output = run(&["--json", "cas", "greeting", "hello world", "say \"hi\""]);
    assert_eq!((output.status.code(), stdout(&output)), (Some(0), "{\"ok\":true}\n".to_string()));
    let output = run(&["--json", "get", "greeting"]);
    assert_eq!(stdout(&output), "{\"key\":\"greeting\",\"found\":true,\"value\":\"say \\\"hi\\\"\"}\n");
    let output = run(&["cas", "--absent", "greeting", "x"]);
    assert_eq!(output.status.code(), Some(1));

    assert_eq!(stdout(&run(&["del", "greeting"])), "deleted\n");
    let output = run(&["del", "greeting"]);
    assert_eq!((output.status.code(), stdout(&output)), (Some(0), "not found (nothing to delete)\n".to_string()));
    assert_eq!(run(&["cas", "--absent", "greeting", "x"]).status.code(), Some(0));
    assert_eq!(stdout(&run(&["set", "neg", "--", "-5"])), "OK\n");
    assert_eq!(stdout(&run(&["get", "neg"])), "-5\n");

    let output = run(&["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    let row = table.lines().nth(1).expect("a row per node");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, vec!["1", addr.as_str(), "leader", "2", "1", "5", "5", "6", "1234", "0", "0"], "{table}");
}

#[test]
fn an_unknown_outcome_has_its_own_exit_code() {
    let addr = spawn_fake_leader();
    let output = raftctl(&["--cluster", &addr, "--timeout", "5", "set", "expired-key", "v"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.starts_with("raftctl: outcome unknown:"), "{message}");
    assert!(message.contains("may or may not have taken effect"), "{message}");
    assert_eq!(stdout(&output), "");
    // An unreachable cluster never got the write: that is exit 3, not 4.
    let output = raftctl(&["--cluster", &closed_addr(), "--timeout", "0.3", "set", "k", "v"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

#[test]
fn wrong_cluster_id_is_reported_clearly() {
    let addr = spawn_fake_leader();
    let output = raftctl(&["--cluster", &addr, "--cluster-id", "2", "get", "k"]);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(message.contains("no node belongs to cluster 2"), "{message}");
    assert!(message.contains(&format!("{addr} answered ClusterMismatch")), "{message}");
}

#[test]
fn bench_reports_its_parameters_throughput_and_percentiles() {
    let addr = spawn_fake_leader();
    let output = raftctl(&[
        "--cluster",
        &addr,
        "bench",
        "--clients",
        "3",
        "--ops",
        "200",
        "--value-size",
        "16",
        "--op",
        "get",
        "--keys",
        "20",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("op=get clients=3 ops=200 value_size=16 keys=20"), "{text}");
    assert!(text.contains("ops=200 ok=200 errors=0"), "{text}");
    for needle in ["throughput=", "p50=", "p99=", "p99.9=", "max="] {
        assert!(text.contains(needle), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// `cluster up` with a fake raftd: node 3 exits with status 7 once the others are up; nodes 1 and 2
// keep running a little longer, then exit too.

fn write_fake_raftd(dir: &Path) -> String {
    let script = dir.join("fake-raftd");
    let d = dir.display();
    let text = format!(
        "#!/bin/sh\n\
         echo \"$@\" >> {d}/args.txt\n\
         if [ \"$2\" = 3 ]; then\n\
           while [ ! -f {d}/pid-1 ] || [ ! -f {d}/pid-2 ]; do sleep 0.02; done\n\
           touch {d}/dead-3\n\
           exit 7\n\
         fi\n\
         echo $$ > {d}/pid-$2.tmp && mv {d}/pid-$2.tmp {d}/pid-$2\n\
         while [ ! -f {d}/dead-3 ]; do sleep 0.02; done\n\
         sleep 0.3\n\
         exit 0\n"
    );
    std::fs::write(&script, text).expect("write the fake raftd");
    let chmod = Command::new("chmod").arg("+x").arg(&script).status().expect("chmod runs");
    assert!(chmod.success());
    script.display().to_string()
}

#[test]
fn cluster_up_reports_a_dead_node_and_keeps_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let raftd = write_fake_raftd(dir.path());
    let data = dir.path().join("data").display().to_string();
    let args = [
        "--cluster-id",
        "5",
        "cluster",
        "up",
        "--nodes",
        "3",
        "--base-port",
        "27001",
        "--data",
        &data,
        "--raftd",
        &raftd,
        "--",
        "--tick-ms",
        "5",
    ];
    let output = raftctl(&args);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("node 3 (127.0.0.1:27003) exited with exit status: 7"), "{err}");
    assert!(err.contains("the other nodes keep running. Restart it with:"), "{err}");
    assert!(err.contains("node 1 (127.0.0.1:27001) exited with exit status: 0"), "{err}");
    assert!(err.contains("every node has exited"), "{err}");
    let announced = stdout(&output);
    assert!(
        announced
            .contains("raftctl --cluster 127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003 --cluster-id 5 set foo bar"),
        "{announced}"
    );
    assert!(announced.contains("node 2  127.0.0.1:27002  http://127.0.0.1:27102"), "{announced}");

    let recorded = std::fs::read_to_string(dir.path().join("args.txt")).expect("args recorded");
    let expected = format!(
        "--id 1 --listen 127.0.0.1:27001 --http-listen 127.0.0.1:27101 \
         --peers 1=127.0.0.1:27001,2=127.0.0.1:27002,3=127.0.0.1:27003 \
         --data-dir {data}/node-1 --cluster-id 5 --log-file {data}/node-1.log --tick-ms 5"
    );
    assert!(recorded.lines().any(|line| line == expected), "{recorded}");
    for id in [1, 2] {
        let pid = std::fs::read_to_string(dir.path().join(format!("pid-{id}"))).expect("pid written");
        assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists(), "node {id} (pid {pid}) still runs");
        assert!(Path::new(&format!("{data}/node-{id}")).is_dir());
    }
}

#[test]
fn a_closed_stdout_ends_raftctl_quietly_as_sigpipe_would() {
    // A pipe whose reader is gone before raftctl writes (as after `raftctl status | head -1`).
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_raftctl"))
        .arg("--help")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("raftctl runs");
    assert_eq!(output.status.code(), Some(141), "stderr: {}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "no panic report: {}", stderr(&output));
}
