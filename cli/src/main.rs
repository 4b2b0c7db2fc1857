//! `ferry`: checkpoint, restore and (later) migrate running Linux processes.

mod ca;
mod criu;
mod dump;
mod hosts;
mod image;
mod key;
mod migrate;
mod restore;
mod run;
mod web;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Checkpoint and restore running, unmodified Linux processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checkpoint a running process into an image file, then end it.
    Dump(dump::Args),
    /// Bring a process back from an image file.
    Restore(restore::Args),
    /// Look at image files.
    #[command(subcommand)]
    Image(image::Command),
    /// Make the cluster CA and node certificates for ferryd's mutual TLS.
    #[command(subcommand)]
    Ca(ca::Command),
    /// Move a running process to another host (also installed as `migrate`).
    Migrate(migrate::Args),
    /// The migrations the local agent took part in.
    Migrations(migrate::ListArgs),
    /// Start a command as a managed process (here, or moved at once with --on/--auto).
    Run(run::RunArgs),
    /// Move a running process of yours (PID) or a managed process (ID) to another host.
    Offload(run::OffloadArgs),
    /// Your managed processes on every host.
    Ps(run::PsArgs),
    /// What a detached managed process wrote.
    Output(run::OutputArgs),
    /// Send a signal to a managed process, where it runs.
    Kill(run::KillArgs),
    /// Change the CPU and memory limits of a managed process.
    Limits(run::LimitsArgs),
    /// The local agent's web page: login tokens.
    #[command(subcommand)]
    Web(web::Command),
    /// Keys that seal images (`ferry dump --seal`).
    #[command(subcommand)]
    Key(key::Command),
    /// The cluster's members as the local agent sees them: address, state, load, age.
    Hosts(hosts::Args),
}

/// Invoked as `migrate` (a link to `ferry`): `migrate PID --to HOST` is `ferry migrate ...`.
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    version,
    about = "Move a running process to another host"
)]
struct MigrateCli {
    #[command(flatten)]
    args: migrate::Args,
}

fn main() -> ExitCode {
    // Descriptors inherited from whoever started us are not handed on to what we start.
    let _ = ferry_agent::sys::cloexec_from(3);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: not in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let result = if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "migrate")
    {
        migrate::run(MigrateCli::parse().args)
    } else {
        run(Cli::parse())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain, outermost first: each layer names its step.
            let mut msg = format!("ferry: {err}");
            for cause in err.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout. A reader that went away (`ferry image inspect IMG | head`) ends
/// the output quietly, as with other Unix tools, instead of a panic.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("write to stdout"))
        }
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dump(args) => dump::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Image(cmd) => image::run(cmd),
        Command::Ca(cmd) => ca::run(cmd),
        Command::Migrate(args) => migrate::run(args),
        Command::Migrations(args) => migrate::list(args),
        Command::Run(args) => run::run(args),
        Command::Offload(args) => run::offload_cmd(args),
        Command::Ps(args) => run::ps(args),
        Command::Output(args) => run::output(args),
        Command::Kill(args) => run::kill(args),
        Command::Limits(args) => run::limits_cmd(args),
        Command::Web(cmd) => web::run(cmd),
        Command::Key(cmd) => key::run(cmd),
        Command::Hosts(args) => hosts::run(args),
    }
}
