//! Harness for the integration tests: real processes on the real kernel, checkpointed and
//! restored by the `ferry` binary.
//!
//! - [`setup`] checks for root (printing `SKIPPED: why`, or failing under `CI=true`), makes the
//!   test process a child subreaper, serializes the tests that start processes, and gives each
//!   test its own temporary directory.
//! - [`workload`] compiles a C victim from `tests/workloads/` once.
//! - [`Victim`] owns a started process and every process that appeared because of it; it kills
//!   and reaps them all when dropped, also when the test fails.
//! - [`TestCtx::ferry`] runs the `ferry` binary and captures its output.
//!
//! - [`hosts::Hosts`] brings up test hosts (namespaces on a bridge, each with its own `ferryd`)
//!   and tears them down when dropped.
//!
//! Victims follow one protocol (see `workloads/common.h`): `STATEDIR/status` gets `ready pid=N`
//! and answers to checks (`ok ...`/`BAD ...`), `STATEDIR/log` gets `tick N` lines.

pub mod hosts;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How long a `ferry` command may take before the test gives up on it.
pub const FERRY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a victim may take to do what it was asked.
pub const VICTIM_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns true when running as root. Otherwise prints `SKIPPED: why` and returns false, or
/// panics when `CI=true` (CI must not skip silently).
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip("needs root (ptrace of any process, clone3 with set_tid, PID namespaces)")
}

/// Prints `SKIPPED: why` and returns false; panics instead under `CI=true`.
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, so this test may not skip: {why}");
    }
    println!("SKIPPED: {why}");
    eprintln!("SKIPPED: {why}");
    false
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The `ferry` binary under test: `FERRY_BIN`, else `<target>/debug/ferry`. Panics with a clear
/// message when it does not exist.
pub fn ferry_bin() -> PathBuf {
    let path = match std::env::var_os("FERRY_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => target_dir().join("debug").join("ferry"),
    };
    assert!(
        path.is_file(),
        "the ferry binary is missing at {}: build it first (`cargo xtask test` does, or \
         `cargo build -p ferry`), or point FERRY_BIN at it",
        path.display()
    );
    path
}

/// Compiles `tests/workloads/NAME.c` (or `tests/compat/N.c` for `compat/N`; once, and again
/// only when a source is newer) and returns
/// the executable's path.
pub fn workload(name: &str) -> PathBuf {
    static COMPILE: Mutex<()> = Mutex::new(());
    let _lock = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    // `compat/NAME` is a conformance victim of tests/compat/.
    let src = match name.strip_prefix("compat/") {
        Some(n) => Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("compat/{n}.c")),
        None => src_dir.join(format!("{name}.c")),
    };
    let name = &name.replace('/', "-");
    let out_dir = target_dir().join("ferry-workloads");
    let out = out_dir.join(name);
    let newest_src = [src.clone(), src_dir.join("common.h")]
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or_else(|| panic!("workload source {} is missing", src.display()));
    let fresh = fs::metadata(&out)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built >= newest_src);
    if fresh {
        return out;
    }
    fs::create_dir_all(&out_dir).expect("create the workload directory");
    // Build under a temporary name and rename: a running victim keeps its own executable.
    let tmp = out_dir.join(format!(".{name}.{}", std::process::id()));
    let output = Command::new("cc")
        .args(["-O1", "-g", "-Wall", "-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-I")
        .arg(&src_dir)
        .output()
        .expect("run cc (gcc from Debian) to compile a workload");
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::rename(&tmp, &out).expect("move the compiled workload into place");
    out
}

/// The path of a non-C workload file (a script) in `tests/workloads/`.
pub fn workload_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory under the system temporary directory.
    pub fn new(prefix: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ferry-test-{prefix}-{}-{seq}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Everything a test holds while it runs. Declare it first so that it is dropped last, after
/// the test's victims are dead.
#[derive(Debug)]
pub struct TestCtx {
    /// This test's temporary directory.
    pub dir: TempDir,
    _serial: MutexGuard<'static, ()>,
    _machine: nix::fcntl::Flock<fs::File>,
}

/// Prepares a test: root check, subreaper, the serial lock, a temporary directory. Returns
/// `None` when the test must be skipped (after printing why).
///
/// Tests run one at a time: they start processes, look for new children of the test process
/// and compete for PIDs, and the machines have two cores.
pub fn setup(name: &str) -> Option<TestCtx> {
    if !require_root() {
        return None;
    }
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let machine = machine_lock("/run/ferry-tests.lock");
    make_subreaper();
    keep_inherited_descriptors_to_ourselves();
    let dir = TempDir::new(name).expect("create the test's temporary directory");
    Some(TestCtx {
        dir,
        _serial: serial,
        _machine: machine,
    })
}

/// An exclusive `flock` on `path`, held until the guard drops: test runs from several checkouts
/// on one machine (they share PIDs, the test hosts' names and addresses) take turns.
pub fn machine_lock(path: &str) -> nix::fcntl::Flock<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {path}: {e}"))
}

