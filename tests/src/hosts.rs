//! Test hosts: N network + PID + mount + UTS namespaces joined by the bridge `ferrybr0`, host N
//! at `10.77.0.N`, each (unless made without agents) running its own `ferryd`.
//!
//! [`Hosts::up`] runs `xtask hosts up N` (the same code as `cargo xtask hosts up N`), and
//! dropping the [`Hosts`] runs `xtask hosts down`, also when the test fails. One test at a time
//! holds the hosts (a process-wide lock). Take [`crate::setup`] *before* the hosts if a test
//! needs both, always in that order.
//!
//! Commands run inside a host through `nsenter` into its init's namespaces: [`Hosts::command`],
//! [`Hosts::spawn`], [`Hosts::run`]. Whatever runs inside a host ends with it at drop; wait for
//! the [`Child`]ren you spawned so that no `nsenter` stays a zombie.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};
use std::{fs, io};

use anyhow::{Context, Result, bail, ensure};
use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::{make_subreaper, target_dir};

/// Where `xtask hosts up` keeps everything (per host: `hN/`).
pub const ROOT: &str = "/run/ferry-hosts";
/// The bridge in the root network namespace.
pub const BRIDGE: &str = "ferrybr0";
/// The port every ferryd listens on for its peers.
pub const PEER_PORT: u16 = 7411;
/// The port of every ferryd's web page and `/metrics` (HTTPS, as `xtask hosts up` configures).
pub const WEB_PORT: u16 = 7443;
/// How long `xtask hosts up`/`down` may take.
const XTASK_TIMEOUT: Duration = Duration::from_secs(120);

/// The `xtask` binary: `XTASK_BIN`, else `<target>/debug/xtask`. Panics with a clear message
/// when it does not exist.
pub fn xtask_bin() -> PathBuf {
    let path = match std::env::var_os("XTASK_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => target_dir().join("debug").join("xtask"),
    };
    assert!(
        path.is_file(),
        "the xtask binary is missing at {}: build it first (`cargo xtask test` does, or \
         `cargo build --workspace --bins`), or point XTASK_BIN at it",
        path.display()
    );
    path
}

/// N running test hosts; dropping it tears them all down.
#[derive(Debug)]
pub struct Hosts {
    count: u32,
    agents: bool,
    /// Every PID that may end up as our zombie (inits, ferryd launchers), reaped at drop.
    adopted: Vec<i32>,
    _lock: MutexGuard<'static, ()>,
    _machine: nix::fcntl::Flock<std::fs::File>,
}

impl Hosts {
    /// Brings up `n` hosts, each running ferryd (certificates from `ferry ca`, configs in
    /// `/run/ferry-hosts/hN/config.toml`). Needs root; leftovers of an earlier run are torn down
    /// first.
    pub fn up(n: u32) -> Result<Self> {
        Self::start(n, true)
    }

    /// Brings up `n` hosts with only their namespaces, mounts and network: no ferryd.
    pub fn up_without_agents(n: u32) -> Result<Self> {
        Self::start(n, false)
    }

    fn start(n: u32, agents: bool) -> Result<Self> {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let machine = crate::machine_lock("/run/ferry-hosts.lock");
        // The hosts' inits and launchers are orphaned when xtask exits: adopt them, to reap them.
        make_subreaper();
        xtask(&["hosts", "down"], &[]).context("tear down leftover test hosts")?;
        let count = n.to_string();
        let mut args = vec!["hosts", "up", &count, "--no-build"];
        if !agents {
            args.push("--no-agents");
        }
        let mut hosts = Self {
            count: n,
            agents,
            adopted: Vec::new(),
            _lock: lock,
            _machine: machine,
        };
        // From here on, Drop tears down whatever part came up.
        let result = xtask(&args, &[]);
        hosts.adopt_recorded();
        result?;
        Ok(hosts)
    }

    /// Notes the recorded inits and ferryd launchers, which may become our zombies.
    fn adopt_recorded(&mut self) {
        for n in 1..=self.count {
            for name in ["init", "ferryd-launcher"] {
                if let Some(pid) = read_pid(&self.dir(n), name)
                    && !self.adopted.contains(&pid)
                {
                    self.adopted.push(pid);
                }
            }
        }
    }

    /// The number of hosts.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether each host runs a ferryd.
    pub fn has_agents(&self) -> bool {
        self.agents
    }

    /// Host N's name: `hN`.
    pub fn name(n: u32) -> String {
        format!("h{n}")
    }

