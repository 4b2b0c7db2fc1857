//! `ferry image inspect IMAGE [--json]`

use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Summarise an image: the process, its VMAs, fds, signal state and the image's sections.
    Inspect {
        /// Image file.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Inspect { image: _, json: _ } => anyhow::bail!("not yet"),
    }
}
