//! The offload client: `ferry run`, `offload`, `ps`, `output`, `kill`, `limits`
//! (docs/offload.md). Each asks the local agent over its Unix socket.
//!
//! `ferry run CMD` (attached) starts CMD itself, as its child, so CMD has the caller's
//! directory, environment and terminal exactly, registers it with the agent (which checks it
//! is the caller's) and waits for it, ending as it ended. After a move the child is the stub,
//! which keeps the terminal and ends as the process did. `--detach` asks the agent to start
//! CMD instead (as the caller's uid and gid), which keeps its output in a bounded file.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use ferry_agent::web::table::row;
use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::{
    ExitedRequest, KillRequest, Limits, LimitsRequest, ListManagedRequest, OffloadRequest,
    OutputRequest, RegisterRequest, SpawnRequest,
};

use crate::migrate::{DEFAULT_SOCKET, connect, runtime};

/// Where to move a job: `--on HOST` / `--to HOST`, or `--auto`.
#[derive(Debug, clap::Args)]
pub struct Place {
    /// Move it to this peer of the agent at once.
    #[arg(
        long,
        visible_alias = "to",
        value_name = "HOST",
        conflicts_with = "auto"
    )]
    pub on: Option<String>,
    /// Move it to the peer with the most free CPU and memory for its limits.
    #[arg(long)]
    pub auto: bool,
}

/// Periodic checkpoints: `--checkpoint-every DUR [--replicas K]` (docs/cluster.md
/// "Checkpoints and replicas").
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Checkpoints {
    /// Checkpoint the job while it runs, every DUR (e.g. 1s, 500ms, 2m), and keep the newest
    /// checkpoint, sealed, on other members of the cluster.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_ms)]
    pub checkpoint_every: Option<u64>,
    /// How many other members keep each checkpoint.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "checkpoint_every", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: u32,
}

impl Checkpoints {
    fn every_ms(&self) -> u64 {
        self.checkpoint_every.unwrap_or(0)
    }
}

/// `--checkpoint-every DUR`: a number with `ms`, `s`, `m` or `h` (seconds without one).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 1s, 500ms, 2m)"))?;
    let ms = match unit {
        "ms" => v,
        "s" => v * 1e3,
        "m" => v * 60e3,
        "h" => v * 3600e3,
        _ => return Err(format!("{s:?}: the unit is ms, s, m or h")),
    };
    if !(ms.is_finite() && (100.0..=7.0 * 86_400e3).contains(&ms)) {
        return Err(format!("{s:?}: a checkpoint period is between 100ms and 7 days"));
    }
    Ok(ms.round() as u64)
}

/// `ferry run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub place: Place,
    #[command(flatten)]
    pub ckpt: Checkpoints,
    /// CPU limit in CPUs (e.g. 0.5, 2).
    #[arg(long, value_name = "N", value_parser = parse_cpu)]
    pub cpu: Option<u64>,
    /// Memory limit (bytes, or with K, M, G, T).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem: Option<u64>,
    /// Do not wait: print the job's id alone on the first line, keep its output on the host
    /// (`ferry output ID`).
    #[arg(long)]
    pub detach: bool,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `ferry offload`.
#[derive(Debug, clap::Args)]
pub struct OffloadArgs {
    /// A PID of yours, or the id of a managed process.
    pub what: String,
    #[command(flatten)]
    pub place: Place,
    #[command(flatten)]
    pub ckpt: Checkpoints,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// `ferry ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// A JSON array of objects instead of the table.
    #[arg(long)]
    pub json: bool,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// `ferry output`.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// The job's id.
    pub id: String,
    /// Keep printing what it writes until it ends.
    #[arg(long, short)]
    pub follow: bool,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// `ferry kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The job's id.
    pub id: String,
    /// The signal, by name (TERM, SIGKILL) or number.
    #[arg(long, short, default_value = "TERM", value_parser = parse_signal)]
    pub signal: i32,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// `ferry limits`.
#[derive(Debug, clap::Args)]
pub struct LimitsArgs {
    /// The job's id.
    pub id: String,
    /// CPU limit in CPUs (e.g. 0.5, 2).
    #[arg(long, value_name = "N", value_parser = parse_cpu)]
    pub cpu: Option<u64>,
    /// Memory limit (bytes, or with K, M, G, T).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem: Option<u64>,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// `--cpu N`: CPUs, as thousandths.
pub fn parse_cpu(s: &str) -> Result<u64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of CPUs (e.g. 0.5, 2)"))?;
    if !(v.is_finite() && (0.01..=4096.0).contains(&v)) {
        return Err(format!("{s:?}: a CPU limit is between 0.01 and 4096 CPUs"));
    }
    Ok((v * 1000.0).round() as u64)
}

/// `--mem SIZE`: bytes, or with a K, M, G or T suffix (powers of 1024; a trailing `B` or
/// `iB` is allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512M, 2G, 1048576)"))?;
    let bytes = v * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= (1u64 << 20) as f64 && bytes < 2f64.powi(62)) {
        return Err(format!("{s:?}: a memory limit is at least 1M"));
    }
    Ok(bytes as u64)
}

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| format!("{n} is not a signal number"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| format!("{s:?} is not a signal name (e.g. TERM, KILL, INT)"))
}

