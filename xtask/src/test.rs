//! `cargo xtask test`: check the tools the tests need, build the binaries, run the test suite
//! with `FERRY_BIN` pointing at the freshly built `ferry`, then (for the whole suite) the
//! conformance victims (`cargo xtask compat`).

use std::io::{BufRead, BufReader};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::util;

/// Tools the integration tests run: the C compiler for their victims, victims themselves, and
/// what the test hosts are made with.
const PREREQUISITES: &[&str] = &["cc", "python3", "bash", "sleep", "ip", "nsenter", "nft"];

pub fn run(cargo_test_args: &[String]) -> Result<ExitCode> {
    util::require_tools(PREREQUISITES)?;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root: tests that need root will skip (and fail under CI=true)");
    }

    // The integration tests run the binary rather than build it, so build it first.
    util::run(util::cargo().args(["build", "--workspace", "--bins"]))?;
    util::link_migrate("debug")?;
    let ferry = util::target_dir().join("debug").join("ferry");

    let mut test = util::cargo();
    test.arg("test");
    // Every test binary runs even after one fails, so that one run shows every failure.
    if !cargo_test_args.iter().any(|a| a == "--no-fail-fast") {
        test.arg("--no-fail-fast");
    }
    if !selects_packages(cargo_test_args) {
        test.arg("--workspace");
    }
    // The test binaries' output is passed through as it comes, and counted, so that the run
    // ends with one line for the whole suite rather than the last binary's.
    let mut child = test
        .args(cargo_test_args)
        .env("FERRY_BIN", &ferry)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read cargo test output")?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait().context("wait for cargo test")?;
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    // The whole suite (no arguments) ends with the conformance victims.
    let compat_ok = if cargo_test_args.is_empty() {
        run_compat(&[])?
    } else {
        true
    };
    // Pass cargo's exit code through (a signal death becomes 1).
    let code = status.code().unwrap_or(1);
    if code == 0 && !compat_ok {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `cargo xtask compat`: build, then run the conformance suite (`ferry-compat`, a binary of the
/// test crate) against the freshly built `ferry`.
pub fn compat(filters: &[String]) -> Result<ExitCode> {
    util::require_tools(&["cc"])?;
    util::run(util::cargo().args(["build", "--workspace", "--bins"]))?;
    util::link_migrate("debug")?;
    Ok(if run_compat(filters)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the built `ferry-compat`; true when no victim failed that is not a known failure.
fn run_compat(filters: &[String]) -> Result<bool> {
    let bin = util::target_dir().join("debug");
    let status = std::process::Command::new(bin.join("ferry-compat"))
        .args(filters)
        .env("FERRY_BIN", bin.join("ferry"))
        .status()
        .context("cannot start ferry-compat")?;
    Ok(status.success())
}

/// Sums of the `test result:` lines of every test binary.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let count = |word: &str| -> u64 {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .trim_start_matches("ok. ")
                        .trim_start_matches("FAILED. ")
                        .strip_suffix(word)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        self.passed += count("passed");
        self.failed += count("failed");
        self.ignored += count("ignored");
    }
}

/// Whether cargo's own arguments (those before `--`) already choose the packages to test.
fn selects_packages(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| {
        ["-p", "--package", "--workspace", "--exclude"].contains(&arg.as_str())
            || arg.starts_with("--package=")
            || arg.starts_with("-p")
    })
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn result_lines_are_summed() {
        let mut t = Totals::default();
        t.add("test result: ok. 33 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 6.78s");
        t.add("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (35, 1, 1));
    }
}