    /// Host N's address: `10.77.0.N`.
    pub fn addr(n: u32) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, u8::try_from(n).expect("at most 200 hosts"))
    }

    /// Host N's peer address: `10.77.0.N:7411`.
    pub fn peer_addr(n: u32) -> String {
        format!("{}:{PEER_PORT}", Self::addr(n))
    }

    /// Host N's directory `/run/ferry-hosts/hN` (config.toml, ferryd.log, pid files, state/).
    pub fn dir(&self, n: u32) -> PathBuf {
        self.check(n);
        Path::new(ROOT).join(Self::name(n))
    }

    /// Host N's ferryd socket (the same path inside and outside the host; inside, the default
    /// `/run/ferry/ferryd.sock` is a symlink to it).
    pub fn socket(&self, n: u32) -> PathBuf {
        self.dir(n).join("ferryd.sock")
    }

    /// Host N's ferryd config.
    pub fn config(&self, n: u32) -> PathBuf {
        self.dir(n).join("config.toml")
    }

    /// The directory of certificates (`ca.pem`, `cluster.key`, `hN.pem`, `hN.key`).
    pub fn tls_dir(&self) -> PathBuf {
        Path::new(ROOT).join("tls")
    }

    /// Host N's records directory as seen from outside (its `/var/lib/ferry`).
    pub fn state_dir(&self, n: u32) -> PathBuf {
        self.dir(n).join("state")
    }

    /// The PID (in our namespace) of host N's PID 1.
    pub fn init_pid(&self, n: u32) -> i32 {
        read_pid(&self.dir(n), "init")
            .unwrap_or_else(|| panic!("host h{n} has no recorded init pid"))
    }

    /// The PID (in our namespace) of host N's ferryd as last started, if recorded.
    pub fn ferryd_pid(&self, n: u32) -> Option<i32> {
        read_pid(&self.dir(n), "ferryd")
    }

    /// The root-side name of host N's veth (a port of the bridge).
    pub fn veth(n: u32) -> String {
        format!("ferryh{n}")
    }

    /// A command that runs `program` inside host N (its network, PID, mount and UTS
    /// namespaces); add arguments, environment and stdio as usual. The child's PID is that of
    /// `nsenter`; see [`Hosts::inner_pid`].
    pub fn command(&self, n: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.init_pid(n).to_string())
            .args(["--net", "--pid", "--mount", "--uts", "--"])
            .arg(program);
        cmd
    }

    /// Starts `argv` inside host N with stdin from /dev/null and stdout/stderr piped.
    pub fn spawn(&self, n: u32, argv: &[&str]) -> Result<Child> {
        let (program, args) = argv.split_first().context("an empty command")?;
        self.command(n, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {argv:?} in h{n}"))
    }

    /// Runs `argv` inside host N to the end and returns its output (whatever its status).
    pub fn run(&self, n: u32, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("an empty command")?;
        self.command(n, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {argv:?} in h{n}"))
    }

    /// Runs `argv` inside host N, which must succeed, and returns its stdout.
    pub fn run_ok(&self, n: u32, argv: &[&str]) -> Result<String> {
        let out = self.run(n, argv)?;
        ensure!(
            out.status.success(),
            "{argv:?} in h{n} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The PID (in our namespace) of the program a [`Hosts::spawn`]ed `nsenter` runs, once it
    /// has forked it.
    pub fn inner_pid(child: &Child) -> Result<i32> {
        let pid = child.id();
        let start = Instant::now();
        loop {
            let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .with_context(|| format!("nsenter {pid} is gone"))?;
            if let Some(inner) = children.split_whitespace().next() {
                return inner.parse().context("parse a pid");
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "nsenter {pid} started no program within 10 s"
            );
            sleep(Duration::from_millis(5));
        }
    }

    /// Kills host N's ferryd (SIGKILL) and waits until it is gone; the host and its other
    /// processes stay.
    pub fn kill_ferryd(&mut self, n: u32) -> Result<()> {
        self.check(n);
        xtask(&["hosts", "kill-ferryd", &n.to_string()], &[])?;
        self.reap_adopted();
        Ok(())
    }

    /// (Re)starts host N's ferryd with `env` added to its environment (e.g.
    /// `[("FERRY_FAULT", "dest-exit-mid-stream")]`), and waits until it listens on its socket.
    /// Returns its PID.
    pub fn start_ferryd(&mut self, n: u32, env: &[(&str, &str)]) -> Result<i32> {
        self.check(n);
        xtask(&["hosts", "start-ferryd", &n.to_string()], env)?;
        self.adopt_recorded();
        self.ferryd_pid(n).context("start-ferryd recorded no pid")
    }

    /// Host N's ferryd log (every ferryd started on it appends to it).
    pub fn ferryd_log(&self, n: u32) -> String {
        fs::read_to_string(self.dir(n).join("ferryd.log")).unwrap_or_default()
    }

    /// Takes host N's link down (its veth's bridge side): host N can reach nobody, nobody it.
    pub fn link_down(&self, n: u32) -> Result<()> {
        self.check(n);
        ip_link_set(&Self::veth(n), "down")
    }

    /// Brings host N's link back up.
    pub fn link_up(&self, n: u32) -> Result<()> {
        self.check(n);
        ip_link_set(&Self::veth(n), "up")
    }

    /// Cuts host N's link with `xtask hosts cut-link N` (its processes keep running).
    pub fn cut_link(&self, n: u32) -> Result<()> {
        self.check(n);
        xtask(&["hosts", "cut-link", &n.to_string()], &[]).map(drop)
    }

    /// Restores host N's link with `xtask hosts restore-link N`.
    pub fn restore_link(&self, n: u32) -> Result<()> {
        self.check(n);
        xtask(&["hosts", "restore-link", &n.to_string()], &[]).map(drop)
    }

    /// Kills host N whole with `xtask hosts kill-host N`: its init and so every process in its
    /// namespaces, ferryd included, and its link.
    pub fn kill_host(&mut self, n: u32) -> Result<()> {
        self.check(n);
        self.adopt_recorded();
        xtask(&["hosts", "kill-host", &n.to_string()], &[])?;
        self.reap_adopted();
        Ok(())
    }

    /// Brings killed host N back with `xtask hosts start-host N`: new namespaces at the same
    /// address and a fresh ferryd with the same name and certificate. Returns ferryd's PID.
    pub fn start_host(&mut self, n: u32) -> Result<i32> {
        self.check(n);
        xtask(&["hosts", "start-host", &n.to_string()], &[])?;
        self.adopt_recorded();
        self.ferryd_pid(n)
            .context("start-host recorded no ferryd pid")
    }

    fn check(&self, n: u32) {
        assert!(
            (1..=self.count).contains(&n),
            "there is no host h{n}: {} hosts are up",
            self.count
        );
    }

    /// Reaps, without waiting, whichever adopted PIDs have ended.
    fn reap_adopted(&mut self) {
        self.adopted.retain(|&pid| {
            !matches!(
                waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD)
            )
        });
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.adopt_recorded();
        // `hosts down` waits for each host's init, which waits until every process of its
        // namespace is reaped, ours too: a victim whose nsenter ended is our orphan (we are
        // a subreaper), reaped meanwhile.
        if let Err(err) = xtask_reaping(&["hosts", "down"], &[], true) {
            eprintln!("warning: tearing the test hosts down: {err:#}");
        }
        let start = Instant::now();
        while !self.adopted.is_empty() && start.elapsed() < Duration::from_secs(5) {
            self.reap_adopted();
            sleep(Duration::from_millis(5));
        }
    }
}

/// Runs `xtask ARGS` with `env` added, and fails with its output unless it succeeds.
fn xtask(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    xtask_reaping(args, env, false)
}

/// How many PID namespaces deep `pid` is (the entries of its `NSpid`), a zombie too.
fn pid_ns_depth(pid: &str) -> usize {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map_or(0, |ids| ids.split_whitespace().count())
}

/// Reaps our ended children that lived inside a host (deeper in PID namespaces than we are):
/// victims whose nsenter ended, which came to us as the subreaper. Our own children outside
/// (an nsenter a test waits for) are left to their owners.
fn reap_host_orphans() {
    let ours = pid_ns_depth("self");
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let zombie = fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if zombie
                && pid_ns_depth(child) > ours
                && let Ok(pid) = child.parse()
            {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// [`xtask`]; with `reap`, our children from inside a host that end meanwhile are reaped
/// ([`reap_host_orphans`]).
fn xtask_reaping(args: &[&str], env: &[(&str, &str)], reap: bool) -> Result<String> {
    let bin = xtask_bin();
    let mut child = Command::new(&bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let start = Instant::now();
    let status = loop {
        if reap {
            reap_host_orphans();
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > XTASK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`xtask {}` took longer than {XTASK_TIMEOUT:?}",
                args.join(" ")
            );
        }
        sleep(Duration::from_millis(10));
    };
    let read = |pipe: Option<&mut dyn io::Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn io::Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn io::Read));
    ensure!(
        status.success(),
        "`xtask {}` failed ({status}):\n{stdout}{stderr}",
        args.join(" ")
    );
    Ok(stdout)
}

fn ip_link_set(link: &str, state: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["link", "set", link, state])
        .stdin(Stdio::null())
        .output()
        .context("run ip")?;
    ensure!(
        out.status.success(),
        "`ip link set {link} {state}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn read_pid(dir: &Path, name: &str) -> Option<i32> {
    fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}