/// Marks every descriptor the test process inherited (beyond 0–2) close-on-exec, once: a
/// shell's stray descriptor must not reach the victims, which get fds 0–2 and what a test gives
/// them (the engine would rightly refuse, say, a descriptor to a deleted `/dev/null`).
pub fn keep_inherited_descriptors_to_ourselves() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        ferry_agent::sys::cloexec_from(3).expect("close_range(3, ~0, CLOSE_RANGE_CLOEXEC)");
    });
}

/// Marks the test process as child subreaper, so that a restored process comes to it when the
/// restoring command exits, and it can reap it by PID.
pub fn make_subreaper() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// The status file a victim in `state` writes (empty while there is none).
pub fn status_file(state: &Path) -> String {
    fs::read_to_string(state.join("status")).unwrap_or_default()
}

/// Polls `f` every 50 ms until it holds; an error naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Polls `f` every 100 ms until it gives `Some`, or fails naming `what` after `timeout`; an
/// error from `f` ends the wait at once.
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// The "count T" file of the `replica_counter` workload in `dir`: (count, ms).
pub fn replica_count(dir: &Path) -> Option<(u64, u64)> {
    let t = fs::read_to_string(dir.join("count")).ok()?;
    let mut it = t.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// Polls `f` every 10 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(10));
    }
}

/// The state letter of `/proc/PID/stat` (R, S, D, T, t, Z, ...), or `None` if there is no such
/// process.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
pub fn proc_stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_owned)
}

/// True when PID exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The value of a `Name:\tvalue` line of `/proc/PID/status`.
pub fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// The bytes of `/proc/PID/FILE`.
pub fn proc_bytes(pid: i32, file: &str) -> Vec<u8> {
    fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"))
}

/// The target of `/proc/PID/LINK` (`exe`, `cwd`, `fd/N`).
pub fn proc_link(pid: i32, link: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/{link}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/{link}: {e}"))
}

/// The system call PID is blocked in (first field of `/proc/PID/syscall`), if any.
pub fn blocked_syscall(pid: i32) -> Option<i64> {
    let s = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Waits until PID sleeps inside one of `nrs` (x86_64 syscall numbers).
pub fn wait_in_syscall(pid: i32, nrs: &[i64]) {
    wait_until(
        VICTIM_TIMEOUT,
        &format!("pid {pid} to block in syscall {nrs:?}"),
        || {
            (proc_state(pid) == Some('S') && blocked_syscall(pid).is_some_and(|n| nrs.contains(&n)))
                .then_some(())
        },
    );
}

/// Direct children of the test process (alive or zombie).
pub fn my_children() -> BTreeSet<i32> {
    let me = std::process::id().to_string();
    let mut out = BTreeSet::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if proc_stat_field(pid, 4).is_some_and(|ppid| ppid == me) {
            out.insert(pid);
        }
    }
    out
}

/// Kills PID with SIGKILL and reaps it when it is our child; otherwise waits (briefly) for it to
/// disappear. Never panics: it runs in `Drop`.
pub fn kill_and_reap(pid: i32) {
    if pid <= 1 {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match waitpid(
            Pid::from_raw(pid),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return,
            Err(Errno::ECHILD) => {
                if !alive(pid) {
                    return;
                }
            }
            Err(_) => return,
        }
        sleep(Duration::from_millis(5));
    }
}

/// Waits for our child PID to end and returns how it ended.
pub fn reap(pid: i32, timeout: Duration) -> WaitStatus {
    wait_until(timeout, &format!("pid {pid} to end"), || {
        match waitpid(
            Pid::from_raw(pid),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(status) => Some(status),
            Err(e) => panic!("waitpid({pid}): {e}"),
        }
    })
}

