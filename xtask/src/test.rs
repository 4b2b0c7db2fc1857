//! `cargo xtask test`: check the tools the tests need, build the binaries, run the test suite
//! with `FERRY_BIN` pointing at the freshly built `ferry`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::util;

/// Tools the integration tests run: the C compiler for their victims, and victims themselves.
const PREREQUISITES: &[&str] = &["cc", "python3", "bash", "sleep"];

pub fn run(cargo_test_args: &[String]) -> Result<ExitCode> {
    util::require_tools(PREREQUISITES)?;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root: tests that need root will skip (and fail under CI=true)");
    }

    // The integration tests run the binary rather than build it, so build it first.
    util::run(util::cargo().args(["build", "--workspace", "--bins"]))?;
    let ferry = util::target_dir().join("debug").join("ferry");

    let mut test = util::cargo();
    test.arg("test");
    if !selects_packages(cargo_test_args) {
        test.arg("--workspace");
    }
    let status = test
        .args(cargo_test_args)
        .env("FERRY_BIN", &ferry)
        .status()
        .context("cannot start cargo test")?;
    // Pass cargo's exit code through (a signal death becomes 1).
    let code = status.code().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Whether cargo's own arguments (those before `--`) already choose the packages to test.
fn selects_packages(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| {
        ["-p", "--package", "--workspace", "--exclude"].contains(&arg.as_str())
            || arg.starts_with("--package=")
            || arg.starts_with("-p")
    })
}
