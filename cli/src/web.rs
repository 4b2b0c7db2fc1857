//! `ferry web token`: a login token of the local agent's web page for the calling user.

use std::path::PathBuf;

use anyhow::Result;
use ferry_proto::v1::WebTokenRequest;

use crate::migrate::{DEFAULT_SOCKET, connect, runtime};

/// `ferry web`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a new login token for you (the agent keeps only its hash; it replaces your
    /// previous one). Prints the token alone on the first line, then where the page is.
    Token {
        /// The local agent's socket.
        #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
        socket: PathBuf,
    },
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Token { socket } => {
            let reply = runtime()?.block_on(async {
                let mut client = connect(&socket).await?;
                client
                    .web_token(WebTokenRequest {})
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| anyhow::anyhow!("{}", s.message()))
            })?;
            let mut text = format!("{}\n", reply.token);
            if reply.url.is_empty() {
                text.push_str(&format!(
                    "(uid {}; this agent serves no web page: set web = \"ADDR:PORT\" in its \
                     configuration)\n",
                    reply.uid
                ));
            } else {
                text.push_str(&format!("(uid {}; log in at {})\n", reply.uid, reply.url));
            }
            crate::write_stdout(&text)
        }
    }
}