/// The result of one `ferry` command.
#[derive(Debug)]
pub struct FerryOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl FerryOutput {
    /// Panics with the whole output unless the command succeeded.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            self.cmdline,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics with the whole output unless the command failed (and was not killed by a signal).
    pub fn assert_failed(&self) -> &Self {
        assert!(
            self.status.code().is_some_and(|c| c != 0),
            "`{}` should have failed with an error but ended with {}:\nstdout: {}\nstderr: {}",
            self.cmdline,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The PID of `restored pid N`, which must be the whole of stdout.
    pub fn restored_pid(&self) -> i32 {
        parse_restored_pid(&self.stdout).unwrap_or_else(|| {
            panic!(
                "`{}` printed {:?} on stdout, not exactly `restored pid N`; stderr: {}",
                self.cmdline, self.stdout, self.stderr
            )
        })
    }
}

/// Parses stdout of `ferry restore`: exactly `restored pid N` and a newline.
pub fn parse_restored_pid(stdout: &str) -> Option<i32> {
    let line = stdout.strip_suffix('\n').unwrap_or(stdout);
    let n = line.strip_prefix("restored pid ")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&p| p > 0)
}

impl TestCtx {
    /// A path inside this test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `ferry ARGS` with stdin from /dev/null.
    pub fn ferry<S: AsRef<OsStr>>(&self, args: &[S]) -> FerryOutput {
        self.ferry_with_stdin(args, Stdio::null())
    }

    /// Runs `ferry ARGS` with the given stdin. Stdout and stderr go to files (a restored process
    /// may keep them open with `--stdio inherit`), read once the command has exited.
    pub fn ferry_with_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: Stdio) -> FerryOutput {
        self.ferry_with_env(args, stdin, &[])
    }

