//! `ferry migrate PID --to HOST` and `ferry migrations`: ask the local agent over its Unix
//! socket.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_proto::v1::agent_client::AgentClient;
use ferry_proto::v1::migrate_event::Event;
use ferry_proto::v1::{ListMigrationsRequest, MigrateRequest, MigrationRecord};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::{Channel, Endpoint};

/// The agent's socket when neither `--socket` nor `FERRY_SOCKET` says otherwise.
pub(crate) const DEFAULT_SOCKET: &str = "/run/ferry/ferryd.sock";

/// `ferry migrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process to move.
    pub pid: i32,
    /// The destination: a peer name of the agent's configuration.
    #[arg(long, value_name = "HOST")]
    pub to: String,
    /// Page compression on the wire; `auto` measures the link and picks.
    #[arg(long, default_value = "auto", value_parser = ["auto", "zstd", "lz4", "none"])]
    pub compress: String,
    /// Send files the destination lacks along with the image.
    #[arg(long)]
    pub ship_files: bool,
    /// Connections relayed to the process's listening TCP socket on PORT start with a PROXY
    /// protocol (v1) header naming the client (the process sees 127.0.0.1 otherwise); for
    /// servers that read it. Repeat for several listeners.
    #[arg(long, value_name = "PORT")]
    pub proxy_protocol: Vec<u16>,
    /// Move the process with all its descendants (its workers, its pipeline, its forked
    /// children): every member becomes a stub here, keeping its PID and its place in the
    /// tree, and its descriptors are relayed; the root's parent sees the root's exit status
    /// once the whole tree has ended there. Live like a single process (every member's
    /// writes tracked, the whole tree stopped only for what is left), or stopped and copied
    /// with --stop-and-copy. Without it a process with children is refused.
    #[arg(long)]
    pub tree: bool,
    /// Stop the process for the whole copy instead of migrating it live (live: its memory
    /// is copied while it runs, in rounds, and it stops only for what is left). For a
    /// process that writes its memory faster than the link sends, or to keep it off both
    /// hosts at once.
    #[arg(long, conflicts_with = "lazy")]
    pub stop_and_copy: bool,
    /// Post-copy: the copy starts at once on HOST, its private anonymous memory following
    /// (its faults on a missing page are answered first, the rest is pushed); the downtime
    /// no longer grows with the memory. UNTIL ALL OF IT HAS ARRIVED THE PROCESS DEPENDS ON
    /// BOTH HOSTS: if this host, its agent or the link is lost meanwhile, the process is lost
    /// (the copy is ended, the original too; `ferry migrations` says so). Its sockets and
    /// stdio are relayed only once the memory has arrived. For large memory whose downtime
    /// matters more than that risk.
    #[arg(long, conflicts_with = "tree")]
    pub lazy: bool,
    /// Live migration: the downtime to aim at, in milliseconds. The rounds stop when what is
    /// left would travel within it (or after 8 rounds, or when the process writes as fast as
    /// the link sends: then the rest is stopped and copied, and the summary says so).
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=60000))]
    pub max_downtime: u32,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

/// `ferry migrations`: one line per record. PID is the process on this host (origin: the
/// original, then its stub; destination: the copy), REMOTE the one on the peer (origin: the
/// copy; destination: the original, i.e. the stub).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

