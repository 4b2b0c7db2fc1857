//! `cargo xtask hosts up N` / `cargo xtask hosts down`: N test hosts on this machine.
//!
//! Each host `hN` is a network + PID + mount + UTS namespace:
//! - its PID 1 is `xtask host-init`, which only reaps children (so killing `ferryd` leaves the
//!   host standing); killing it ends every process of the host;
//! - its network has `lo` and `eth0` (10.77.0.N/24), the peer end of the veth `ferryhN` whose
//!   other end is a port of the bridge `ferrybr0` in the root namespace;
//! - its mounts are the machine's, except a tmpfs on `/run/ferry` (holding a `ferryd.sock`
//!   symlink to the host's real socket), `/run/ferry-hosts/hN/state` bound on `/var/lib/ferry`,
//!   a tmpfs on `/srv/ferry-host`, its own `/proc`, and an empty `/run/systemd/journal` (so
//!   that ferryd logs to its file, not to the machine's journal);
//! - unless `--no-agents`, it runs `ferryd --config /run/ferry-hosts/hN/config.toml` with
//!   `FERRY_STATE_DIR=/var/lib/ferry`, logging to `/run/ferry-hosts/hN/ferryd.log`.
//!
//! `cut-link N` / `restore-link N` take host N's link down and up; `kill-host N` kills its init
//! (and so everything in it) and `start-host N` brings it back with a fresh ferryd of the same
//! name, certificate and configuration.
//!
//! Everything `up` makes is recorded under `/run/ferry-hosts` (PIDs with their start times, the
//! mount points it had to create), so that `down` ends exactly what `up` started, also after a
//! partial `up`.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe, sethostname, setsid};

use crate::util;

/// Where everything about the running hosts lives (visible from every namespace).
pub const ROOT: &str = "/run/ferry-hosts";
/// The bridge in the root network namespace.
pub const BRIDGE: &str = "ferrybr0";
/// Root-side veth names are this and the host number.
const VETH_PREFIX: &str = "ferryh";
/// Host N has address `SUBNET.N`.
const SUBNET: &str = "10.77.0";
/// The port every ferryd listens on for peers.
pub const PEER_PORT: u16 = 7411;
/// The port of every ferryd's web page and `/metrics` (HTTPS).
pub const WEB_PORT: u16 = 7443;
/// At most this many hosts (addresses .1 to .200).
const MAX_HOSTS: u32 = 200;
/// Mounted privately in each host: the socket directory, the records, a host-only directory.
const SOCKET_DIR: &str = "/run/ferry";
const STATE_DIR: &str = "/var/lib/ferry";
const PRIVATE_DIR: &str = "/srv/ferry-host";
/// Hidden in each host, so that its programs log to stderr rather than the machine's journal.
const JOURNAL_DIR: &str = "/run/systemd/journal";
/// How long a ferryd may take to listen on its socket.
const FERRYD_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// Create N hosts (namespaces joined by the bridge ferrybr0), each running its own ferryd.
    Up(UpOptions),
    /// End every process `up` started and delete the links and /run/ferry-hosts (idempotent).
    Down,
    /// (Re)start host N's ferryd (the binary `up` used, or FERRYD_BIN); the environment (e.g.
    /// FERRY_FAULT) is passed on to it.
    StartFerryd {
        /// The host number (1 is h1).
        n: u32,
    },
    /// Kill host N's ferryd (SIGKILL); the host and its other processes stay.
    KillFerryd {
        /// The host number (1 is h1).
        n: u32,
    },
    /// Cut host N's link (its veth's bridge side down): it reaches nobody, nobody reaches it;
    /// its processes keep running.
    CutLink {
        /// The host number (1 is h1).
        n: u32,
    },
    /// Restore host N's link after `cut-link`.
    RestoreLink {
        /// The host number (1 is h1).
        n: u32,
    },
    /// Kill host N whole: its init (SIGKILL), which ends every process in its namespaces, and
    /// its link. Its directory (config, state, log) stays for `start-host`.
    KillHost {
        /// The host number (1 is h1).
        n: u32,
    },
    /// Bring a killed host N back: new namespaces and link at the same address, and (when it
    /// had one) a fresh ferryd with the same name, certificate and configuration.
    StartHost {
        /// The host number (1 is h1).
        n: u32,
    },
}

