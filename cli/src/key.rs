//! `ferry key new FILE`: a key that seals images (docs/image-format.md, "Sealed images").

use std::path::{Path, PathBuf};

use anyhow::Context;
use ferry_agent::image::seal::Key;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new random key (32 bytes as 64 hex digits, mode 0600) to FILE; an existing
    /// file is never replaced.
    New {
        /// Where to write the key.
        file: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::New { file } = cmd;
    Key::create(&file).with_context(|| format!("make a key at {}", file.display()))?;
    println!("wrote a new key to {}", file.display());
    Ok(())
}

/// The key of `--seal`/`--key FILE`, if one is named.
pub fn load(file: Option<&Path>) -> anyhow::Result<Option<Key>> {
    file.map(|f| Key::load(f).context("load the sealing key"))
        .transpose()
}
