//! The `raftd` processes of a chaos run: start, kill -9, pause (SIGSTOP) and resume (SIGCONT),
//! stop gracefully (SIGTERM), and watch for processes that exit on their own.
//!
//! Guarantees:
//! - A signal goes only to a child that has not been reaped yet, so never to a reused pid (an
//!   exited child stays a zombie, holding its pid, until [`Procs`] reaps it).
//! - Every state change is checked: pausing a node that is not running, or starting one that is,
//!   is an error naming the node, never a silent no-op.
//! - A node that exits while it should be running (a crash: a panic, a failed assertion, a
//!   storage error) and a graceful stop that does not exit with status 0 within
//!   [`TERMINATE_WAIT`] become [`Anomaly`]s, which fail the run.
//! - [`Procs::stop_all`] (also on drop) leaves no child behind: paused ones are resumed, every
//!   one gets SIGTERM, then SIGKILL after [`TERMINATE_WAIT`], and all are reaped.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::nemesis::NodeId;

/// How long a node gets to exit after SIGTERM (it drains for at most 2 s, then finishes its sync).
pub const TERMINATE_WAIT: Duration = Duration::from_secs(15);
const REAP_POLL: Duration = Duration::from_millis(10);

/// What a node process is doing, as far as the run intends.
enum State {
    Running(Child),
    Paused(Child),
    /// SIGTERM sent at `since`; it should exit with status 0.
    Terminating {
        child: Child,
        since: Instant,
    },
    Down,
}

struct NodeProc {
    id: NodeId,
    args: Vec<String>,
    state: State,
    starts: u32,
}

impl NodeProc {
    /// Takes the child out if the node is running (leaving it down); otherwise changes nothing.
    fn take_running(&mut self) -> Option<Child> {
        match std::mem::replace(&mut self.state, State::Down) {
            State::Running(child) => Some(child),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Takes the child out if the node is paused (leaving it down); otherwise changes nothing.
    fn take_paused(&mut self) -> Option<Child> {
        match std::mem::replace(&mut self.state, State::Down) {
            State::Paused(child) => Some(child),
            other => {
                self.state = other;
                None
            }
        }
    }
}

/// Something a node did that the run did not ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub node: NodeId,
    pub what: String,
}

/// Signals the chaos run sends. `kill -9` is [`Child::kill`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Term,
    Stop,
    Cont,
}

/// The node processes of one run, numbered `1..=n`.
pub struct Procs {
    raftd: PathBuf,
    dir: PathBuf,
    nodes: Vec<NodeProc>,
}

impl Procs {
    /// Processes for nodes `1..=args.len()`, none started; `args[i]` are node `i + 1`'s flags.
    /// Their stderr (raftd logs there) is appended to `dir/node-N.log`.
    pub fn new(raftd: &Path, dir: &Path, args: Vec<Vec<String>>) -> Procs {
        let nodes = args
            .into_iter()
            .enumerate()
            .map(|(index, args)| NodeProc { id: index as NodeId + 1, args, state: State::Down, starts: 0 })
            .collect();
        Procs { raftd: raftd.to_path_buf(), dir: dir.to_path_buf(), nodes }
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().map(|node| node.id)
    }

    fn node(&mut self, id: NodeId) -> Result<&mut NodeProc, String> {
        self.nodes.iter_mut().find(|node| node.id == id).ok_or_else(|| format!("there is no node {id}"))
    }