#[derive(Debug, Args)]
pub struct UpOptions {
    /// Number of hosts (h1 = 10.77.0.1, h2 = 10.77.0.2, ...).
    pub count: u32,
    /// Only the namespaces and the network: no certificates, configs or ferryd.
    #[arg(long)]
    pub no_agents: bool,
    /// Do not build the binaries first (use what is in the target directory).
    #[arg(long)]
    pub no_build: bool,
    /// Use (and build) the release binaries.
    #[arg(long)]
    pub release: bool,
}

/// Options of the hidden `xtask host-init`.
#[derive(Debug, Args)]
pub struct InitOptions {
    /// The host's name (its hostname).
    #[arg(long)]
    pub name: String,
    /// The host's directory under /run/ferry-hosts.
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn run(cmd: &HostsCmd) -> Result<()> {
    util::require_root("`hosts`")?;
    match cmd {
        HostsCmd::Up(options) => up(options),
        HostsCmd::Down => down(),
        HostsCmd::StartFerryd { n } => {
            let pid = start_ferryd(*n, &recorded_ferryd())?;
            println!("h{n}: ferryd pid {pid}");
            Ok(())
        }
        HostsCmd::KillFerryd { n } => kill_ferryd(*n),
        HostsCmd::CutLink { n } => link(*n, "down"),
        HostsCmd::RestoreLink { n } => link(*n, "up"),
        HostsCmd::KillHost { n } => kill_host(*n),
        HostsCmd::StartHost { n } => {
            let pid = restart_host(*n)?;
            match pid {
                Some(pid) => println!("h{n}: back, ferryd pid {pid}"),
                None => println!("h{n}: back (no agent)"),
            }
            Ok(())
        }
    }
}

/// The ferryd binary `up` used, unless FERRYD_BIN says otherwise.
fn recorded_ferryd() -> PathBuf {
    match (
        std::env::var_os("FERRYD_BIN"),
        fs::read_to_string(root().join("ferryd-bin")),
    ) {
        (None, Ok(path)) => PathBuf::from(path.trim_end()),
        _ => ferryd_bin(false),
    }
}

/// `ip link set ferryhN STATE` for a host that is up.
fn link(n: u32, state: &str) -> Result<()> {
    let dir = host_dir(n);
    if !dir.join("init.pid").exists() {
        bail!(
            "there is no host h{n} (no {})",
            dir.join("init.pid").display()
        );
    }
    ip(&["link", "set", &veth(n), state])?;
    println!("h{n}: link {state}");
    Ok(())
}

/// SIGKILLs host N's init (the kernel then kills everything in its PID namespace), waits
/// until it and its ferryd are gone, and deletes its link.
fn kill_host(n: u32) -> Result<()> {
    let dir = host_dir(n);
    let init = read_pid(&dir, "init").with_context(|| format!("is host h{n} up?"))?;
    let ferryd = read_pid(&dir, "ferryd").ok();
    if !kill_recorded(&dir, "init") {
        bail!("h{n}'s init (pid {init}) is not running: the host is already down");
    }
    let mut pids = vec![init];
    pids.extend(ferryd);
    wait_dead(&pids, Duration::from_secs(10))?;
    // The root side; its peer went with the namespace, or goes with it now.
    if Path::new("/sys/class/net").join(veth(n)).exists() {
        let _ = ip(&["link", "del", &veth(n)]);
    }
    // The host is gone: its pid files must not name anything any more.
    for name in ["init", "ferryd"] {
        let _ = fs::remove_file(dir.join(format!("{name}.pid")));
    }
    println!("h{n}: killed (init pid {init})");
    Ok(())
}

/// Starts host N again after `kill-host`, and its ferryd when it has a configuration.
fn restart_host(n: u32) -> Result<Option<i32>> {
    let dir = host_dir(n);
    if !dir.is_dir() {
        bail!("there is no host h{n} to bring back (no {})", dir.display());
    }
    if let Ok(pid) = read_pid(&dir, "init")
        && is_recorded_alive(&dir, "init", pid)
    {
        bail!("h{n} is running (init pid {pid}): kill it first");
    }
    start_host(n).with_context(|| format!("start host h{n}"))?;
    if !dir.join("config.toml").exists() {
        return Ok(None);
    }
    start_ferryd(n, &recorded_ferryd()).map(Some)
}

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

pub fn host_dir(n: u32) -> PathBuf {
    root().join(format!("h{n}"))
}

fn veth(n: u32) -> String {
    format!("{VETH_PREFIX}{n}")
}

/// `FERRYD_BIN`, else `<target>/<profile>/ferryd`.
fn ferryd_bin(release: bool) -> PathBuf {
    bin_path("FERRYD_BIN", "ferryd", release)
}

/// `FERRY_BIN`, else `<target>/<profile>/ferry`.
fn ferry_bin(release: bool) -> PathBuf {
    bin_path("FERRY_BIN", "ferry", release)
}

fn bin_path(var: &str, name: &str, release: bool) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => util::target_dir()
            .join(if release { "release" } else { "debug" })
            .join(name),
    }
}

