//! `ferry hosts [--json]`: the cluster's members as the local agent sees them (docs/cluster.md).

use std::path::PathBuf;

use anyhow::{Result, bail};
use ferry_proto::v1::{ClusterMember, HostsRequest};

use crate::migrate::{DEFAULT_SOCKET, connect, runtime};

/// `ferry hosts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON array of objects (one per member) instead of lines.
    #[arg(long)]
    pub json: bool,
    /// The local agent's socket.
    #[arg(long, env = "FERRY_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let reply = runtime()?.block_on(async {
        let mut client = connect(&args.socket).await?;
        anyhow::Ok(
            client
                .hosts(HostsRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner(),
        )
    })?;
    if !reply.enabled {
        bail!(
            "the local agent runs no cluster membership: {}",
            reply.off_reason
        );
    }
    if args.json {
        let out: Vec<serde_json::Value> = reply.members.iter().map(json).collect();
        return crate::write_stdout(&format!("{}\n", serde_json::Value::Array(out)));
    }
    let mut text = String::new();
    let width = reply
        .members
        .iter()
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0);
    for m in &reply.members {
        text.push_str(&line(m, width));
        text.push('\n');
    }
    if reply.bad_datagrams > 0 {
        text.push_str(&format!(
            "({} datagrams dropped: not sealed with this cluster's key)\n",
            reply.bad_datagrams
        ));
    }
    crate::write_stdout(&text)
}

/// `NAME  ADDR  STATE  cpu 12% of 4  mem 1.2/7.8 GiB  net ↓1.0 ↑2.0 KB/s  free 0.88  procs 2  age 0.4s`.
fn line(m: &ClusterMember, width: usize) -> String {
    let me = if m.local { " (this host)" } else { "" };
    let load = match &m.load {
        Some(l) => format!(
            "cpu {:>3.0}% of {}  mem {:.1}/{:.1} GiB  net rx {:.1} tx {:.1} KB/s  free {:.2}  procs {}",
            l.cpu_busy * 100.0,
            l.cpus,
            l.mem_used as f64 / f64::from(1u32 << 30),
            l.mem_total as f64 / f64::from(1u32 << 30),
            l.net_rx_bps / 1000.0,
            l.net_tx_bps / 1000.0,
            l.free,
            l.managed
        ),
        None => "no load yet".to_owned(),
    };
    format!(
        "{:<width$}  {:<21}  {:<7}  {load}  age {:.1}s{me}",
        m.name, m.addr, m.state, m.age_seconds
    )
}

fn json(m: &ClusterMember) -> serde_json::Value {
    let load = m.load.as_ref().map(|l| {
        serde_json::json!({
            "cpus": l.cpus,
            "cpu_busy": l.cpu_busy,
            "mem_used": l.mem_used,
            "mem_total": l.mem_total,
            "net_rx_bps": l.net_rx_bps,
            "net_tx_bps": l.net_tx_bps,
            "free": l.free,
            "xsave_features": l.xsave_features,
            "kernel": l.kernel,
            "seq": l.seq,
        })
    });
    serde_json::json!({
        "name": m.name,
        "addr": m.addr,
        "state": m.state,
        "local": m.local,
        "load": load,
        "processes": m.load.as_ref().map(|l| l.managed),
        "age_s": m.age_seconds,
    })
}