    /// [`TestCtx::ferry_with_stdin`] with variables added to the environment (`FERRY_LOG`,
    /// `FERRY_FAULT`).
    pub fn ferry_with_env<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> FerryOutput {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let out_path = self.path(&format!("ferry-{seq}.out"));
        let err_path = self.path(&format!("ferry-{seq}.err"));
        let bin = ferry_bin();
        let cmdline = std::iter::once(bin.as_os_str())
            .chain(args.iter().map(AsRef::as_ref))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new(&bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(File::create(&out_path).expect("create stdout capture"))
            .stderr(File::create(&err_path).expect("create stderr capture"))
            .spawn()
            .unwrap_or_else(|e| panic!("start `{cmdline}`: {e}"));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for ferry") {
                break status;
            }
            if start.elapsed() > FERRY_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{cmdline}` did not finish within {FERRY_TIMEOUT:?}; stderr so far: {}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(5));
        };
        FerryOutput {
            cmdline,
            status,
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }
}

/// A process under test, and every process that appeared because of it. Dropping it kills them
/// all with SIGKILL (by PID) and reaps those that are our children.
#[derive(Debug)]
pub struct Victim {
    /// Its PID as seen by the test (after a restore into a new PID namespace, the outer PID).
    pub pid: i32,
    /// Its PID when it was started (the PID it sees for itself).
    pub orig_pid: i32,
    /// Its state directory (status, log, and whatever the victim keeps there).
    pub state: PathBuf,
    /// The write end of its stdin, when started with a pipe there.
    pub stdin: Option<File>,
    others: Vec<i32>,
    /// `pid` was reaped: it may belong to someone else by now and must not be killed.
    reaped: bool,
}

/// Options for starting a C victim.
#[derive(Debug, Default)]
pub struct Spawn {
    /// Extra arguments after the state directory.
    pub args: Vec<String>,
    /// Give it a pipe on stdin (kept in [`Victim::stdin`]).
    pub stdin_pipe: bool,
    /// Its stdout; /dev/null when `None`.
    pub stdout: Option<Stdio>,
    /// Its stdin when not a pipe; /dev/null when `None`.
    pub stdin: Option<Stdio>,
    /// Its stderr; `STATE/stderr` when `None`.
    pub stderr: Option<Stdio>,
}

/// What the kernel shows of a process that does not answer, for a failure message: its state,
/// signal masks and pending sets (per thread too), and the system call each thread is in.
fn proc_report(pid: i32) -> String {
    let mut out = Vec::new();
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for tid in tasks {
        let dir = format!("/proc/{pid}/task/{tid}");
        let status = fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let keep: Vec<&str> = status
            .lines()
            .filter(|l| {
                [
                    "State:",
                    "SigQ:",
                    "SigPnd:",
                    "ShdPnd:",
                    "SigBlk:",
                    "SigCgt:",
                    "TracerPid:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect();
        let syscall = fs::read_to_string(format!("{dir}/syscall")).unwrap_or_default();
        let wchan = fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
        out.push(format!(
            "task {tid}: {}; syscall {}; wchan {wchan}",
            keep.join(", ").replace('\t', " "),
            syscall.trim()
        ));
    }
    out.join(" | ")
}

impl Victim {
    /// Compiles and starts the C workload NAME with default options and waits until it is ready.
    pub fn c(ctx: &TestCtx, name: &str, args: &[&str]) -> Victim {
        Self::c_with(
            ctx,
            name,
            Spawn {
                args: args.iter().map(|s| (*s).to_owned()).collect(),
                ..Spawn::default()
            },
        )
    }

    /// Compiles and starts the C workload NAME and waits until it is ready.
    pub fn c_with(ctx: &TestCtx, name: &str, opts: Spawn) -> Victim {
        let exe = workload(name);
        let mut cmd = Command::new(exe);
        let state = Self::new_state_dir(ctx, name);
        cmd.arg(&state).args(&opts.args);
        let v = Self::spawn(cmd, state, opts);
        v.wait_ready();
        v
    }

    /// A fresh state directory for a victim in the test's directory.
    pub fn new_state_dir(ctx: &TestCtx, name: &str) -> PathBuf {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = ctx.path(&format!("{name}-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).expect("create the victim's state directory");
        dir
    }

    /// Starts `cmd` as a victim whose state directory is `state` (does not wait for it).
    pub fn spawn(mut cmd: Command, state: PathBuf, opts: Spawn) -> Victim {
        cmd.env("FERRY_TEST_MARK", "environ-survives-restore");
        if opts.stdin_pipe {
            cmd.stdin(Stdio::piped());
        } else {
            cmd.stdin(opts.stdin.unwrap_or_else(Stdio::null));
        }
        cmd.stdout(opts.stdout.unwrap_or_else(Stdio::null));
        match opts.stderr {
            Some(s) => cmd.stderr(s),
            None => cmd.stderr(File::create(state.join("stderr")).expect("create victim stderr")),
        };
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start victim {cmd:?}: {e}"));
        let stdin = child
            .stdin
            .take()
            .map(|s| File::from(std::os::fd::OwnedFd::from(s)));
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // The Child handle is dropped without waiting: the victim is reaped by PID.
        drop(child);
        Victim {
            pid,
            orig_pid: pid,
            state,
            stdin,
            others: Vec::new(),
            reaped: false,
        }
    }

    /// A second guard for another copy of this victim (same state directory), e.g. one restored
    /// from an image made with `--leave-running` while this one still runs.
    pub fn sibling(&self) -> Victim {
        Victim {
            pid: self.pid,
            orig_pid: self.orig_pid,
            state: self.state.clone(),
            stdin: None,
            others: Vec::new(),
            reaped: self.reaped,
        }
    }

    /// Kills the victim now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if !self.reaped {
            kill_and_reap(self.pid);
            self.reaped = true;
        }
    }

    /// The victim runs again as `pid`, restored by the test itself (a tree, say): it is
    /// killed and reaped on drop.
    pub fn restored_as(&mut self, pid: i32) {
        self.pid = pid;
        self.reaped = false;
        self.others.retain(|&p| p != pid);
    }

    /// Also kill (and reap) PID when this victim is dropped.
    pub fn track(&mut self, pid: i32) {
        if pid != self.pid && !self.others.contains(&pid) {
            self.others.push(pid);
        }
    }

    /// The lines of the status file.
    pub fn status_lines(&self) -> Vec<String> {
        read_lines(&self.state.join("status"))
    }

    /// What the victim wrote on stderr (for failure messages).
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(self.state.join("stderr")).unwrap_or_default()
    }

    /// Waits for a status line satisfying `pred` and returns it.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.status_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            if !alive(self.pid) {
                panic!(
                    "victim {} died while the test waited for {what}; status: {:?}; stderr: {}",
                    self.pid,
                    self.status_lines(),
                    self.stderr_text()
                );
            }
            if start.elapsed() > VICTIM_TIMEOUT {
                panic!(
                    "timed out waiting for {what} from victim {}; status: {:?}; stderr: {}",
                    self.pid,
                    self.status_lines(),
                    self.stderr_text()
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the victim wrote `ready`.
    pub fn wait_ready(&self) -> String {
        self.wait_status("ready", |l| l.starts_with("ready"))
    }

    /// Waits for the `n`-th (0-based) status line starting with `prefix`, and returns it.
    pub fn wait_nth(&self, prefix: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let lines: Vec<String> = self
                .status_lines()
                .into_iter()
                .filter(|l| l.starts_with(prefix))
                .collect();
            if let Some(l) = lines.get(n) {
                return l.clone();
            }
            assert!(
                alive(self.pid),
                "victim {} died while the test waited for `{prefix}` #{n}; status: {:?}; stderr: {}",
                self.pid,
                self.status_lines(),
                self.stderr_text()
            );
            assert!(
                start.elapsed() <= VICTIM_TIMEOUT,
                "timed out waiting for `{prefix}` #{n} from victim {}; status: {:?}",
                self.pid,
                self.status_lines()
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// Number of status lines starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.status_lines()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Sends a signal to the victim.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig)
            .unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid));
    }

    /// Asks the victim to verify itself (SIGUSR1) and returns its `ok ...` answer; panics on a
    /// `BAD ...` answer or none.
    pub fn check(&self) -> String {
        let before = self.answers().len();
        self.signal(Signal::SIGUSR1);
        let start = Instant::now();
        loop {
            let answers = self.answers();
            if let Some(line) = answers.get(before) {
                assert!(
                    line.starts_with("ok"),
                    "victim {} reports a problem: {line}\nall status: {:?}\nstderr: {}",
                    self.pid,
                    self.status_lines(),
                    self.stderr_text()
                );
                return line.clone();
            }
            assert!(
                alive(self.pid),
                "victim {} died instead of answering a check; status: {:?}; stderr: {}",
                self.pid,
                self.status_lines(),
                self.stderr_text()
            );
            assert!(
                start.elapsed() <= VICTIM_TIMEOUT,
                "victim {} did not answer a check (SIGUSR1) within {VICTIM_TIMEOUT:?}; status: {:?}; \
                 its state: {}",
                self.pid,
                self.status_lines(),
                proc_report(self.pid)
            );
            sleep(Duration::from_millis(5));
        }
    }

    fn answers(&self) -> Vec<String> {
        self.status_lines()
            .into_iter()
            .filter(|l| l.starts_with("ok") || l.starts_with("BAD"))
            .collect()
    }

    /// Panics if any status line starts with `BAD`.
    pub fn assert_no_bad(&self) {
        let bad: Vec<String> = self
            .status_lines()
            .into_iter()
            .filter(|l| l.starts_with("BAD"))
            .collect();
        assert!(
            bad.is_empty(),
            "victim {} reported problems: {bad:?}",
            self.pid
        );
    }

    /// The numbers of the `tick N` lines of the log, in order.
    pub fn ticks(&self) -> Vec<u64> {
        read_lines(&self.state.join("log"))
            .iter()
            .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
            .collect()
    }

    /// The last tick logged (0 before the first).
    pub fn last_tick(&self) -> u64 {
        self.ticks().last().copied().unwrap_or(0)
    }

    /// Waits until the victim logged a tick greater than `n`; returns the last tick.
    pub fn wait_tick_beyond(&self, n: u64) -> u64 {
        let start = Instant::now();
        loop {
            let t = self.last_tick();
            if t > n {
                return t;
            }
            assert!(
                alive(self.pid),
                "victim {} died while counting (last tick {t}); status: {:?}; stderr: {}",
                self.pid,
                self.status_lines(),
                self.stderr_text()
            );
            assert!(
                start.elapsed() <= VICTIM_TIMEOUT,
                "victim {} stopped counting at tick {t} (waited for > {n}); state {:?}",
                self.pid,
                proc_report(self.pid)
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// Asserts the log's ticks go up by one each time: nothing lost, nothing repeated, never
    /// started over.
    pub fn assert_ticks_continuous(&self) {
        let ticks = self.ticks();
        for (i, w) in ticks.windows(2).enumerate() {
            assert_eq!(
                w[1],
                w[0] + 1,
                "victim {}: log line {} is tick {} after tick {}",
                self.pid,
                i + 2,
                w[1],
                w[0]
            );
        }
    }

    /// Asserts the victim is running (or sleeping) and neither stopped nor traced.
    pub fn assert_running_free(&self) {
        let state = proc_state(self.pid);
        assert!(
            matches!(state, Some('R' | 'S' | 'D')),
            "victim {} is in state {state:?}, not running or sleeping",
            self.pid
        );
        assert_eq!(
            status_field(self.pid, "TracerPid").as_deref(),
            Some("0"),
            "victim {} is still traced",
            self.pid
        );
    }

    /// `ferry dump PID -o IMAGE EXTRA...`, which must succeed. Without `--leave-running` the
    /// victim must then have been killed with SIGKILL; it is reaped, so its PID is free.
    pub fn dump(&mut self, ctx: &TestCtx, image: &Path, extra: &[&str]) -> FerryOutput {
        let pid = self.pid.to_string();
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("dump"),
            OsStr::new(&pid),
            OsStr::new("-o"),
            image.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = ctx.ferry(&args);
        out.assert_ok();
        assert!(
            !out.stdout.trim().is_empty() && out.stdout.trim().lines().count() == 1,
            "dump should print a one-line summary, printed {:?}",
            out.stdout
        );
        assert!(
            image.is_file(),
            "dump succeeded but wrote no {}",
            image.display()
        );
        if !extra.contains(&"--leave-running") {
            self.reap_killed();
        }
        out
    }

    /// Reaps the victim after a dump ended it, asserting it was killed with SIGKILL.
    pub fn reap_killed(&mut self) {
        self.reaped = true;
        let status = match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => {
                // Not our child (e.g. inside a PID namespace): wait for it to vanish.
                wait_until(VICTIM_TIMEOUT, "the dumped process to end", || {
                    (!alive(self.pid)).then_some(())
                });
                return;
            }
            Ok(WaitStatus::StillAlive) => reap(self.pid, VICTIM_TIMEOUT),
            Ok(status) => status,
            Err(e) => panic!("waitpid({}): {e}", self.pid),
        };
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)),
            "after dump, victim {} should have been killed with SIGKILL, but: {status:?}",
            self.pid
        );
    }

    /// `ferry restore IMAGE EXTRA...`, which must succeed; the victim's PID becomes the one
    /// printed, and every new child of the test process is tracked for cleanup.
    pub fn restore(&mut self, ctx: &TestCtx, image: &Path, extra: &[&str]) -> FerryOutput {
        self.restore_with_stdin(ctx, image, extra, Stdio::null())
    }

    /// [`Victim::restore`] with the given stdin for `ferry restore`.
    pub fn restore_with_stdin(
        &mut self,
        ctx: &TestCtx,
        image: &Path,
        extra: &[&str],
        stdin: Stdio,
    ) -> FerryOutput {
        self.restore_with_env(ctx, image, extra, stdin, &[])
    }

    /// [`Victim::restore_with_stdin`] with variables added to the environment of `ferry
    /// restore`.
    pub fn restore_with_env(
        &mut self,
        ctx: &TestCtx,
        image: &Path,
        extra: &[&str],
        stdin: Stdio,
        env: &[(&str, &str)],
    ) -> FerryOutput {
        let before = my_children();
        let mut args: Vec<&OsStr> = vec![OsStr::new("restore"), image.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let out = ctx.ferry_with_env(&args, stdin, env);
        for pid in my_children().difference(&before) {
            self.track(*pid);
        }
        out.assert_ok();
        let pid = out.restored_pid();
        let old = self.pid;
        self.pid = pid;
        self.reaped = false;
        self.others.retain(|&p| p != pid);
        if old != pid && alive(old) && !self.others.contains(&old) {
            self.others.push(old);
        }
        out
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if !self.reaped {
            kill_and_reap(self.pid);
        }
        for &pid in &self.others {
            kill_and_reap(pid);
        }
    }
}

/// The lines of a file (empty if it does not exist). A last line without its newline is left
/// out: the writer may be in the middle of it.
pub fn read_lines(path: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().map(str::to_owned).collect()
}

/// The value of `key=value` in a status line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Writes a line to a victim's stdin pipe.
pub fn write_line(f: &mut File, line: &str) -> Result<()> {
    f.write_all(format!("{line}\n").as_bytes())?;
    f.flush()?;
    Ok(())
}

/// Everything `/proc` shows about a process that a restore must keep.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcSnapshot {
    /// `/proc/PID/cmdline`.
    pub cmdline: Vec<u8>,
    /// `/proc/PID/environ`.
    pub environ: Vec<u8>,
    /// `/proc/PID/exe`.
    pub exe: PathBuf,
    /// `/proc/PID/cwd`.
    pub cwd: PathBuf,
    /// `/proc/PID/limits`.
    pub limits: String,
    /// Umask, Uid, Gid, Groups, SigBlk, SigIgn, SigCgt lines of `/proc/PID/status`.
    pub status: Vec<String>,
}

impl ProcSnapshot {
    /// Reads the snapshot of PID.
    pub fn of(pid: i32) -> Result<Self> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let keep = [
            "Umask", "Uid", "Gid", "Groups", "SigBlk", "SigIgn", "SigCgt",
        ];
        let status = status
            .lines()
            .filter(|l| keep.iter().any(|k| l.split(':').next() == Some(k)))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if status.len() != keep.len() {
            bail!("unexpected /proc/{pid}/status: {status:?}");
        }
        Ok(Self {
            cmdline: fs::read(format!("/proc/{pid}/cmdline"))?,
            environ: fs::read(format!("/proc/{pid}/environ"))?,
            exe: fs::read_link(format!("/proc/{pid}/exe"))?,
            cwd: fs::read_link(format!("/proc/{pid}/cwd"))?,
            limits: fs::read_to_string(format!("/proc/{pid}/limits"))?,
            status,
        })
    }
}

