//! `ferry-sim [--members N] [--seconds S] [--seed X] [--loss P] [--kills K] [--no-partition]
//! [--policy FILE]`: the cluster simulation of docs/cluster.md ("Simulation"), run by
//! `cargo xtask sim`. Prints the figures; fails (exit 1) naming the tick and the process when a
//! process ever has two live copies.

use std::process::ExitCode;
use std::time::Instant;

use ferry_agent::cluster::sim::{self, SimConfig};

const USAGE: &str = "usage: ferry-sim [--members N] [--seconds S] [--seed X] [--loss P] \
                     [--kills K] [--no-partition] [--policy FILE]";

fn parse(args: &[String]) -> Result<SimConfig, String> {
    let mut cfg = SimConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let num = |name: &str, v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{name} {v:?}: not a whole number"))
        };
        match a.as_str() {
            "--members" => cfg.members = num(a, value(a)?)? as usize,
            "--seconds" => cfg.seconds = num(a, value(a)?)?,
            "--seed" => cfg.seed = num(a, value(a)?)?,
            "--kills" => cfg.kills = num(a, value(a)?)? as usize,
            "--loss" => {
                let v = value(a)?;
                cfg.loss = v
                    .parse()
                    .map_err(|_| format!("--loss {v:?}: not a number (e.g. 0.01)"))?;
            }
            "--no-partition" => cfg.partition = false,
            "--policy" => {
                let path = value(a)?;
                cfg.policy =
                    std::fs::read_to_string(&path).map_err(|e| format!("--policy {path}: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    match sim::run(&cfg) {
        Ok(report) => {
            print!("{report}");
            println!("wall time: {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferry-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