pub fn up(options: &UpOptions) -> Result<()> {
    let n = options.count;
    if n == 0 || n > MAX_HOSTS {
        bail!("the number of hosts must be between 1 and {MAX_HOSTS}, not {n}");
    }
    util::require_tools(&["ip", "nsenter"])?;
    if root().exists() || Path::new("/sys/class/net").join(BRIDGE).exists() {
        bail!(
            "test hosts are already up ({ROOT} or the bridge {BRIDGE} exists): run `cargo xtask hosts down` first"
        );
    }
    if !options.no_agents && !options.no_build {
        let mut build = util::cargo();
        build.args([
            "build",
            "--quiet",
            "--workspace",
            "--bins",
            "--exclude",
            "xtask",
        ]);
        if options.release {
            build.arg("--release");
        }
        util::run(&mut build)?;
        util::link_migrate(if options.release { "release" } else { "debug" })?;
    }
    match up_inner(options) {
        Ok(()) => Ok(()),
        Err(err) => {
            if let Err(cleanup) = down() {
                eprintln!("warning: cleaning up after the failed `hosts up`: {cleanup:#}");
            }
            Err(err)
        }
    }
}

fn up_inner(options: &UpOptions) -> Result<()> {
    let n = options.count;
    fs::create_dir_all(root()).with_context(|| format!("create {ROOT}"))?;
    for dir in [SOCKET_DIR, STATE_DIR, PRIVATE_DIR] {
        if !Path::new(dir).exists() {
            fs::create_dir_all(dir).with_context(|| format!("create the mount point {dir}"))?;
            append(&root().join("created-dirs"), &format!("{dir}\n"))?;
        }
    }
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["link", "set", BRIDGE, "up"])?;

    for i in 1..=n {
        start_host(i).with_context(|| format!("start host h{i}"))?;
    }
    if options.no_agents {
        for i in 1..=n {
            println!(
                "h{i}: {SUBNET}.{i}, init pid {}",
                read_pid(&host_dir(i), "init")?
            );
        }
        return Ok(());
    }

    let ferry = ferry_bin(options.release);
    let ferryd = ferryd_bin(options.release);
    for bin in [&ferry, &ferryd] {
        if !bin.is_file() {
            bail!(
                "{} is missing: build it (`cargo build --workspace --bins`) or drop --no-build",
                bin.display()
            );
        }
    }
    fs::write(root().join("ferryd-bin"), format!("{}\n", ferryd.display()))
        .context("record the ferryd binary")?;
    make_certificates(&ferry, n)?;
    for i in 1..=n {
        fs::write(host_dir(i).join("config.toml"), config(i, n))
            .with_context(|| format!("write h{i}'s config"))?;
    }
    for i in 1..=n {
        let pid = start_ferryd(i, &ferryd)?;
        println!(
            "h{i}: {SUBNET}.{i}:{PEER_PORT}, init pid {}, ferryd pid {pid}, socket {}",
            read_pid(&host_dir(i), "init")?,
            host_dir(i).join("ferryd.sock").display()
        );
    }
    Ok(())
}

