//! `ferryd --config FILE`: the Ferry agent.
//!
//! Logs through tracing: to journald when its socket exists, else to stderr (filter with
//! `FERRY_LOG`, default `info`). Stops gracefully on SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use ferry_agent::daemon::{self, Config};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

const USAGE: &str = "usage: ferryd --config FILE";

fn main() -> ExitCode {
    // Descriptors inherited from whoever started us are not handed on to what we start.
    let _ = ferry_agent::sys::cloexec_from(3);
    let journald = init_tracing();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain, outermost first: each layer names its step.
            let msg = err
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            if journald {
                tracing::error!("{msg}");
            }
            eprintln!("ferryd: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let config_path = parse_args()?;
    // One crypto provider for the whole process (tonic's server and client both use rustls).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::load(&config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferryd")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        daemon::serve(config, shutdown).await?;
        Ok(())
    })
}

fn parse_args() -> Result<PathBuf> {
    let mut args = std::env::args_os().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--config" | "-c") => {
                config = Some(PathBuf::from(args.next().context(USAGE)?));
            }
            Some(s) if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            Some("--help" | "-h") => {
                println!(
                    "{USAGE}\n\nThe Ferry agent: serves the local API on its Unix socket and the peer API over mutual TLS."
                );
                std::process::exit(0);
            }
            Some("--version" | "-V") => {
                println!("ferryd {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    config.context(USAGE)
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}

/// journald when present (structured fields kept), stderr otherwise. Returns true for journald.
fn init_tracing() -> bool {
    let filter = || EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into());
    match tracing_journald::layer() {
        Ok(journald) => {
            tracing_subscriber::registry()
                .with(filter())
                .with(journald.with_syslog_identifier("ferryd".to_owned()))
                .init();
            true
        }
        Err(_) => {
            tracing_subscriber::registry()
                .with(filter())
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                )
                .init();
            false
        }
    }
}
