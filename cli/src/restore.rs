//! `ferry restore IMAGE [--pid-ns auto|never] [--stdio inherit] [--key KEYFILE]`

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use ferry_agent::image::ImageReader;
use ferry_agent::restore::{PidNsMode, RestoreOptions, restore};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image file to restore from.
    image: PathBuf,
    /// When the original PID is taken: `auto` restores into a new PID namespace where the
    /// process keeps its PID; `never` fails.
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "never"])]
    pid_ns: String,
    /// `inherit`: give the process this command's stdin, stdout and stderr as fds 0–2.
    #[arg(long, value_name = "MODE", value_parser = ["inherit"])]
    stdio: Option<String>,
    /// Do not check the restored process against the image before it runs. By default it
    /// is read back from the kernel and compared field by field; a difference ends it and
    /// fails the restore, naming the process, the object and the field.
    #[arg(long)]
    no_verify: bool,
    /// The key of a sealed image (`ferry dump --seal KEYFILE`).
    #[arg(long, value_name = "KEYFILE")]
    key: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let key = crate::key::load(args.key.as_deref())?;
    let file = File::open(&args.image).with_context(|| format!("open {}", args.image.display()))?;
    // A file: nothing may follow the end section (as `ferry image inspect` checks).
    let reader = ImageReader::open_with_key(BufReader::with_capacity(1 << 20, file), key.as_ref())
        .with_context(|| format!("read {}", args.image.display()))?
        .refuse_trailing_data();
    tracing::debug!(elapsed = ?start.elapsed(), "image opened");
    let opts = RestoreOptions {
        pid_ns: if args.pid_ns == "never" {
            PidNsMode::Never
        } else {
            PidNsMode::Auto
        },
        inherit_stdio: args.stdio.is_some(),
        stopped: false,
        // Adopted, as the command exits, by whoever adopts orphans here.
        as_child: false,
        check: (!args.no_verify).then_some(ferry_agent::verify::restore_check as _),
    };
    let summary =
        restore(reader, opts).with_context(|| format!("restore {}", args.image.display()))?;
    for w in &summary.warnings {
        eprintln!("ferry: warning: {w}");
    }
    if let Some(inner) = summary.ns_pid {
        eprintln!(
            "ferry: pid {inner} was taken: restored into a new PID namespace, where it is pid {inner} (pid {} from here)",
            summary.pid
        );
    }
    if summary.others.is_empty() {
        println!("restored pid {}", summary.pid);
    } else {
        let others: Vec<String> = summary.others.iter().map(|p| p.to_string()).collect();
        println!(
            "restored pid {} and its descendants {}",
            summary.pid,
            others.join(" ")
        );
    }
    Ok(())
}