fn limits(cpu: Option<u64>, mem: Option<u64>) -> Limits {
    Limits {
        cpu_millis: cpu.unwrap_or(0),
        mem_bytes: mem.unwrap_or(0),
    }
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// Moves managed process `id` as `place` says; prints one line on stderr when done.
async fn offload(
    socket: &std::path::Path,
    id: &str,
    place: &Place,
    ckpt: &Checkpoints,
) -> Result<()> {
    let mut client = connect(socket).await?;
    let mut stream = client
        .offload(OffloadRequest {
            id: id.to_string(),
            to: place.on.clone().unwrap_or_default(),
            auto: place.auto,
            compress: String::new(),
            checkpoint_every_ms: ckpt.every_ms(),
            replicas: ckpt.replicas,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    loop {
        match stream.message().await.map_err(status_err)? {
            Some(ev) => {
                if let Some(Event::Done(s)) = ev.event {
                    for w in &s.warnings {
                        eprintln!("ferry: warning: {w}");
                    }
                    eprintln!(
                        "ferry: {id} moved (migration {}) as pid {}, frozen {:.3} s",
                        s.migration_id,
                        s.remote_pid,
                        s.frozen_us as f64 / 1e6
                    );
                    return Ok(());
                }
            }
            None => bail!("the agent ended the move of {id} without a summary"),
        }
    }
}

/// Runs `ferry run`; returns only when it fails to start the job. An attached job's end is
/// ours: exits with its code or dies by its signal.
pub fn run(args: RunArgs) -> Result<()> {
    if args.detach {
        return runtime()?.block_on(run_detached(args));
    }
    let (program, rest) = args.command.split_first().context("no command to run")?;
    let mut child = Command::new(program)
        .args(rest)
        .spawn()
        .with_context(|| format!("start {program:?}"))?;
    let pid = i32::try_from(child.id()).context("pid")?;
    // Keyboard signals go to the whole foreground group: the job (or its stub, which passes
    // them on) decides, and we end as it ends.
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGQUIT] {
        let _ = ferry_agent::sys::set_ignore(sig);
    }
    let rt = runtime()?;
    let id = rt.block_on(async {
        let mut client = connect(&args.socket).await?;
        let p = client
            .register(RegisterRequest {
                pid,
                limits: Some(limits(args.cpu, args.mem)),
                attached: true,
                checkpoint_every_ms: args.ckpt.every_ms(),
                replicas: args.ckpt.replicas,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        eprintln!("ferry: job {} (pid {pid})", p.id);
        if (args.place.on.is_some() || args.place.auto)
            && let Err(e) = offload(&args.socket, &p.id, &args.place, &args.ckpt).await
        {
            eprintln!("ferry: {} not moved, it goes on here: {e:#}", p.id);
        }
        anyhow::Ok(p.id)
    });
    let id = match id {
        Ok(id) => Some(id),
        Err(e) => {
            eprintln!("ferry: warning: the job runs, but unmanaged: {e:#}");
            None
        }
    };
    let status = child.wait().context("wait for the job")?;
    use std::os::unix::process::ExitStatusExt;
    if let Some(id) = id {
        let report = ExitedRequest {
            id: id.clone(),
            code: status.code().unwrap_or(0),
            signal: status.signal().unwrap_or(0),
        };
        let _ = rt.block_on(async {
            let mut client = connect(&args.socket).await?;
            client.exited(report).await.map_err(status_err)?;
            anyhow::Ok(())
        });
    }
    if let Some(sig) = status.signal() {
        let _ = std::io::stdout().flush();
        if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
            let _ = ferry_agent::sys::set_default_action(sig);
            let _ = nix::sys::signal::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(status.code().unwrap_or(1));
}

async fn run_detached(args: RunArgs) -> Result<()> {
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        match (k.to_str(), v.to_str()) {
            (Some(k), Some(v)) => env.push(format!("{k}={v}")),
            _ => bail!(
                "the environment variable {} is not UTF-8: a detached job cannot be given it",
                k.to_string_lossy()
            ),
        }
    }
    let cwd = std::env::current_dir().context("the current directory")?;
    let cwd = cwd
        .to_str()
        .context("the current directory is not UTF-8")?
        .to_string();
    let mut client = connect(&args.socket).await?;
    let p = client
        .spawn(SpawnRequest {
            argv: args.command.clone(),
            env,
            cwd,
            limits: Some(limits(args.cpu, args.mem)),
            checkpoint_every_ms: args.ckpt.every_ms(),
            replicas: args.ckpt.replicas,
        })
        .await
        .map_err(status_err)?
        .into_inner();
    crate::write_stdout(&format!("{}\n", p.id))?;
    if args.place.on.is_some() || args.place.auto {
        offload(&args.socket, &p.id, &args.place, &args.ckpt)
            .await
            .with_context(|| format!("{} not moved; it runs here", p.id))?;
    }
    Ok(())
}

/// `ferry offload PID|ID`.
pub fn offload_cmd(args: OffloadArgs) -> Result<()> {
    if !args.place.auto && args.place.on.is_none() {
        bail!("say where: --to HOST or --auto");
    }
    runtime()?.block_on(async {
        let id = if let Ok(pid) = args.what.parse::<i32>() {
            let mut client = connect(&args.socket).await?;
            let p = client
                .register(RegisterRequest {
                    pid,
                    limits: None,
                    attached: false,
                    checkpoint_every_ms: args.ckpt.every_ms(),
                    replicas: args.ckpt.replicas,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            eprintln!("ferry: pid {pid} is job {}", p.id);
            p.id
        } else {
            args.what.clone()
        };
        offload(&args.socket, &id, &args.place, &args.ckpt).await?;
        crate::write_stdout(&format!("{id}\n"))
    })
}

/// `ferry ps`.
pub fn ps(args: PsArgs) -> Result<()> {
    let reply = runtime()?.block_on(async {
        let mut client = connect(&args.socket).await?;
        anyhow::Ok(
            client
                .list_managed(ListManagedRequest {})
                .await
                .map_err(status_err)?
                .into_inner(),
        )
    })?;
    if args.json {
        let mut out: Vec<serde_json::Value> = reply
            .processes
            .iter()
            .map(|p| {
                let l = p.limits.unwrap_or_default();
                let running = ferry_agent::web::table::is_running(p);
                serde_json::json!({
                    "id": p.id,
                    "pid": (p.pid > 0).then_some(p.pid),
                    "host": p.host,
                    "status": p.status,
                    "max_cpu": (l.cpu_millis > 0).then(|| l.cpu_millis as f64 / 1000.0),
                    "curr_cpu": running.then_some(p.curr_cpu),
                    "max_mem": (l.mem_bytes > 0).then_some(l.mem_bytes),
                    "curr_mem": running.then_some(p.curr_mem),
                    "uptime_s": p.uptime_s,
                    "command": p.command,
                })
            })
            .collect();
        for u in &reply.unreachable {
            let (host, why) = u.split_once(": ").unwrap_or((u, ""));
            out.push(serde_json::json!({
                "id": null, "pid": null, "host": host, "status": format!("unreachable: {why}"),
                "max_cpu": null, "curr_cpu": null, "max_mem": null, "curr_mem": null,
                "uptime_s": null, "command": null,
            }));
        }
        return crate::write_stdout(&format!("{}\n", serde_json::Value::Array(out)));
    }
    let head = ferry_agent::web::table::HEAD.map(String::from);
    let mut rows = vec![head];
    rows.extend(reply.processes.iter().map(row));
    let mut widths = [0usize; 10];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i == 9 {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    for u in &reply.unreachable {
        text.push_str(&format!(
            "(host {u}: unreachable, its processes are not shown)\n"
        ));
    }
    crate::write_stdout(&text)
}

/// `ferry output`.
pub fn output(args: OutputArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.socket).await?;
        let mut stream = client
            .output(OutputRequest {
                id: args.id.clone(),
                follow: args.follow,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await.map_err(status_err)? {
            if !chunk.note.is_empty() {
                eprintln!("ferry: {}: {}", args.id, chunk.note);
            }
            match out.write_all(&chunk.data).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                other => other.context("write to stdout")?,
            }
        }
        Ok(())
    })
}

/// `ferry kill`.
pub fn kill(args: KillArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.socket).await?;
        client
            .kill(KillRequest {
                id: args.id.clone(),
                signal: args.signal,
            })
            .await
            .map_err(status_err)?;
        Ok(())
    })
}

/// `ferry limits`.
pub fn limits_cmd(args: LimitsArgs) -> Result<()> {
    if args.cpu.is_none() && args.mem.is_none() {
        bail!("no limit to set: give --cpu N and/or --mem SIZE");
    }
    let p = runtime()?.block_on(async {
        let mut client = connect(&args.socket).await?;
        anyhow::Ok(
            client
                .limits(LimitsRequest {
                    id: args.id.clone(),
                    limits: Some(limits(args.cpu, args.mem)),
                })
                .await
                .map_err(status_err)?
                .into_inner(),
        )
    })?;
    let r = row(&p);
    crate::write_stdout(&format!(
        "{}: max cpu {}, max mem {} on {}\n",
        p.id, r[4], r[6], p.host
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "12Q", "-1G", "100K", "M", "1e400"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(bad), "{bad:?}: {err}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        for bad in ["0", "-1", "x", "NaN", "0.001"] {
            parse_cpu(bad).unwrap_err();
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("2"), Ok(libc::SIGINT));
        assert!(parse_signal("FOO").unwrap_err().contains("FOO"));
        parse_signal("99").unwrap_err();
    }
}