/// The address space of PID from `/proc/PID/maps` as `start-end perms name` lines, with
/// neighbouring areas of equal protection and name joined (the kernel may merge or split VMAs
/// differently after a restore without the process being able to tell) and the name of shared
/// anonymous memory normalized (`/dev/zero (deleted)`, a memfd or SysV segment behave the same).
pub fn normalized_maps(pid: i32) -> Vec<String> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/maps: {e}"));
    let mut out: Vec<(u64, u64, String, String)> = Vec::new();
    for line in maps.lines() {
        let mut cols = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (cols.next(), cols.next()) else {
            continue;
        };
        let name = cols.nth(3).unwrap_or("").trim().to_owned();
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let shared_anon = perms.ends_with('s')
            && (name.starts_with("/dev/zero")
                || name.starts_with("/memfd:")
                || name.starts_with("/SYSV"));
        let name = if shared_anon {
            "<shared anonymous>".to_owned()
        } else {
            name
        };
        if let Some(last) = out.last_mut()
            && last.1 == start
            && last.2 == perms
            && last.3 == name
        {
            last.1 = end;
            continue;
        }
        out.push((start, end, perms.to_owned(), name));
    }
    out.into_iter()
        .map(|(s, e, p, n)| format!("{s:x}-{e:x} {p} {n}"))
        .collect()
}

