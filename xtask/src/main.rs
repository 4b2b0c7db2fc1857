//! `cargo xtask`: everything a newcomer or CI runs — the demo, the test suite, the benchmark.

mod bench;
mod bench_migrate;
mod bench_relay;
mod bench_tasks;
mod demo;
mod demo_hosts;
mod demo_offload;
mod hosts;
mod sim;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Ferry project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check prerequisites, build the binaries, run `cargo test --workspace [ARGS]`.
    Test {
        /// Passed on to `cargo test` (e.g. `-p ferry-tests -- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The conformance suite: one small C victim per kernel object (tests/compat/), each dumped,
    /// restored with the checker on, and checking itself; a table and `N passed, M failed`.
    Compat {
        /// Run only the victims whose name contains one of these.
        filters: Vec<String>,
    },
    /// Two test hosts: a counting process in this terminal moves from h1 to h2 and back
    /// (`--local`: dump, inspect and restore it on this machine instead).
    Demo {
        /// The local checkpoint/restore demo.
        #[arg(long)]
        local: bool,
    },
    /// Dump and restore a process with 1 GiB of heap-like memory with each codec.
    Bench(bench::Options),
    /// `ferry migrate` of a 1 GiB and an 8 MiB process between two test hosts.
    BenchMigrate {
        /// Use the release binaries.
        #[arg(long)]
        release: bool,
    },
    /// The same servers and clients direct and through the relay of a migration (three test
    /// hosts): redis-benchmark pipelined and with a connection per request, keep-alive HTTP,
    /// the round trip at p50; each beside its target.
    BenchRelay,
    /// Periodic checkpoints of a running 1 GiB process writing 10 MB/s, kept on two replicas
    /// (three test hosts): stop time and bytes sent per checkpoint, the agents' CPU; then
    /// the failover: the time from the host's death to `down` and to the job running elsewhere.
    BenchCluster,
    /// A client of `bench-relay`, run inside a test host.
    #[command(hide = true)]
    RelayClient(bench_relay::ClientOptions),
    /// Test hosts: `hosts up N` makes N namespaced hosts running ferryd, `hosts down` ends them.
    Hosts {
        #[command(subcommand)]
        command: hosts::HostsCmd,
    },
    /// The deterministic cluster simulation: membership, failures, partitions, the policy's
    /// moves and the leases of N members on a virtual clock; prints the figures.
    Sim(sim::Options),
    /// A test host's PID 1 (started by `hosts up`).
    #[command(hide = true)]
    HostInit(hosts::InitOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Test { args } => test::run(&args),
        Cmd::Compat { filters } => test::compat(&filters),
        Cmd::Demo { local } => if local {
            demo::run()
        } else {
            demo_hosts::run()
        }
        .map(|()| ExitCode::SUCCESS),
        Cmd::Bench(options) => bench::run(&options).map(|()| ExitCode::SUCCESS),
        Cmd::BenchMigrate { release } => bench_migrate::run(release).map(|()| ExitCode::SUCCESS),
        Cmd::BenchRelay => bench_relay::run().map(|()| ExitCode::SUCCESS),
        Cmd::BenchCluster => test::run(
            &[
                "-p",
                "ferry-tests",
                "--test",
                "replicas",
                "--",
                "--ignored",
                "--exact",
                "checkpoint_bench",
                "--nocapture",
            ]
            .map(String::from),
        ),
        Cmd::RelayClient(o) => bench_relay::client_main(&o).map(|()| ExitCode::SUCCESS),
        Cmd::Hosts { command } => hosts::run(&command).map(|()| ExitCode::SUCCESS),
        Cmd::Sim(o) => sim::run_sim(&o),
        Cmd::HostInit(options) => hosts::host_init(&options).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