pub(crate) async fn connect(socket: &Path) -> Result<AgentClient<Channel>> {
    let path = socket.to_path_buf();
    // The URI is required but unused: every connection goes to the socket.
    let channel = Endpoint::try_from("http://ferryd.local")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .with_context(|| format!("connect to ferryd at {}", socket.display()))?;
    Ok(AgentClient::new(channel))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn mb(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Runs `ferry migrate`.
pub fn run(args: Args) -> Result<()> {
    runtime()?.block_on(migrate(args))
}

async fn migrate(args: Args) -> Result<()> {
    let mut client = connect(&args.socket).await?;
    let req = MigrateRequest {
        pid: args.pid,
        to: args.to.clone(),
        compress: args.compress.clone(),
        ship_files: args.ship_files,
        proxy_protocol: args.proxy_protocol.iter().map(|&p| u32::from(p)).collect(),
        tree: args.tree,
        stop_and_copy: args.stop_and_copy,
        max_downtime_ms: args.max_downtime,
        lazy: args.lazy,
        ..Default::default()
    };
    let mut stream = client
        .migrate(req)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .with_context(|| format!("migrate pid {} to {}", args.pid, args.to))?
        .into_inner();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(0);
        // No bar until the size is known: an empty one reads as done.
        b.set_style(
            ProgressStyle::with_template("{prefix:>9} {spinner} {bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(100));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut id = String::new();
    let mut phase = String::new();
    loop {
        let ev = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                bar.finish_and_clear();
                bail!("ferryd ended the migration without a summary");
            }
            Err(s) => {
                bar.finish_and_clear();
                let which = if id.is_empty() {
                    String::new()
                } else {
                    format!(" (migration {id})")
                };
                // A status ferryd sent has no source; one with a source is the connection
                // breaking (`h2 protocol error`, `transport error`): ferryd died.
                if std::error::Error::source(&s).is_some() {
                    bail!(
                        "migrate pid {} to {}{which}: lost the local ferryd ({}) during the \
                         migration: it stopped or crashed. {} When ferryd runs again, \
                         `ferry migrations` shows how the migration ended.",
                        args.pid,
                        args.to,
                        args.socket.display(),
                        what_is_known(&phase, args.pid, &args.to)
                    );
                }
                bail!(
                    "migrate pid {} to {}{which}: {}",
                    args.pid,
                    args.to,
                    s.message()
                );
            }
        };
        match ev.event {
            Some(Event::Progress(p)) => {
                id = p.migration_id;
                phase.clone_from(&p.phase);
                bar.set_prefix(p.phase);
                if p.total > 0 && bar.length() != Some(p.total) {
                    if bar.length().unwrap_or(0) == 0 {
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                    }
                    bar.set_length(p.total);
                }
                bar.set_position(p.bytes);
                bar.set_message(format!("wire {}", mb(p.wire_bytes)));
            }
            Some(Event::Done(s)) => {
                bar.finish_and_clear();
                for w in &s.warnings {
                    eprintln!("ferry: warning: {w}");
                }
                let ratio = if s.wire_bytes > 0 {
                    s.raw_bytes as f64 / s.wire_bytes as f64
                } else {
                    1.0
                };
                println!(
                    "migrated pid {} to {} as pid {}{} (migration {}): total {:.3} s, frozen {:.3} s, \
                     {} on the wire for {} of memory ({}, ratio {ratio:.2}){}",
                    args.pid,
                    args.to,
                    s.remote_pid,
                    if s.remote_ns_pid > 0 {
                        format!(
                            " (its pid was taken there: in a new PID namespace, where it is pid {})",
                            s.remote_ns_pid
                        )
                    } else {
                        String::new()
                    },
                    s.migration_id,
                    s.total_us as f64 / 1e6,
                    s.frozen_us as f64 / 1e6,
                    mb(s.wire_bytes),
                    mb(s.raw_bytes),
                    s.codec,
                    if s.codec_why.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", s.codec_why)
                    },
                );
                if !s.lazy.is_empty() {
                    println!(
                        "lazy: downtime {:.1} ms; {}",
                        s.frozen_us as f64 / 1e3,
                        s.lazy
                    );
                } else if s.rounds > 0 {
                    let per: Vec<String> = s.round_bytes.iter().map(|&b| mb(b)).collect();
                    println!(
                        "live: {} pre-copy round(s) ({}), then {} while stopped; downtime {:.1} ms; {}",
                        s.rounds,
                        per.join(", "),
                        mb(s.final_bytes),
                        s.frozen_us as f64 / 1e3,
                        s.live
                    );
                } else {
                    println!("stop-and-copy: downtime {:.1} ms", s.frozen_us as f64 / 1e3);
                }
                if !s.downtime_phases.is_empty() {
                    println!("downtime phases: {}", s.downtime_phases);
                }
                return Ok(());
            }
            None => {}
        }
    }
}

/// Where the process is when ferryd died with the migration in `phase` (the last one it
/// reported), as far as the command can tell.
fn what_is_known(phase: &str, pid: i32, to: &str) -> String {
    match phase {
        "" | "negotiate" | "precopy" => {
            format!("Pid {pid} was not frozen yet: it runs on here, untouched.")
        }
        p if p.starts_with("round ") => format!(
            "Pid {pid} was not frozen yet (live migration, {p}): it runs on here; its write \
             tracking ended with ferryd."
        ),
        "freeze" | "stream" | "restore" => format!(
            "Pid {pid} was frozen, before the commit point: ferryd's end released it, so it \
             runs on here; the copy on {to} is discarded."
        ),
        "lazy" => format!(
            "The copy ran on {to} while its memory was still following (--lazy): with ferryd \
             gone here, the original (pid {pid}) ended with it and the copy cannot get its \
             missing pages; the process is lost unless every page had arrived (ferry \
             migrations on {to} says which)."
        ),
        "commit" => format!(
            "The migration was at its commit point: pid {pid} runs either here or on {to} \
             (never both); the restarted ferryd completes or aborts it."
        ),
        _ => format!(
            "The migration was committed: the process runs on {to}; its stub here (pid {pid}) \
             relays again once ferryd is back."
        ),
    }
}

/// Runs `ferry migrations`.
pub fn list(args: ListArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut client = connect(&args.socket).await?;
        let records = client
            .list_migrations(ListMigrationsRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .context("list migrations")?
            .into_inner()
            .records;
        if args.json {
            for r in &records {
                println!("{}", json(r));
            }
        } else {
            println!(
                "{:<16}  {:<11}  {:<10}  {:>7}  {:>7}  {:<10}  DETAIL",
                "MIGRATION", "ROLE", "PEER", "PID", "REMOTE", "STATE"
            );
            for r in &records {
                let reason = if r.reason.is_empty() {
                    String::new()
                } else {
                    format!("  reason: {}", r.reason)
                };
                println!(
                    "{:<16}  {:<11}  {:<10}  {:>7}  {:>7}  {:<10}  {}{reason}",
                    r.migration_id, r.role, r.peer, r.pid, r.remote_pid, r.state, r.detail
                );
            }
        }
        Ok(())
    })
}

fn json(r: &MigrationRecord) -> serde_json::Value {
    serde_json::json!({
        "migration_id": r.migration_id,
        "role": r.role,
        "peer": r.peer,
        "pid": r.pid,
        "remote_pid": r.remote_pid,
        "state": r.state,
        "detail": r.detail,
        "started_unix_ms": r.started_unix_ms,
        "updated_unix_ms": r.updated_unix_ms,
        "start_time": r.start_time,
        "frozen_unix_us": r.frozen_unix_us,
        "frozen_end_unix_us": r.frozen_end_unix_us,
        "exit_known": r.exit_known,
        "exit_code": r.exit_code,
        "exit_signal": r.exit_signal,
        "moved_to": r.moved_to,
        "moved_pid": r.moved_pid,
        "reason": r.reason,
    })
}
