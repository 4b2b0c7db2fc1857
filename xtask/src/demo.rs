//! `cargo xtask demo`: start a counting process, dump it, show the image, restore it, and show
//! it counting on with the same PID.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::thread::{self, sleep};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::unistd::Pid;

use crate::util::{self, Owned, ScratchDir};

const FERRY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run() -> Result<()> {
    util::require_root("the demo")?;
    util::require_tools(&["cc"])?;
    say("Building ferry (cargo build -p ferry)…");
    let ferry = util::build_ferry(false)?;
    // The restored process is detached from `ferry restore`; as subreaper we inherit and reap it.
    util::become_subreaper()?;
    let dir = ScratchDir::new("demo")?;
    let counter = util::compile_c(include_str!("c/counter.c"), "counter", dir.path())?;
    let log = dir.path().join("counter.log");
    let image = dir.path().join("counter.ferry");

    step(
        1,
        "Start a small C program that prints a counter and its PID every 200 ms,",
    );
    say(&format!(
        "   to a pipe whose lines we show here as [counter], and to {}.",
        log.display()
    ));
    let mut child = Command::new(&counter)
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the counter")?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let mut process = Owned::new(pid);
    show_pipe(child.stdout.take().context("counter stdout")?);
    sleep(Duration::from_millis(1300));

    step(
        2,
        &format!("Checkpoint it: ferry dump {pid} -o {}", image.display()),
    );
    let dump = util::run_captured(
        Command::new(&ferry)
            .arg("dump")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&image),
        FERRY_TIMEOUT,
    )?
    .success("ferry dump")?;
    show(&dump.stdout);
    show(&dump.stderr);
    process
        .reap(Duration::from_secs(10))
        .context("ferry dump returned, but the original is still there")?;
    let counted = log_lines(&log)?;
    let last = counted.last().map_or(0, |&(_, n)| n);
    say(&format!(
        "   The original process has ended (ferry kills it once the image is on disk); it got to {last}."
    ));
    sleep(Duration::from_millis(600));
    if log_lines(&log)?.len() != counted.len() {
        bail!("the log still grows after the dump: the original is still running");
    }
    say("   Nothing counts now: the log has not grown.");

    step(
        3,
        &format!(
            "Look inside the image: ferry image inspect {}",
            image.display()
        ),
    );
    let inspect = util::run_captured(
        Command::new(&ferry).args(["image", "inspect"]).arg(&image),
        FERRY_TIMEOUT,
    )?
    .success("ferry image inspect")?;
    show(&inspect.stdout);
    show(&inspect.stderr);

    step(
        4,
        &format!("Bring it back: ferry restore {}", image.display()),
    );
    let restore = util::run_captured(
        Command::new(&ferry).arg("restore").arg(&image),
        FERRY_TIMEOUT,
    )?
    .success("ferry restore")?;
    let (restored, _) = util::restored_pid(&restore)?;
    let mut process = Owned::new(restored);
    show(&restore.stdout);
    show(&restore.stderr);
    sleep(Duration::from_millis(1300));

    step(
        5,
        "It counts on from where it stopped, with the same PID, on the same pipe and in its log:",
    );
    let after = log_lines(&log)?;
    let new = after.get(counted.len()..).unwrap_or_default();
    if let (Some((p1, n1)), Some((p2, n2))) = (new.first(), new.last()) {
        say(&format!("   pid {p1}: {n1}  …  pid {p2}: {n2}"));
    }
    match new.first() {
        None => bail!("the restored process writes nothing to its log"),
        Some(&(p, n)) if p != pid.as_raw() || n != last + 1 => {
            bail!(
                "expected pid {pid} counting on from {}, got pid {p} at {n}",
                last + 1
            )
        }
        Some(_) => say(&format!(
            "   ✓ same PID {pid}, and the count went on from {last} to {}.",
            last + 1
        )),
    }
    if restored != pid {
        say(&format!(
            "   (it runs in a new PID namespace: PID {pid} inside, {restored} from here)"
        ));
    }

    step(
        6,
        &format!(
            "End it: kill -KILL {restored}, and clean up {}.",
            dir.path().display()
        ),
    );
    process.end()?;
    util::reap_ended_children();
    say("Done.");
    Ok(())
}

/// Prints what arrives on the counter's stdout. We keep the read end open across the dump, so
/// the restored process gets the same pipe back (ferry reopens a pipe that a live process
/// still holds) and its lines keep arriving here.
fn show_pipe(pipe: ChildStdout) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                // No writer for now (between the dump and the restore): wait for the next one.
                Ok(0) => thread::sleep(Duration::from_millis(50)),
                Ok(_) => print!("    [counter] {line}"),
                Err(_) => return,
            }
        }
    });
}

/// The `(pid, count)` of every complete line of the counter's log.
fn log_lines(log: &Path) -> Result<Vec<(i32, u64)>> {
    let text = fs::read_to_string(log).with_context(|| format!("read {}", log.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (pid, n) = line.strip_prefix("pid ")?.split_once(": ")?;
            Some((pid.parse().ok()?, n.parse().ok()?))
        })
        .collect())
}

fn step(n: u32, what: &str) {
    println!("\n==> {n}. {what}");
}

fn say(what: &str) {
    println!("{what}");
}

fn show(output: &str) {
    for line in output.lines() {
        println!("   | {line}");
    }
}
