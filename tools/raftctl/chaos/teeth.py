#!/usr/bin/env python3
"""Proves `raftctl chaos` has teeth: injects known bugs into a scratch copy of the server, one at a
time, builds raftd and raftctl from that copy, runs the short chaos run of `tests/chaos.rs` (same
flags, same seed) against it, and reports what the run printed. The working tree is never modified.

    python3 tools/raftctl/chaos/teeth.py [--duration 20] [--seed 2024] [--only TEXT]

Exit status 0 only if the unmodified tree passes, and every required injected bug makes its run
fail (a linearizability violation or a lost acknowledged write). Bugs marked not required are
reported as caught or not: they document what the default run cannot see.
"""
import argparse, os, re, shutil, subprocess, sys, tempfile

LINEARIZABLE_GET = """            ClientRequest::Get { key, consistency: crate::wire::ReadConsistency::Linearizable } => {
                if self.raft.role() != Role::Leader {
                    return self.reply_not_leader(waiter, RequestType::Get);
                }
                if self.requests.reads_full() {
                    let text = "too many reads waiting".into();
                    return self.reply_error(waiter, RequestType::Get, ErrorCode::Overloaded, text);
                }
                self.requests.read_arrived(ReadWaiter { waiter, key });
            }"""

LOCAL_GET = """            ClientRequest::Get { key, consistency: crate::wire::ReadConsistency::Linearizable } => {
                let reply = self.kv.get(&key).map_or(ClientReply::NotFound, |v| ClientReply::Value(v.clone()));
                self.reply(waiter, RequestType::Get, FrameBody::Reply(reply));
            }"""

LEADER_LOCAL_GET = """            ClientRequest::Get { key, consistency: crate::wire::ReadConsistency::Linearizable } => {
                if self.raft.role() != Role::Leader {
                    return self.reply_not_leader(waiter, RequestType::Get);
                }
                let reply = self.kv.get(&key).map_or(ClientReply::NotFound, |v| ClientReply::Value(v.clone()));
                self.reply(waiter, RequestType::Get, FrameBody::Reply(reply));
            }"""

PROPOSED = """        for ((waiter, data), result) in batch.into_iter().zip(results) {
            let kind = write_type(&data);
            match result {
                Ok(index) => self.requests.write_proposed(index, term, WriteTicket { waiter, kind, proposed_at }),"""

ACK_AT_PROPOSE = """        for ((waiter, data), result) in batch.into_iter().zip(results) {
            let kind = write_type(&data);
            match result {
                // A set (tag 0x11) is answered Ok as soon as it is proposed, before it commits.
                Ok(_) if data.first() == Some(&0x11) => self.reply(waiter, kind, FrameBody::Reply(ClientReply::Ok)),
                Ok(index) => self.requests.write_proposed(index, term, WriteTicket { waiter, kind, proposed_at }),"""

REPLICA = "src/server/replica.rs"

# The flags of the run in tests/chaos.rs, but the seed and duration; a bug's own flags replace them.
RUN = {"--nodes": "3", "--clients": "4", "--keys": "5", "--faults": "all", "--hold": "0.4-2", "--quiet": "0.2-1"}

# (name, file, exact text to replace, replacement, extra chaos flags, required)
BUGS = [
    ("linearizable gets served from the local state machine (any node)", REPLICA, LINEARIZABLE_GET, LOCAL_GET,
     {}, True),
    ("a set acknowledged when proposed, before it commits", REPLICA, PROPOSED, ACK_AT_PROPOSE, {}, True),
    # Only a deposed leader that still believes it leads serves a stale read here, and the clients
    # follow the leader: with check-quorum the old leader steps down about when the new one is
    # elected, before any client writes through the new one. Not caught so far (see the report).
    ("the leader serves linearizable gets without a ReadIndex round", REPLICA, LINEARIZABLE_GET, LEADER_LOCAL_GET,
     {"--faults": "partition,pause", "--hold": "1-3", "--quiet": "0.2-0.5"}, False),
]

def run(cmd, cwd, env=None):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)

def build(tree, target):
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    result = run(["cargo", "build", "--release", "--bin", "raftd", "--bin", "raftctl"], tree, env)
    return result.returncode == 0, result.stderr[-600:]

def chaos(target, args, extra):
    release = os.path.join(target, "release")
    flags = {**RUN, **extra}
    cmd = [os.path.join(release, "raftctl"), "chaos", "--raftd", os.path.join(release, "raftd"),
           "--duration", str(args.duration), "--seed", str(args.seed)]
    cmd += [item for flag in flags.items() for item in flag]
    out = run(cmd, None)
    text = out.stdout + out.stderr
    result = re.findall(r"^chaos: (PASS|FAIL|UNKNOWN) .*$", text, re.M)
    lines = re.findall(r"^chaos: .*$", text, re.M)
    return out.returncode, (result[-1] if result else "ERROR"), (lines[-1] if lines else text[-400:]), text, cmd

def evidence(text):
    """The first violation (its first lines) or lost write, and the FAILED lines."""
    lines = text.splitlines()
    shown = []
    for i, line in enumerate(lines):
        if line.startswith("key ") and "is not linearizable" in line:
            shown = lines[i:i + 8]
            break
        if line.strip().startswith("lost: "):
            shown = [line]
            break
    failed = [line for line in lines if line.startswith("FAILED: ")][:3]
    return shown + failed

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--only", default="", help="run only the bugs whose name contains this text")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    scratch = tempfile.mkdtemp(prefix="chaos-teeth-")
    target = os.path.join(root, "target", "chaos-teeth")
    all_caught = True
    bugs = [bug for bug in BUGS if args.only in bug[0]]
    for name, path, old, new, extra, required in [("(none: the unmodified tree)", None, None, None, {}, True)] + bugs:
        work = os.path.join(scratch, "tree")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(root, work, ignore=shutil.ignore_patterns("target", ".git"))
        if path is not None:
            file = os.path.join(work, path)
            text = open(file).read()
            if old not in text:
                print(f"## {name}\npatch does not apply (source changed)\n", flush=True)
                all_caught = False
                continue
            open(file, "w").write(text.replace(old, new, 1))
        ok, errors = build(work, target)
        if not ok:
            print(f"## {name}\ndoes not build: {errors}\n", flush=True)
            all_caught = False
            continue
        code, result, line, text, cmd = chaos(target, args, extra)
        expected = "PASS" if path is None else "FAIL"
        caught = result == expected
        if required:
            all_caught &= caught
        print(f"## {name}\n$ {' '.join(['raftctl'] + cmd[1:2] + cmd[4:])}\nexit {code}: {line}", flush=True)
        for shown in evidence(text):
            print(f"    {shown}")
        verdict = ("caught" if path else "passes") if caught else ("NOT CAUGHT" if path else "FAILS")
        print(verdict + ("" if required else " (not required)") + "\n", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(0 if all_caught else 1)

if __name__ == "__main__":
    main()