/// Asserts two address-space listings from [`normalized_maps`] are equal, showing the difference.
pub fn assert_same_maps(before: &[String], after: &[String]) {
    if before == after {
        return;
    }
    let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    panic!(
        "the address space changed across the restore:\nonly before: {gone:#?}\nonly after: {new:#?}"
    );
}

/// The path of an image file NAME.ferry in the test's directory.
pub fn image_path(ctx: &TestCtx, name: &str) -> PathBuf {
    ctx.path(&format!("{name}.ferry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restored_pid() {
        assert_eq!(parse_restored_pid("restored pid 42\n"), Some(42));
        assert_eq!(parse_restored_pid("restored pid 42"), Some(42));
        assert_eq!(parse_restored_pid("restored pid 42\nmore\n"), None);
        assert_eq!(parse_restored_pid("restored pid \n"), None);
        assert_eq!(parse_restored_pid("restored pid -3\n"), None);
        assert_eq!(parse_restored_pid("restored  pid 3\n"), None);
    }

    #[test]
    fn reads_fields() {
        assert_eq!(field("ok pid=3 counter=9", "counter"), Some("9"));
        assert_eq!(field("ok pid=3 counter=9", "pi"), None);
    }

    #[test]
    fn reads_own_proc() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(alive(me));
        assert_eq!(proc_stat_field(me, 1), None);
        assert!(proc_stat_field(me, 4).is_some());
        assert!(status_field(me, "Uid").is_some());
        ProcSnapshot::of(me).unwrap();
    }
}
