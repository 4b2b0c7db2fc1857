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
    /// Write the key that seals the cluster's checkpoint replicas (derived from cluster.key,
    /// docs/cluster.md "Checkpoints and replicas") to FILE, for `ferry restore --key FILE`
    /// of a replica's image by hand.
    Replica {
        /// Where to write the key (a new file, mode 0600).
        file: PathBuf,
        /// The cluster key.
        #[arg(long, value_name = "PATH", default_value = "/etc/ferry/tls/cluster.key")]
        cluster_key: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::New { file } => {
            Key::create(&file).with_context(|| format!("make a key at {}", file.display()))?;
            println!("wrote a new key to {}", file.display());
        }
        Command::Replica { file, cluster_key } => {
            let key = ferry_agent::replica::key_from_cluster_key(&cluster_key)?;
            key.save(&file)
                .with_context(|| format!("write the replica key to {}", file.display()))?;
            println!("wrote the replica key to {}", file.display());
        }
    }
    Ok(())
}

/// The key of `--seal`/`--key FILE`, if one is named.
pub fn load(file: Option<&Path>) -> anyhow::Result<Option<Key>> {
    file.map(|f| Key::load(f).context("load the sealing key"))
        .transpose()
}