/// Starts host N's init (new namespaces, private mounts, hostname, `lo` up) and wires its veth.
fn start_host(n: u32) -> Result<()> {
    let dir = host_dir(n);
    fs::create_dir_all(dir.join("state")).with_context(|| format!("create {}", dir.display()))?;
    let exe = std::env::current_exe().context("find the xtask executable")?;
    let out = Command::new(&exe)
        .arg("host-init")
        .arg("--name")
        .arg(format!("h{n}"))
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {} host-init", exe.display()))?;
    if !out.status.success() {
        bail!(
            "host-init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = stdout
        .trim()
        .parse()
        .with_context(|| format!("host-init printed {stdout:?}, not a PID"))?;
    record_pid(&dir, "init", pid)?;

    let (outside, inside) = (veth(n), format!("{}p", veth(n)));
    ip(&[
        "link", "add", &outside, "type", "veth", "peer", "name", &inside,
    ])?;
    ip(&["link", "set", &inside, "netns", &pid.to_string()])?;
    ip(&["link", "set", &outside, "master", BRIDGE])?;
    ip(&["link", "set", &outside, "up"])?;
    let addr = format!("{SUBNET}.{n}/24");
    for args in [
        &["link", "set", &inside, "name", "eth0"][..],
        &["addr", "add", &addr, "dev", "eth0"],
        &["link", "set", "eth0", "up"],
    ] {
        util::run(
            Command::new("nsenter")
                .arg("--target")
                .arg(pid.to_string())
                .args(["--net", "--", "ip"])
                .args(args),
        )?;
    }
    Ok(())
}

/// `ferry ca init` and one `ferry ca issue hN` per host into /run/ferry-hosts/tls.
fn make_certificates(ferry: &Path, n: u32) -> Result<()> {
    let tls = root().join("tls");
    fs::create_dir_all(&tls).with_context(|| format!("create {}", tls.display()))?;
    let ca = |args: &[&str]| -> Result<()> {
        let out = Command::new(ferry)
            .arg("ca")
            .args(args)
            .arg("--dir")
            .arg(&tls)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", ferry.display()))?;
        if !out.status.success() {
            bail!(
                "`{} ca {}` failed ({}); the hosts' certificates come from `ferry ca`, so it must \
                 work first:\n{}",
                ferry.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    ca(&["init"])?;
    for i in 1..=n {
        ca(&["issue", &format!("h{i}")])?;
    }
    Ok(())
}

/// Host `i`'s config.toml among `n` hosts.
fn config(i: u32, n: u32) -> String {
    let dir = host_dir(i);
    let mut text = format!(
        "name = \"h{i}\"\nlisten = \"{SUBNET}.{i}:{PEER_PORT}\"\nsocket = \"{}\"\ntls_dir = \"{ROOT}/tls\"\n\
         web = \"{SUBNET}.{i}:{WEB_PORT}\"\n\n[peers]\n",
        dir.join("ferryd.sock").display()
    );
    for j in (1..=n).filter(|&j| j != i) {
        let _ = writeln!(text, "h{j} = \"{SUBNET}.{j}:{PEER_PORT}\"");
    }
    text
}

/// Starts ferryd inside host N (its environment is ours), records its PID and waits until it
/// accepts connections on its socket.
fn start_ferryd(n: u32, ferryd: &Path) -> Result<i32> {
    let dir = host_dir(n);
    let init = read_pid(&dir, "init").with_context(|| format!("is host h{n} up?"))?;
    if let Ok(pid) = read_pid(&dir, "ferryd")
        && is_recorded_alive(&dir, "ferryd", pid)
    {
        bail!("h{n}'s ferryd is already running (pid {pid})");
    }
    let socket = dir.join("ferryd.sock");
    let _ = fs::remove_file(&socket);
    let log_path = dir.join("ferryd.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut launcher = Command::new("nsenter")
        .arg("--target")
        .arg(init.to_string())
        .args(["--net", "--pid", "--mount", "--uts", "--"])
        .arg(ferryd)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("FERRY_STATE_DIR", STATE_DIR)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicate the log fd")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start nsenter for ferryd")?;
    // nsenter stays ferryd's parent outside the host and ends with it; it is left running when
    // we return, and whoever adopts it (a subreaper, or init) reaps it.
    let launcher_pid = i32::try_from(launcher.id()).context("pid out of range")?;
    fs::write(dir.join("ferryd-launcher.pid"), format!("{launcher_pid}\n"))
        .context("record the launcher pid")?;

    let start = Instant::now();
    let mut pid = None;
    loop {
        if pid.is_none()
            && let Some(child) = only_child(launcher_pid)
        {
            record_pid(&dir, "ferryd", child)?;
            pid = Some(child);
        }
        if pid.is_some() && UnixStream::connect(&socket).is_ok() {
            break;
        }
        if let Some(status) = launcher.try_wait().context("wait for nsenter")? {
            bail!(
                "ferryd on h{n} exited ({status}) before listening on {} (is ferryd still a \
                 placeholder?); its log {}:\n{}",
                socket.display(),
                log_path.display(),
                log_tail(&log_path)
            );
        }
        if start.elapsed() > FERRYD_TIMEOUT {
            bail!(
                "ferryd on h{n} did not listen on {} within {FERRYD_TIMEOUT:?}; its log {}:\n{}",
                socket.display(),
                log_path.display(),
                log_tail(&log_path)
            );
        }
        sleep(Duration::from_millis(20));
    }
    pid.context("ferryd's pid")
}

fn kill_ferryd(n: u32) -> Result<()> {
    let dir = host_dir(n);
    let pid = read_pid(&dir, "ferryd").with_context(|| format!("h{n} has no recorded ferryd"))?;
    if kill_recorded(&dir, "ferryd") {
        wait_dead(&[pid], Duration::from_secs(10))?;
    }
    Ok(())
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The single child of `pid` (e.g. the program nsenter forked), once there is one.
pub fn only_child(pid: i32) -> Option<i32> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Writes `NAME.start` (the start time, to recognise the process later) and then `NAME.pid`.
fn record_pid(dir: &Path, name: &str, pid: i32) -> Result<()> {
    let start = start_time(pid).with_context(|| format!("{name} (pid {pid}) is gone"))?;
    fs::write(dir.join(format!("{name}.start")), format!("{start}\n"))
        .with_context(|| format!("record {name}'s start time"))?;
    fs::write(dir.join(format!("{name}.pid")), format!("{pid}\n"))
        .with_context(|| format!("record {name}'s pid"))
}

pub fn read_pid(dir: &Path, name: &str) -> Result<i32> {
    let path = dir.join(format!("{name}.pid"));
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a pid", path.display()))
}

/// Field 22 of /proc/PID/stat (start time in clock ticks after boot), for a live process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// True when the process recorded as `NAME` in `dir` is `pid` and still the same process.
fn is_recorded_alive(dir: &Path, name: &str, pid: i32) -> bool {
    let recorded = fs::read_to_string(dir.join(format!("{name}.start")))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    recorded.is_some() && start_time(pid) == recorded
}

/// SIGKILLs the process recorded as `NAME` in `dir` if it is still the one recorded. Returns
/// whether it sent the signal.
fn kill_recorded(dir: &Path, name: &str) -> bool {
    let Ok(pid) = read_pid(dir, name) else {
        return false;
    };
    if pid <= 1 || !is_recorded_alive(dir, name, pid) {
        return false;
    }
    kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
}

/// Waits until none of `pids` is alive (gone, or a zombie left to its parent), reaping those
/// that are our children.
fn wait_dead(pids: &[i32], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&pid| {
                if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
                    && status != WaitStatus::StillAlive
                {
                    return false;
                }
                start_time(pid).is_some()
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("processes {left:?} did not end within {timeout:?} after SIGKILL");
        }
        sleep(Duration::from_millis(10));
    }
}

pub fn down() -> Result<()> {
    let mut problems = Vec::new();
    // Processes first: ferryd, then each host's init, which takes the host's processes along.
    let mut host_dirs: Vec<PathBuf> = fs::read_dir(ROOT)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('h'))
                })
                .collect()
        })
        .unwrap_or_default();
    host_dirs.sort();
    let mut killed = Vec::new();
    for dir in &host_dirs {
        for name in ["ferryd", "init"] {
            if kill_recorded(dir, name)
                && let Ok(pid) = read_pid(dir, name)
            {
                killed.push(pid);
            }
        }
    }
    if let Err(err) = wait_dead(&killed, Duration::from_secs(10)) {
        problems.push(format!("{err:#}"));
    }

    // The cgroups the hosts' agents made for managed processes (`ferry/ID@hN`), once their
    // processes are gone, and `ferry/` when nothing else is in it.
    remove_host_cgroups();

    // Links: the root-side veths (their peers go with them, or with the host's namespace) and
    // the bridge.
    let mut links: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| {
                    name.strip_prefix(VETH_PREFIX).is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    links.push(BRIDGE.to_owned());
    for link in &links {
        if Path::new("/sys/class/net").join(link).exists()
            && let Err(err) = ip(&["link", "del", link])
            && Path::new("/sys/class/net").join(link).exists()
        {
            problems.push(format!("{err:#}"));
        }
    }

    // The mount points `up` had to create (only if still empty), then our directory.
    if let Ok(created) = fs::read_to_string(root().join("created-dirs")) {
        for dir in created.lines().filter(|l| !l.is_empty()) {
            let _ = fs::remove_dir(dir);
        }
    }
    if let Err(err) = fs::remove_dir_all(ROOT)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("remove {ROOT}: {err}"));
    }
    if !problems.is_empty() {
        bail!("`hosts down` left things behind:\n{}", problems.join("\n"));
    }
    println!("hosts down");
    Ok(())
}

