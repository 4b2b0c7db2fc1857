//! CPU use of the managed processes running here, sampled once for the policy and the load
//! gossip alike: each process's share of one CPU over the time since its previous sample
//! (at least [`MIN_WINDOW`]; a younger sample gives the previous figure again, so two readers
//! a few milliseconds apart see the same value).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::managed::{Managed, alive, proc_stat};

/// The shortest window a share is measured over.
pub const MIN_WINDOW: Duration = Duration::from_millis(500);
/// Samples older than this are forgotten.
const MAX_AGE: Duration = Duration::from_secs(30);

/// (pid, start time) → (time, CPU ticks then, the share measured last).
static SAMPLES: Mutex<Option<HashMap<(i32, u64), (Instant, u64, f64)>>> = Mutex::new(None);

/// The share of one CPU `pid` (started at `start_time`) used over its last window; 0 for the
/// first sample of a process or one that is gone.
pub fn cpu_share(pid: i32, start_time: u64) -> f64 {
    let Some(s) = proc_stat(pid).filter(|s| s.start_time == start_time) else {
        return 0.0;
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let now = Instant::now();
    let mut guard = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    map.retain(|_, (t, ..)| now.duration_since(*t) < MAX_AGE);
    match map.get(&(pid, start_time)).copied() {
        Some((t, ticks, share)) => {
            let dt = now.duration_since(t);
            if dt < MIN_WINDOW {
                return share;
            }
            let share = s.cpu_ticks.saturating_sub(ticks) as f64 / hz / dt.as_secs_f64();
            map.insert((pid, start_time), (now, s.cpu_ticks, share));
            share
        }
        None => {
            map.insert((pid, start_time), (now, s.cpu_ticks, 0.0));
            0.0
        }
    }
}

/// The managed processes running on this host: (id, pid, start time, owner uid), its own
/// (running at home) and those it hosts for peers. Not the stubs of processes that moved.
pub fn running(m: &Managed) -> Vec<(String, i32, u64, u32, bool)> {
    let mut out: Vec<(String, i32, u64, u32, bool)> = m
        .list(0, true)
        .into_iter()
        .filter(|e| e.runs_on.is_empty() && e.exit.is_none() && alive(e.pid, e.start_time))
        .map(|e| (e.id, e.pid, e.start_time, e.owner_uid, true))
        .collect();
    out.extend(
        m.hosted_list()
            .into_iter()
            .filter(|h| alive(h.pid, h.start_time))
            .map(|h| (h.id, h.pid, h.start_time, h.owner_uid, false)),
    );
    out
}

/// CPUs the managed processes running here use together (gossiped as
/// `MemberLoad::managed_cpu`).
pub fn managed_cpu(m: &Managed) -> f64 {
    running(m)
        .iter()
        .map(|(_, pid, st, ..)| cpu_share(*pid, *st))
        .sum()
}