    /// True if the node is running and not paused: it can answer.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|node| node.id == id && matches!(node.state, State::Running(_)))
    }

    /// How many times each node was started, in id order.
    pub fn starts(&self) -> Vec<u32> {
        self.nodes.iter().map(|node| node.starts).collect()
    }

    /// Starts a node that is down.
    pub fn start(&mut self, id: NodeId) -> Result<(), String> {
        let (raftd, dir) = (self.raftd.clone(), self.dir.clone());
        let node = self.node(id)?;
        if !matches!(node.state, State::Down) {
            return Err(format!("node {id} cannot start: it is not down"));
        }
        let stderr_path = dir.join(format!("node-{id}.log"));
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|e| format!("cannot open {}: {e}", stderr_path.display()))?;
        let child = Command::new(&raftd)
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("cannot start {} for node {id}: {e}", raftd.display()))?;
        node.state = State::Running(child);
        node.starts += 1;
        Ok(())
    }

    /// SIGKILL, like a crash or a power cut: no shutdown code runs. A paused node dies too.
    pub fn kill(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.node(id)?;
        let (State::Running(mut child) | State::Paused(mut child) | State::Terminating { mut child, .. }) =
            std::mem::replace(&mut node.state, State::Down)
        else {
            return Err(format!("node {id} cannot be killed: it is down"));
        };
        // Err only if it already exited: then there is nothing to kill.
        let _ = child.kill();
        child.wait().map_err(|e| format!("cannot reap node {id}: {e}"))?;
        Ok(())
    }

    /// SIGSTOP: the process freezes with its sockets open, like a long GC pause or a VM stall.
    pub fn pause(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.node(id)?;
        let Some(child) = node.take_running() else {
            return Err(format!("node {id} cannot be paused: it is not running"));
        };
        let sent = signal(&child, Signal::Stop);
        node.state = State::Paused(child);
        sent.map_err(|e| format!("cannot pause node {id}: {e}"))
    }

    /// SIGCONT for a paused node.
    pub fn resume(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.node(id)?;
        let Some(child) = node.take_paused() else {
            return Err(format!("node {id} cannot be resumed: it is not paused"));
        };
        let sent = signal(&child, Signal::Cont);
        node.state = State::Running(child);
        sent.map_err(|e| format!("cannot resume node {id}: {e}"))
    }

    /// SIGTERM: the node drains and should exit 0; [`Procs::finish_terminate`] waits for that.
    pub fn terminate(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.node(id)?;
        let Some(child) = node.take_running() else {
            return Err(format!("node {id} cannot be stopped: it is not running"));
        };
        let sent = signal(&child, Signal::Term);
        node.state = State::Terminating { child, since: Instant::now() };
        sent.map_err(|e| format!("cannot stop node {id}: {e}"))
    }

    /// Waits for a node sent SIGTERM to exit (until [`TERMINATE_WAIT`] after the signal), then
    /// leaves it down. `Err` is an anomaly: it exited with another status, or had to be killed.
    pub fn finish_terminate(&mut self, id: NodeId) -> Result<(), Anomaly> {
        let anomaly = |what: String| Anomaly { node: id, what };
        let node = self.node(id).map_err(anomaly)?;
        let (mut child, since) = match std::mem::replace(&mut node.state, State::Down) {
            State::Terminating { child, since } => (child, since),
            other => {
                // Not stopping (it already exited, and was reaped by `poll`): nothing to wait for.
                node.state = other;
                return Ok(());
            }
        };
        let status = wait_until(&mut child, since + TERMINATE_WAIT).map_err(|e| anomaly(e.to_string()))?;
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(anomaly(format!("exited with {status} after SIGTERM (a graceful stop exits 0)"))),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(anomaly(format!("did not exit within {} s of SIGTERM; killed", TERMINATE_WAIT.as_secs())))
            }
        }
    }

    /// Reaps every node that exited on its own: a running or paused one is an anomaly (it is left
    /// down); a terminating one is judged by its status.
    pub fn poll(&mut self) -> Vec<Anomaly> {
        let mut anomalies = Vec::new();
        for node in &mut self.nodes {
            let (child, terminating) = match &mut node.state {
                State::Running(child) | State::Paused(child) => (child, false),
                State::Terminating { child, .. } => (child, true),
                State::Down => continue,
            };
            let status = match child.try_wait() {
                Ok(None) => continue,
                Ok(Some(status)) => status,
                Err(error) => {
                    anomalies.push(Anomaly { node: node.id, what: format!("cannot be watched: {error}") });
                    continue;
                }
            };
            node.state = State::Down;
            if !terminating {
                anomalies.push(Anomaly { node: node.id, what: format!("exited on its own with {status}") });
            } else if !status.success() {
                let what = format!("exited with {status} after SIGTERM (a graceful stop exits 0)");
                anomalies.push(Anomaly { node: node.id, what });
            }
        }
        anomalies
    }

    /// Stops every node: resumes paused ones, SIGTERM to all, SIGKILL to those still there after
    /// [`TERMINATE_WAIT`]; reaps all. Returns the nodes that did not stop cleanly.
    pub fn stop_all(&mut self) -> Vec<Anomaly> {
        for id in self.ids().collect::<Vec<_>>() {
            let _ = self.resume(id);
            let _ = self.terminate(id);
        }
        let mut anomalies = self.poll();
        for id in self.ids().collect::<Vec<_>>() {
            if let Err(anomaly) = self.finish_terminate(id) {
                anomalies.push(anomaly);
            }
        }
        anomalies
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let State::Running(child) | State::Paused(child) | State::Terminating { child, .. } = &mut node.state {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.state = State::Down;
        }
    }
}

