//! What a host can take (`Peer.Load`), how busy a process is (`Peer.ProcStats`, `ps`), and
//! `--auto`'s choice of a peer.

use std::time::{Duration, Instant};

use ferry_proto::v1::peer_client::PeerClient;
use ferry_proto::v1::{Limits, LoadReply, LoadRequest, ProcStat};

use super::Managed;
use crate::node::NodeRef;

/// How long a peer's `Load` answer is used before it is asked again.
pub const LOAD_TTL: Duration = Duration::from_secs(3);
/// How long a peer may take to answer `Load`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(3);
/// A CPU sample older than this is not used for a current share.
const SAMPLE_MAX_AGE: Duration = Duration::from_secs(60);

/// (idle, total) jiffies of all CPUs, and the number of CPUs, from `/proc/stat`.
pub(crate) fn cpu_jiffies() -> Option<(u64, u64, u32)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let mut cpus = 0;
    let mut first = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cpu ") {
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            let idle = v.get(3).copied()? + v.get(4).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            first = Some((idle, total));
        } else if line.starts_with("cpu") {
            cpus += 1;
        }
    }
    let (idle, total) = first?;
    Some((idle, total, cpus))
}

pub(crate) fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// This host's load: idle CPU share since the previous call (or over 100 ms when there is
/// none recent), memory, and the managed processes running here.
pub async fn host_load(m: &Managed) -> LoadReply {
    let fresh = {
        let last = m.host_sample.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|(t, ..)| {
            t.elapsed() < SAMPLE_MAX_AGE && t.elapsed() > Duration::from_millis(50)
        })
    };
    if !fresh {
        if let Some((idle, total, _)) = cpu_jiffies() {
            *m.host_sample.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), idle, total));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (idle, total, cpus) = cpu_jiffies().unwrap_or((0, 0, 1));
    let cpu_idle = {
        let mut last = m.host_sample.lock().unwrap_or_else(|e| e.into_inner());
        let share = match *last {
            Some((_, i0, t0)) if total > t0 => {
                (idle.saturating_sub(i0)) as f64 / (total - t0) as f64
            }
            _ => 0.0,
        };
        *last = Some((Instant::now(), idle, total));
        share.clamp(0.0, 1.0)
    };
    LoadReply {
        cpus: cpus.max(1),
        cpu_idle,
        mem_total: meminfo("MemTotal:"),
        mem_available: meminfo("MemAvailable:"),
        managed_running: m.running_here(),
    }
}

/// CPU share (percent of one CPU) of `pid` since its previous sample (its life's average
/// when there is none recent), memory and state.
pub fn proc_stat(m: &Managed, pid: i32) -> ProcStat {
    let Some(s) = super::proc_stat(pid) else {
        return ProcStat {
            pid,
            ..Default::default()
        };
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let now = Instant::now();
    let mut samples = m.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
    samples.retain(|_, (t, _)| t.elapsed() < SAMPLE_MAX_AGE);
    let cpu = match samples.get(&(pid, s.start_time)) {
        Some((t, ticks)) if now.duration_since(*t) > Duration::from_millis(200) => {
            s.cpu_ticks.saturating_sub(*ticks) as f64 / hz / now.duration_since(*t).as_secs_f64()
        }
        _ => {
            let uptime = std::fs::read_to_string("/proc/uptime")
                .ok()
                .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0);
            let life = uptime - s.start_time as f64 / hz;
            if life > 0.0 {
                s.cpu_ticks as f64 / hz / life
            } else {
                0.0
            }
        }
    };
    samples.insert((pid, s.start_time), (now, s.cpu_ticks));
    ProcStat {
        pid,
        alive: s.state != 'Z' && s.state != 'X',
        frozen: matches!(s.state, 'T' | 't'),
        cpu: cpu * 100.0,
        mem: super::rss(pid),
        away: false,
    }
}

/// `Load` of peer `name`, from the cache when younger than [`LOAD_TTL`].
pub async fn peer_load(node: &NodeRef, name: &str) -> Result<LoadReply, String> {
    if let Some((t, l)) = node
        .managed
        .load_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        && t.elapsed() < LOAD_TTL
    {
        return Ok(*l);
    }
    let channel = node.peers.channel(name).map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(LOAD_TIMEOUT, PeerClient::new(channel).load(LoadRequest {}))
        .await
        .map_err(|_| format!("no answer within {LOAD_TIMEOUT:?}"))?
        .map_err(|s| s.message().to_string())?
        .into_inner();
    node.managed
        .load_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), (Instant::now(), reply));
    Ok(reply)
}

