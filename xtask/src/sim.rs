//! `cargo xtask sim [--members N] [--seconds S] [--seed X]`: the deterministic cluster
//! simulation (agent/src/cluster/sim/, docs/cluster.md "Simulation"): builds `ferry-sim` and
//! runs it, timing the run. It fails when a process ever had two live copies.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::util::{cargo, run, target_dir};

/// The knobs passed on to `ferry-sim`.
#[derive(Debug, Args)]
pub struct Options {
    /// Members (50 runs in CI time; 1000 for the figures of docs/cluster.md).
    #[arg(long, default_value_t = 50)]
    members: usize,
    /// Virtual seconds (at least 150: start, kills, partition, heal).
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Seed of every random choice: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of datagrams lost.
    #[arg(long)]
    loss: Option<f64>,
    /// Members killed (and revived).
    #[arg(long)]
    kills: Option<usize>,
    /// No partition.
    #[arg(long)]
    no_partition: bool,
    /// A policy file instead of the simulation's own.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
}

/// Builds and runs `ferry-sim`.
pub fn run_sim(o: &Options) -> Result<ExitCode> {
    run(cargo().args([
        "build",
        "--quiet",
        "--package",
        "ferry-agent",
        "--bin",
        "ferry-sim",
    ]))?;
    let bin = target_dir().join("debug").join("ferry-sim");
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--members", &o.members.to_string()])
        .args(["--seconds", &o.seconds.to_string()])
        .args(["--seed", &o.seed.to_string()]);
    if let Some(l) = o.loss {
        cmd.args(["--loss", &l.to_string()]);
    }
    if let Some(k) = o.kills {
        cmd.args(["--kills", &k.to_string()]);
    }
    if o.no_partition {
        cmd.arg("--no-partition");
    }
    if let Some(p) = &o.policy {
        cmd.arg("--policy").arg(p);
    }
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    eprintln!(
        "cargo xtask sim: {} members, {} virtual s: {:.1} s of wall time",
        o.members,
        o.seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
