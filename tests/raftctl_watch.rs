//! `raftctl watch` in a real terminal: tmux runs it against a real 3-node cluster; the screen is
//! read with `capture-pane` before and after the leader is killed, then `q` must end it and leave
//! the terminal as it was (canonical mode and echo back on, main screen, cursor visible).
//!
//! Without tmux the tests are skipped with a loud notice, unless `MINI_RAFT_REQUIRE_TMUX=1`
//! (set by `.ci/run`), which makes a missing tmux a failure.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{wait_until, TestCluster};

/// A tmux server of its own (`-L`), so the test never touches a user's sessions; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        let found = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
        if !found {
            let required = std::env::var("MINI_RAFT_REQUIRE_TMUX").is_ok_and(|v| v == "1");
            assert!(!required, "MINI_RAFT_REQUIRE_TMUX=1 but tmux is not on PATH (apt-get install tmux)");
            let notice = "\n!!!!! skipped: tmux not installed (apt-get install tmux); raftctl watch NOT tested !!!!!\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
        }
        found
    }

    fn new(name: &str) -> Tmux {
        Tmux { socket: format!("mini-raft-{name}-{}", std::process::id()) }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs")
    }

    /// Starts `command` in a detached 100x40 window.
    fn start(&self, command: &str) {
        let output = self.run(&["new-session", "-d", "-s", "watch", "-x", "100", "-y", "40", command]);
        assert!(output.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "watch"]).stdout).to_string()
    }

    fn display(&self, format: &str) -> String {
        String::from_utf8_lossy(&self.run(&["display-message", "-p", "-t", "watch", format]).stdout).trim().to_string()
    }

    /// Waits for the screen to satisfy `check`; returns the last screen either way.
    fn wait_screen(&self, deadline: Duration, mut check: impl FnMut(&str) -> bool) -> (bool, String) {
        let mut last = String::new();
        let ok = wait_until(deadline, || {
            last = self.screen();
            check(&last)
        });
        (ok, last)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The screen row of the node at `addr`.
fn row<'a>(screen: &'a str, addr: &str) -> Option<&'a str> {
    screen.lines().find(|line| line.split_whitespace().nth(1) == Some(addr))
}

#[test]
fn watch_shows_the_new_leader_and_the_dead_node_then_q_restores_the_terminal() {
    if !Tmux::available() {
        return;
    }
    let mut cluster = TestCluster::start_http(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let mut client = cluster.client();
    for i in 0..50 {
        client.set(format!("k{i}").as_bytes(), b"v").expect("set");
    }
    let tmux = Tmux::new("watch");
    let command = format!(
        "{} --cluster {} watch --interval 0.3; echo EXIT=$?; stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo)$' \
         | tr '\\n' ' '; echo MODES; sleep 60",
        env!("CARGO_BIN_EXE_raftctl"),
        cluster.addrs.join(",")
    );
    tmux.start(&command);
    let leader_addr = cluster.addrs[leader - 1].clone();
    let (ok, screen) = tmux.wait_screen(Duration::from_secs(10), |s| {
        row(s, &leader_addr).is_some_and(|r| r.contains(" leader ")) && s.contains("commit latency")
    });
    assert!(ok, "watch never showed node {leader} as leader:\n{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "wider than 80 columns:\n{screen}");
    assert_eq!(tmux.display("#{alternate_on}"), "1", "watch draws on the alternate screen");

    cluster.kill(leader);
    let (new_leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("a new leader");
    let new_addr = cluster.addrs[new_leader - 1].clone();
    let (ok, screen) = tmux.wait_screen(Duration::from_secs(10), |s| {
        let dead = row(s, &leader_addr).is_some_and(|r| r.contains("unreachable since"));
        let elected = row(s, &new_addr).is_some_and(|r| r.contains(" leader "));
        dead && elected && s.contains(&format!("node {leader} unreachable since"))
    });
    assert!(ok, "after killing node {leader}, watch should show node {new_leader} leading:\n{screen}");
    assert!(screen.contains(&format!("leader {leader} -> {new_leader}")), "no leader-change event:\n{screen}");

    let _ = tmux.run(&["send-keys", "-t", "watch", "q"]);
    let (ok, screen) = tmux.wait_screen(Duration::from_secs(5), |s| s.contains("MODES"));
    assert!(ok, "q did not end watch:\n{screen}");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("icanon echo"), "the terminal was not restored (stty says otherwise):\n{screen}");
    assert!(!screen.contains("-icanon") && !screen.contains("-echo"), "{screen}");
    assert_eq!(tmux.display("#{alternate_on}"), "0", "back on the main screen");
    assert_eq!(tmux.display("#{cursor_flag}"), "1", "the cursor is visible again");
}

#[test]
fn ctrl_c_also_restores_the_terminal() {
    if !Tmux::available() {
        return;
    }
    let cluster = TestCluster::start_http(1, &[]);
    cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let tmux = Tmux::new("ctrl-c");
    let command = format!(
        "{} --cluster {} watch; echo EXIT=$?; stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo)$' | tr '\\n' ' '; \
         echo MODES; sleep 60",
        env!("CARGO_BIN_EXE_raftctl"),
        cluster.addrs[0]
    );
    tmux.start(&command);
    let (ok, screen) = tmux.wait_screen(Duration::from_secs(10), |s| s.contains(" leader "));
    assert!(ok, "{screen}");
    let _ = tmux.run(&["send-keys", "-t", "watch", "C-c"]);
    let (ok, screen) = tmux.wait_screen(Duration::from_secs(5), |s| s.contains("MODES"));
    assert!(ok, "Ctrl-C did not end watch:\n{screen}");
    assert!(screen.contains("EXIT=130") && screen.contains("icanon echo"), "{screen}");
    assert_eq!(tmux.display("#{alternate_on}"), "0");
}

#[test]
fn watch_once_prints_one_plain_frame() {
    let mut cluster = TestCluster::start_http(3, &[]);
    let (leader, _) = cluster.wait_leader(Duration::from_secs(10)).expect("leader");
    let dead = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.kill(dead);
    let output = Command::new(env!("CARGO_BIN_EXE_raftctl"))
        .args(["--cluster", &cluster.addrs.join(","), "watch", "--once"])
        .output()
        .expect("raftctl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains('\x1b'), "--once prints no escapes: {text:?}");
    assert!(row(&text, &cluster.addrs[leader - 1]).is_some_and(|r| r.contains(" leader ")), "{text}");
    assert!(row(&text, &cluster.addrs[dead - 1]).is_some_and(|r| r.contains("unreachable")), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
}
