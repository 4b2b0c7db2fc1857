//! This host's load as gossiped every [`super::LOAD_PERIOD`]: CPU busy share and memory (as
//! `Peer.Load` reads them, agent/src/managed/load.rs), network bytes per second of every
//! interface but `lo` in the agent's network namespace, managed processes, and the CPU features
//! that the migration negotiation compares.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::MemberLoad;
use crate::managed::load::{cpu_jiffies, meminfo};

/// Counters of the previous sample, to turn totals into rates.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Option<(Instant, u64, u64, u64, u64)>,
}

/// (rx, tx) bytes of every interface but `lo`, from `/proc/net/dev`.
fn net_bytes() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else {
        return (0, 0);
    };
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // rx: bytes packets errs drop fifo frame compressed multicast; then tx: bytes ...
        rx = rx.saturating_add(v.first().copied().unwrap_or(0));
        tx = tx.saturating_add(v.get(8).copied().unwrap_or(0));
    }
    (rx, tx)
}

impl Sampler {
    /// The load now; rates (CPU, network) over the time since the previous call (zero on the
    /// first).
    pub fn sample(&mut self, managed: u32) -> MemberLoad {
        let now = Instant::now();
        let (idle, total, cpus) = cpu_jiffies().unwrap_or((0, 0, 1));
        let (rx, tx) = net_bytes();
        let (mut cpu_busy, mut rx_bps, mut tx_bps) = (0.0, 0.0, 0.0);
        if let Some((t0, i0, tot0, rx0, tx0)) = self.last {
            if total > tot0 {
                let idle_share = idle.saturating_sub(i0) as f64 / (total - tot0) as f64;
                cpu_busy = (1.0 - idle_share).clamp(0.0, 1.0);
            }
            let secs = now.duration_since(t0).as_secs_f64();
            if secs > 0.0 {
                rx_bps = rx.saturating_sub(rx0) as f64 / secs;
                tx_bps = tx.saturating_sub(tx0) as f64 / secs;
            }
        }
        self.last = Some((now, idle, total, rx, tx));
        let mem_total = meminfo("MemTotal:");
        let mem_available = meminfo("MemAvailable:").min(mem_total);
        let mem_free_share = if mem_total > 0 {
            mem_available as f64 / mem_total as f64
        } else {
            0.0
        };
        MemberLoad {
            seq: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            cpus: cpus.max(1),
            cpu_busy,
            mem_used: mem_total - mem_available,
            mem_total,
            net_rx_bps: rx_bps,
            net_tx_bps: tx_bps,
            managed,
            free: (1.0 - cpu_busy).min(mem_free_share).clamp(0.0, 1.0),
            xsave_features: crate::migrate::negotiate::xsave_features(),
            kernel: crate::migrate::negotiate::kernel_release(),
            managed_cpu: 0.0,
        }
    }
}
