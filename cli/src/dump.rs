//! `ferry dump PID -o IMAGE [--leave-running] [--tcp-established] [--ext-unix-sk]
//! [--compress lz4|zstd|none|auto] [--max-deleted-file-size BYTES] [--tree] [--seal KEYFILE]`

use std::path::PathBuf;

use anyhow::Context;
use ferry_agent::dump::autocodec::{self, Output};
use ferry_agent::dump::{
    DEFAULT_MAX_DELETED_FILE_SIZE, DumpOptions, STORED_BUDGET, dump, dump_tree,
};
use ferry_agent::image::Codec;
use nix::unistd::Pid;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The process to checkpoint.
    pid: i32,
    /// Image file to write.
    #[arg(short = 'o', long = "output", value_name = "IMAGE")]
    output: PathBuf,
    /// Let the process run on after the dump instead of ending it.
    #[arg(long)]
    leave_running: bool,
    /// Checkpoint established TCP connections (TCP_REPAIR); without it they are refused.
    #[arg(long)]
    tcp_established: bool,
    /// Keep Unix sockets whose peer is outside the process: restore reconnects them to the
    /// peer's name where it has one. Without it they are refused.
    #[arg(long)]
    ext_unix_sk: bool,
    /// Compression of memory pages: lz4 (fastest for a local image), zstd (smaller, slower),
    /// none, or auto (measures each codec on the process's memory and the output's speed
    /// before the freeze, picks the fastest pipeline, and says why).
    #[arg(long, value_name = "CODEC", default_value = "lz4", value_parser = ["lz4", "zstd", "none", "auto"])]
    compress: String,
    /// Largest file deleted while open whose contents the image stores (bytes); a larger one
    /// makes the dump fail.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_DELETED_FILE_SIZE, value_parser = clap::value_parser!(u64).range(0..=STORED_BUDGET))]
    max_deleted_file_size: u64,
    /// Checkpoint the process and all its descendants (restored together).
    #[arg(long)]
    tree: bool,
    /// Seal the image under the key in KEYFILE (`ferry key new`): every section encrypted
    /// and authenticated (AES-256-GCM); `ferry restore --key KEYFILE` reads it back.
    #[arg(long, value_name = "KEYFILE")]
    seal: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The key is read before the process is touched: a bad key file leaves it as it is.
    let seal = crate::key::load(args.seal.as_deref())?;
    let (codec, why) = match args.compress.as_str() {
        "zstd" => (Codec::Zstd, None),
        "none" => (Codec::None, None),
        "auto" => {
            let dir = match args.output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let choice = autocodec::choose(Pid::from_raw(args.pid), Output::File(&dir), Codec::Lz4);
            (choice.codec, Some(choice.why))
        }
        _ => (Codec::Lz4, None),
    };
    let run = if args.tree { dump_tree } else { dump };
    let summary = run(
        Pid::from_raw(args.pid),
        &args.output,
        DumpOptions {
            leave_running: args.leave_running,
            codec,
            max_deleted_file_size: args.max_deleted_file_size,
            tcp_established: args.tcp_established,
            ext_unix_sk: args.ext_unix_sk,
            relay_sockets: false,
            seal,
            // `dump` and `dump_tree` take it when they end the process.
            ..DumpOptions::default()
        },
    )
    .with_context(|| format!("dump pid {}", args.pid))?;
    for w in &summary.warnings {
        eprintln!("ferry: warning: {w}");
    }
    let s = summary.stats;
    println!(
        "dumped pid {}{}: {} pages ({:.1} MiB, {} zero), image {:.1} MiB ({}, {}{}), frozen {} ms ({} tasks stopped in {} us){}{}",
        summary.pid,
        if summary.processes > 1 {
            format!(" and {} descendants", summary.processes - 1)
        } else {
            String::new()
        },
        s.pages,
        s.raw_bytes as f64 / (1 << 20) as f64,
        s.zero_pages,
        s.image_bytes as f64 / (1 << 20) as f64,
        args.output.display(),
        codec,
        if seal.is_some() { ", sealed" } else { "" },
        summary.frozen.as_millis(),
        summary.tasks,
        summary.seize.as_micros(),
        if args.leave_running {
            ", left running"
        } else {
            ""
        },
        why.map(|w| format!("; {w}")).unwrap_or_default()
    );
    Ok(())
}
