//! Helpers the subcommands share: paths, running commands with a deadline, compiling the C
//! victims, and owning (then ending and reaping) the processes we start.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use std::{env, fs};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the workspace root),
/// otherwise `<root>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The `cargo` that runs us (cargo sets `CARGO` for `cargo run`), in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command with inherited stdio and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Makes `migrate` (a symlink to `ferry`, which answers as `ferry migrate` under that name)
/// next to the `ferry` of `profile`.
pub fn link_migrate(profile: &str) -> Result<()> {
    let dir = target_dir().join(profile);
    let link = dir.join("migrate");
    if fs::read_link(&link).is_ok_and(|t| t == Path::new("ferry")) {
        return Ok(());
    }
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("ferry", &link)
        .with_context(|| format!("make the symlink {}", link.display()))
}

/// Builds the `ferry` binary and returns its path.
pub fn build_ferry(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "--package", "ferry", "--bin", "ferry"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("ferry"))
}

/// Fails, naming every missing one, unless all `tools` are found on `PATH`.
pub fn require_tools(tools: &[&str]) -> Result<()> {
    let path = env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing on PATH: {} (on Debian: apt-get install gcc libc6-dev python3 coreutils bash iproute2 util-linux nftables)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Fails unless we run as root: ptrace of any process, `clone3` with `set_tid` and PID
/// namespaces need it.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (ferry seizes processes with ptrace and restores PIDs)");
    }
    Ok(())
}

/// Compiles one C file into `dir/name` with `cc -O2` and returns the binary's path.
pub fn compile_c(source: &str, name: &str, dir: &Path) -> Result<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    fs::write(&src, source).with_context(|| format!("cannot write {}", src.display()))?;
    run(Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src))?;
    Ok(bin)
}

/// Marks this process as a child subreaper: a restored process, detached from `ferry restore`,
/// is re-parented to us, so we can reap it and no zombie keeps its PID.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")
}

/// Reaps, without waiting, every child that has already ended (e.g. helpers of a restore).
pub fn reap_ended_children() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status.pid().is_none() {
            break;
        }
    }
}

/// A directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `<tmp>/ferry-<what>-<our pid>`.
    pub fn new(what: &str) -> Result<Self> {
        let dir = env::temp_dir().join(format!("ferry-{what}-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A process we started (or restored): on drop it is killed by PID and reaped.
#[derive(Debug)]
pub struct Owned {
    pid: Option<Pid>,
}

impl Owned {
    /// Takes ownership of the process `pid`.
    pub fn new(pid: Pid) -> Self {
        Self { pid: Some(pid) }
    }

    /// Waits for the process to end on its own (e.g. after `ferry dump` killed it) and reaps it.
    pub fn reap(&mut self, timeout: Duration) -> Result<()> {
        if let Some(pid) = self.pid {
            wait_gone(pid, timeout)?;
            self.pid = None;
        }
        Ok(())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn end(&mut self) -> Result<()> {
        if let Some(pid) = self.pid.take() {
            match kill(pid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(err) => return Err(err).with_context(|| format!("kill {pid}")),
            }
            wait_gone(pid, Duration::from_secs(10))?;
        }
        Ok(())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Err(err) = self.end() {
            eprintln!("warning: cleaning up: {err:#}");
        }
    }
}

/// Waits until `pid` has ended: reaps it when it is our child, otherwise (its parent reaps it)
/// polls until it is gone or a zombie.
fn wait_gone(pid: Pid, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) if status.pid().is_some() => return Ok(()),
            Ok(_) => {}
            Err(Errno::ECHILD) => {
                let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let after_comm = state.rsplit(')').next().unwrap_or("");
                if state.is_empty() || after_comm.trim_start().starts_with('Z') {
                    return Ok(());
                }
            }
            Err(err) => return Err(err).with_context(|| format!("waitpid {pid}")),
        }
        if Instant::now() > deadline {
            bail!("process {pid} did not end within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// What a command printed, how it ended, and when.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From start to exit.
    pub wall: Duration,
    /// Each stdout line with the time it arrived, from start.
    pub stdout_lines: Vec<(Duration, String)>,
}

impl Captured {
    /// Fails with the command's stderr unless it exited 0.
    pub fn success(self, what: &str) -> Result<Self> {
        if !self.status.success() {
            bail!(
                "{what} failed ({}):\n{}{}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

enum Event {
    Line(bool, Duration, String),
    Eof,
}

/// Runs `cmd` with stdin from /dev/null, capturing stdout and stderr, and kills it if it runs
/// longer than `timeout`.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Result<Captured> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let (tx, rx) = mpsc::channel();
    forward_lines(child.stdout.take(), true, start, tx.clone());
    forward_lines(child.stderr.take(), false, start, tx);

    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let (status_tx, status_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });
    let status = match status_rx.recv_timeout(timeout) {
        Ok(status) => status.with_context(|| format!("wait for {cmd:?}"))?,
        Err(_) => {
            // Not yet reaped (the waiter thread is still blocked in wait), so the PID is ours.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = status_rx.recv();
            bail!("{cmd:?} did not finish within {timeout:?}; killed it");
        }
    };
    let wall = start.elapsed();

    // Both pipes normally reach EOF at exit; a process that inherited one (it should not) must
    // not hang us, so give up on them after a short while.
    let (mut stdout, mut stderr, mut stdout_lines, mut open) =
        (String::new(), String::new(), vec![], 2);
    let drain_deadline = Instant::now() + Duration::from_secs(2);
    while open > 0 {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Line(is_stdout, at, line)) => {
                let buf = if is_stdout { &mut stdout } else { &mut stderr };
                buf.push_str(&line);
                buf.push('\n');
                if is_stdout {
                    stdout_lines.push((at, line));
                }
            }
            Ok(Event::Eof) => open -= 1,
            Err(_) => break,
        }
    }
    Ok(Captured {
        status,
        stdout,
        stderr,
        wall,
        stdout_lines,
    })
}

fn forward_lines(
    pipe: Option<impl Read + Send + 'static>,
    is_stdout: bool,
    start: Instant,
    tx: mpsc::Sender<Event>,
) {
    thread::spawn(move || {
        if let Some(pipe) = pipe {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx
                    .send(Event::Line(is_stdout, start.elapsed(), line))
                    .is_err()
                {
                    return;
                }
            }
        }
        let _ = tx.send(Event::Eof);
    });
}

/// Finds `restored pid N` in `ferry restore`'s stdout and returns N with the time it appeared.
pub fn restored_pid(out: &Captured) -> Result<(Pid, Duration)> {
    out.stdout_lines
        .iter()
        .find_map(|(at, line)| {
            let n = line.trim().strip_prefix("restored pid ")?.parse().ok()?;
            Some((Pid::from_raw(n), *at))
        })
        .with_context(|| {
            format!(
                "no `restored pid N` line in ferry restore's output:\n{}",
                out.stdout
            )
        })
}

/// `VmRSS` of a process in bytes.
pub fn rss_bytes(pid: Pid) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}
