//! `ferry ca init --dir DIR` and `ferry ca issue NAME --dir DIR`: the cluster CA and the
//! certificates of its nodes.

use std::path::PathBuf;

use anyhow::Context;
use ferry_agent::transport::ca;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the cluster CA: DIR/ca.pem, DIR/ca.key (mode 0600) and the cluster key
    /// DIR/cluster.key (mode 0600; give it to every host with ca.pem). Refuses to replace one.
    Init {
        /// Directory for the CA (created if needed).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue the certificate of node NAME with the CA in DIR: DIR/NAME.pem (subject alternative
    /// name NAME, server and client authentication) and DIR/NAME.key (mode 0600).
    Issue {
        /// The node's name, as in its ferryd configuration and its peers' `[peers]` tables.
        name: String,
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Init { dir } => {
            let cert = ca::init_ca(&dir)
                .with_context(|| format!("create a cluster CA in {}", dir.display()))?;
            println!("created the cluster CA {}", cert.display());
        }
        Command::Issue { name, dir } => {
            let cert = ca::issue_node(&dir, &name)
                .with_context(|| format!("issue a certificate for {name}"))?;
            println!("issued {}", cert.display());
        }
    }
    Ok(())
}