/// Removes the cgroups named `ferry/ID@hN` (a test host's) in the cpu and memory hierarchies
/// of cgroup v1 and in cgroup v2, then `ferry/` where it is left empty. One that still holds
/// a process stays (and so does its `ferry/`).
fn remove_host_cgroups() {
    let test_host = |name: &str| {
        name.rsplit_once("@h")
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    for root in [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let parent = Path::new(root).join("ferry");
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() && e.file_name().to_str().is_some_and(test_host) {
                let _ = fs::remove_dir(e.path());
            }
        }
        let _ = fs::remove_dir(&parent);
    }
}

/// Runs `ip ARGS` in our network namespace.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}

/// `xtask host-init --name hN --dir DIR`: makes the namespaces, forks the host's PID 1, waits
/// until it has set the host up, prints its PID (as seen from here) and exits.
pub fn host_init(options: &InitOptions) -> Result<()> {
    util::require_root("`host-init`")?;
    let threads = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_default();
    if threads != "1" {
        bail!("host-init must fork while single-threaded, but has {threads} threads");
    }
    let log = File::create(options.dir.join("init.log"))
        .with_context(|| format!("create {}/init.log", options.dir.display()))?;
    let (ready_r, ready_w) = pipe().context("pipe")?;
    unshare(
        CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWPID,
    )
    .context("unshare the network, mount, UTS and PID namespaces")?;
    // Nothing mounted in the host may propagate back to the machine.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make the host's mounts private")?;

    // SAFETY: we checked above that this process has a single thread, so the child starts in a
    // consistent state (no lock held by another thread).
    match unsafe { fork() }.context("fork the host's init")? {
        ForkResult::Child => {
            drop(ready_r);
            let result = setup_host(options, &log);
            let mut ready = File::from(ready_w);
            match result {
                Ok(()) => {
                    let _ = ready.write_all(b"ok");
                    drop(ready);
                    reap_forever()
                }
                Err(err) => {
                    let _ = ready.write_all(format!("{err:#}").as_bytes());
                    std::process::exit(1)
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            let mut answer = String::new();
            File::from(ready_r)
                .read_to_string(&mut answer)
                .context("read the init's answer")?;
            if answer != "ok" {
                let _ = waitpid(child, None);
                bail!("setting up {} failed: {answer}", options.name);
            }
            println!("{child}");
            Ok(())
        }
    }
}

/// In the host's PID 1: its own stdio, session, /proc, hostname, private mounts, `lo` up.
fn setup_host(options: &InitOptions, log: &File) -> Result<()> {
    // Our stdout is `up`'s pipe: let go of it at once, or `up` waits for us forever.
    let null = File::open("/dev/null").context("open /dev/null")?;
    nix::unistd::dup2_stdin(null.as_fd()).context("stdin")?;
    nix::unistd::dup2_stdout(log.as_fd()).context("stdout")?;
    nix::unistd::dup2_stderr(log.as_fd()).context("stderr")?;
    setsid().context("setsid")?;
    // SIGCHLD stays blocked: the reaping loop takes it with sigwait.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None).context("block SIGCHLD")?;

    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        nodev | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("mount the host's /proc")?;
    sethostname(&options.name).context("set the hostname")?;
    mount(
        Some("tmpfs"),
        SOCKET_DIR,
        Some("tmpfs"),
        nodev,
        Some("mode=0755"),
    )
    .with_context(|| format!("mount a tmpfs on {SOCKET_DIR}"))?;
    std::os::unix::fs::symlink(
        options.dir.join("ferryd.sock"),
        Path::new(SOCKET_DIR).join("ferryd.sock"),
    )
    .context("link the default socket path to the host's socket")?;
    mount(
        Some(&options.dir.join("state")),
        STATE_DIR,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind the host's records directory on {STATE_DIR}"))?;
    mount(
        Some("tmpfs"),
        PRIVATE_DIR,
        Some("tmpfs"),
        nodev,
        Some("mode=0755"),
    )
    .with_context(|| format!("mount a tmpfs on {PRIVATE_DIR}"))?;
    // ferryd logs to journald when it finds its socket, and the machine's is reachable through
    // the shared /run: hide it, so that each host's ferryd logs to its own ferryd.log.
    if Path::new(JOURNAL_DIR).is_dir() {
        mount(
            Some("tmpfs"),
            JOURNAL_DIR,
            Some("tmpfs"),
            nodev,
            Some("mode=0755"),
        )
        .with_context(|| format!("hide the machine's journald ({JOURNAL_DIR})"))?;
    }
    util::run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    Ok(())
}

/// PID 1's whole job: reap every child, forever.
fn reap_forever() -> ! {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if chld.wait().is_err() {
            sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_the_other_hosts() {
        let text = config(2, 3);
        assert!(text.contains("name = \"h2\""));
        assert!(text.contains("listen = \"10.77.0.2:7411\""));
        assert!(text.contains("socket = \"/run/ferry-hosts/h2/ferryd.sock\""));
        assert!(text.contains("tls_dir = \"/run/ferry-hosts/tls\""));
        assert!(text.contains("web = \"10.77.0.2:7443\""));
        assert!(text.contains("h1 = \"10.77.0.1:7411\""));
        assert!(text.contains("h3 = \"10.77.0.3:7411\""));
        assert!(!text.contains("h2 = "));
    }
}