/// The child's exit status once it exits, or `None` if it is still running at `until`.
fn wait_until(child: &mut Child, until: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        thread::sleep(REAP_POLL);
    }
}

/// Sends `signal` to a child that has not been reaped (so its pid is still its own).
#[cfg(all(target_os = "linux", not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64"))))]
fn signal(child: &Child, signal: Signal) -> io::Result<()> {
    use std::os::raw::c_int;
    // The generic Linux numbering (x86, ARM, RISC-V, PowerPC, s390).
    let number: c_int = match signal {
        Signal::Term => 15,
        Signal::Stop => 19,
        Signal::Cont => 18,
    };
    let pid = c_int::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    extern "C" {
        fn kill(pid: c_int, signal: c_int) -> c_int;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours; the pid is our own
    // unreaped child's, so it names no other process.
    let status = unsafe { kill(pid, number) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere, the `kill` command names the signal portably.
#[cfg(not(all(target_os = "linux", not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))))]
fn signal(child: &Child, signal: Signal) -> io::Result<()> {
    let name = match signal {
        Signal::Term => "-TERM",
        Signal::Stop => "-STOP",
        Signal::Cont => "-CONT",
    };
    let status = Command::new("kill").args([name, &child.id().to_string()]).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill {name} exited with {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sleep` stands in for raftd: the process control does not care what runs.
    fn sleeper(dir: &Path) -> Procs {
        let args = vec![vec!["30".to_string()], vec!["30".to_string()]];
        Procs::new(Path::new("sleep"), dir, args)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("raftctl-procs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn state_changes_are_checked_and_signals_reach_the_process() {
        let dir = temp_dir("states");
        let mut procs = sleeper(&dir);
        assert!(procs.pause(1).unwrap_err().contains("not running"));
        procs.start(1).unwrap();
        assert!(procs.start(1).unwrap_err().contains("not down"));
        assert!(procs.is_up(1) && !procs.is_up(2));
        procs.pause(1).unwrap();
        assert!(!procs.is_up(1));
        assert!(procs.terminate(1).unwrap_err().contains("not running"));
        procs.resume(1).unwrap();
        // `sleep` dies of SIGTERM (status: signal 15), which a graceful raftd stop must not do.
        procs.terminate(1).unwrap();
        let anomaly = procs.finish_terminate(1).unwrap_err();
        assert!(anomaly.what.contains("after SIGTERM"), "{anomaly:?}");
        procs.start(2).unwrap();
        procs.kill(2).unwrap();
        assert!(procs.kill(2).unwrap_err().contains("down"));
        assert_eq!(procs.starts(), vec![1, 1]);
        assert!(procs.poll().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_process_that_exits_on_its_own_is_an_anomaly() {
        let dir = temp_dir("crash");
        let mut procs = Procs::new(Path::new("true"), &dir, vec![Vec::new()]);
        procs.start(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut anomalies = Vec::new();
        while anomalies.is_empty() && Instant::now() < deadline {
            anomalies = procs.poll();
            thread::sleep(REAP_POLL);
        }
        assert_eq!(anomalies.len(), 1, "{anomalies:?}");
        assert!(anomalies[0].what.contains("on its own"), "{anomalies:?}");
        assert!(!procs.is_up(1));
        assert!(procs.stop_all().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