/// What a job is taken to need when it has no limit of that kind: one CPU, 256 MiB.
const DEFAULT_CPU: f64 = 1.0;
const DEFAULT_MEM: f64 = (256u64 << 20) as f64;

/// The score of a host for a job with `limits`: how many times over its free CPU and free
/// memory (the smaller of the two) hold what the job needs, shared with the managed processes
/// already there. `None` when its free memory is below the job's memory limit.
pub fn score(load: &LoadReply, limits: &Limits) -> Option<f64> {
    if limits.mem_bytes != 0 && load.mem_available < limits.mem_bytes {
        return None;
    }
    let want_cpu = if limits.cpu_millis == 0 {
        DEFAULT_CPU
    } else {
        limits.cpu_millis as f64 / 1000.0
    };
    let want_mem = if limits.mem_bytes == 0 {
        DEFAULT_MEM
    } else {
        limits.mem_bytes as f64
    };
    let free_cpu = f64::from(load.cpus) * load.cpu_idle;
    let share = f64::from(load.managed_running + 1);
    Some((free_cpu / want_cpu).min(load.mem_available as f64 / want_mem) / share)
}

/// `--auto`: the peer with the best [`score`] (ties: fewer managed processes, then the name).
/// Fails naming each peer and why it was left out when none fits.
pub async fn pick(node: &NodeRef, limits: &Limits) -> Result<String, String> {
    let names: Vec<String> = node.peers.peers().keys().cloned().collect();
    if names.is_empty() {
        return Err("this agent has no peers (its [peers] table is empty)".into());
    }
    let answers = futures_join(
        names
            .iter()
            .map(|n| async move { (n.clone(), peer_load(node, n).await) }),
    )
    .await;
    let mut best: Option<(f64, u32, String)> = None;
    let mut why = Vec::new();
    for (name, load) in answers {
        match load {
            Err(e) => why.push(format!("{name}: unreachable ({e})")),
            Ok(l) => match score(&l, limits) {
                None => why.push(format!(
                    "{name}: {} MiB of memory free, the job's limit is {} MiB",
                    l.mem_available >> 20,
                    limits.mem_bytes >> 20
                )),
                Some(s) => {
                    let better = best.as_ref().is_none_or(|(bs, bn, bname)| {
                        s > *bs || (s == *bs && (l.managed_running, &name) < (*bn, bname))
                    });
                    if better {
                        best = Some((s, l.managed_running, name));
                    }
                }
            },
        }
    }
    best.map(|(_, _, n)| n)
        .ok_or_else(|| format!("no peer can take the job: {}", why.join("; ")))
}

/// Runs the futures concurrently and returns their outputs in order.
pub async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    let mut out = Vec::with_capacity(set.len());
    // Sequential awaits of already-started futures would not run them together: poll them
    // all through a join of pinned boxes.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().flatten());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(cpus: u32, idle: f64, mem_mib: u64, running: u32) -> LoadReply {
        LoadReply {
            cpus,
            cpu_idle: idle,
            mem_total: 64 << 30,
            mem_available: mem_mib << 20,
            managed_running: running,
        }
    }

    #[test]
    fn more_free_cpu_and_memory_scores_higher() {
        let none = Limits::default();
        let idle = score(&host(8, 0.9, 16 << 10, 0), &none).unwrap();
        let busy = score(&host(8, 0.1, 16 << 10, 0), &none).unwrap();
        assert!(idle > busy, "{idle} vs {busy}");
        // Memory is the scarce one here: 128 MiB free for a job limited to 100 MiB.
        let mem = Limits {
            cpu_millis: 0,
            mem_bytes: 100 << 20,
        };
        let small = score(&host(8, 0.9, 128, 0), &mem).unwrap();
        let large = score(&host(8, 0.9, 4096, 0), &mem).unwrap();
        assert!(large > small, "{large} vs {small}");
    }

    #[test]
    fn managed_processes_already_there_count() {
        let none = Limits::default();
        let empty = score(&host(4, 0.5, 8192, 0), &none).unwrap();
        let shared = score(&host(4, 0.5, 8192, 3), &none).unwrap();
        assert!(empty > shared, "{empty} vs {shared}");
    }

    #[test]
    fn a_host_without_the_memory_limit_free_is_left_out() {
        let l = Limits {
            cpu_millis: 1000,
            mem_bytes: 2 << 30,
        };
        assert!(score(&host(64, 1.0, 1024, 0), &l).is_none());
        assert!(score(&host(64, 1.0, 4096, 0), &l).is_some());
    }
}
