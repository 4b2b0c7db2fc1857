//! Managed processes: what `ferry run`, `offload`, `ps`, `output`, `kill` and `limits` act on
//! (docs/offload.md).
//!
//! Each agent keeps a registry of the processes it **manages** (is the *home* of): those
//! started on its host with `ferry run` or registered with `ferry offload`, with their owner,
//! command, limits, where they run now and how they ended. A managed process moved to a peer
//! stays managed by its home (where its stub, its terminal or its output file are); the peer
//! only *hosts* it ([`Hosted`]: its cgroups and its count in `Load`). The registry is kept in
//! `$FERRY_STATE_DIR/managed.redb`.

pub mod away;
pub mod cgroup;
pub mod load;
pub mod local;
pub mod output;
pub mod peer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_proto::v1::{Limits, LoadReply};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::node::NodeRef;
use crate::node::now_ms;

const MANAGED: TableDefinition<&str, &[u8]> = TableDefinition::new("managed");
/// Processes of peers hosted here, by id (JSON of [`StoredHosted`]).
const HOSTED: TableDefinition<&str, &[u8]> = TableDefinition::new("hosted");

/// How often the janitor trims output files and removes the cgroups of ended processes.
const JANITOR_PERIOD: Duration = Duration::from_secs(1);

/// One managed process, as its home keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Entry {
    /// The short id users name it by.
    pub id: String,
    /// Who it belongs to (the uid that started or registered it).
    pub owner_uid: u32,
    /// Its PID on this host: the process, and after a migration its stub.
    pub pid: i32,
    /// Start time of `pid` (field 22 of `/proc/PID/stat`).
    pub start_time: u64,
    /// Its command line, arguments separated by spaces.
    pub command: String,
    /// When it was started (or registered), ms since the epoch.
    pub started_unix_ms: u64,
    /// When it ended, ms since the epoch (0: not yet).
    pub ended_unix_ms: u64,
    /// CPU limit in thousandths of a CPU (0: none).
    pub cpu_millis: u64,
    /// Memory limit in bytes (0: none).
    pub mem_bytes: u64,
    /// Started with `--detach`: its stdout and stderr go to [`output::path`].
    pub detached: bool,
    /// This agent started it (`Spawn`) and is its parent (reaps it).
    pub spawned: bool,
    /// The client that started it waits for it and reports its end (`Exited`).
    pub attached: bool,
    /// Where it runs when not here: the peer (empty: here).
    pub runs_on: String,
    /// Its PID on `runs_on`.
    pub remote_pid: i32,
    /// The migration that moved it there.
    pub migration_id: String,
    /// How it ended: (exit code, signal); `None` while running or when not known.
    pub exit: Option<(i32, i32)>,
    /// This agent made cgroups for it here (removed when `pid` ends).
    pub cgroup: bool,
    /// Its output pipe reached its end (everything it wrote is in the file), or no agent
    /// drains it any more (after a restart).
    pub drained: bool,
    /// Periodic checkpoints every this many ms (docs/cluster.md "Checkpoints and replicas").
    #[serde(default)]
    pub checkpoint_every_ms: Option<u64>,
    /// Replica holders asked for.
    #[serde(default)]
    pub replicas: u32,
    /// The members holding its checkpoints now.
    #[serde(default)]
    pub replica_hosts: Vec<String>,
    /// Its epoch (raised by every take-over).
    #[serde(default)]
    pub epoch: u64,
    /// Labels for the policy (docs/cluster.md, "Policy"); `pin`: never moved by it.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl Entry {
    /// The limits as the API carries them.
    pub fn limits(&self) -> Limits {
        Limits {
            cpu_millis: self.cpu_millis,
            mem_bytes: self.mem_bytes,
        }
    }

    /// Whether `uid` may see and control it (root: every process).
    pub fn visible_to(&self, uid: u32, root: bool) -> bool {
        root || self.owner_uid == uid
    }

    /// Where it runs: a peer's name, or this host's.
    pub fn host<'a>(&'a self, me: &'a str) -> &'a str {
        if self.runs_on.is_empty() {
            me
        } else {
            &self.runs_on
        }
    }
}

/// A managed process of a peer that runs here.
#[derive(Debug, Clone)]
pub struct Hosted {
    /// The home's id of it.
    pub id: String,
    /// Its PID here.
    pub pid: i32,
    /// That PID's start time.
    pub start_time: u64,
    /// Its owner (on its home).
    pub owner_uid: u32,
    /// Whether cgroups were made for it here.
    pub cgroup: bool,
    /// Its home (the peer that told us).
    pub home: String,
    /// Its limits, as the home gave them.
    pub limits: Limits,
    /// Checkpoints here every this many ms (0: none), to `replicas` holders.
    pub checkpoint_every_ms: u64,
    /// Replica holders asked for.
    pub replicas: u32,
    /// The members holding its checkpoints now.
    pub replica_hosts: Vec<String>,
    /// Its epoch (raised by every take-over).
    pub epoch: u64,
    /// The migration whose relay serves its stdio here.
    pub migration_id: String,
}

/// A [`Hosted`] as the store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredHosted {
    id: String,
    pid: i32,
    start_time: u64,
    owner_uid: u32,
    cgroup: bool,
    home: String,
    cpu_millis: u64,
    mem_bytes: u64,
    #[serde(default)]
    checkpoint_every_ms: u64,
    #[serde(default)]
    replicas: u32,
    #[serde(default)]
    replica_hosts: Vec<String>,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    migration_id: String,
}

impl From<&Hosted> for StoredHosted {
    fn from(h: &Hosted) -> Self {
        StoredHosted {
            id: h.id.clone(),
            pid: h.pid,
            start_time: h.start_time,
            owner_uid: h.owner_uid,
            cgroup: h.cgroup,
            home: h.home.clone(),
            cpu_millis: h.limits.cpu_millis,
            mem_bytes: h.limits.mem_bytes,
            checkpoint_every_ms: h.checkpoint_every_ms,
            replicas: h.replicas,
            replica_hosts: h.replica_hosts.clone(),
            epoch: h.epoch,
            migration_id: h.migration_id.clone(),
        }
    }
}

impl From<StoredHosted> for Hosted {
    fn from(h: StoredHosted) -> Self {
        Hosted {
            id: h.id,
            pid: h.pid,
            start_time: h.start_time,
            owner_uid: h.owner_uid,
            cgroup: h.cgroup,
            home: h.home,
            limits: Limits {
                cpu_millis: h.cpu_millis,
                mem_bytes: h.mem_bytes,
            },
            checkpoint_every_ms: h.checkpoint_every_ms,
            replicas: h.replicas,
            replica_hosts: h.replica_hosts,
            epoch: h.epoch,
            migration_id: h.migration_id,
        }
    }
}

/// Why the registry's store failed.
#[derive(Debug, thiserror::Error)]
#[error("managed processes store {path}: {why}")]
pub struct StoreError {
    /// The file.
    pub path: String,
    /// What failed.
    pub why: String,
}

/// The registry of one agent.
#[derive(Debug, Default)]
pub struct Managed {
    db: Option<Database>,
    entries: Mutex<BTreeMap<String, Entry>>,
    hosted: Mutex<BTreeMap<String, Hosted>>,
    /// Peers' `Load` answers, kept a few seconds.
    pub(crate) load_cache: Mutex<HashMap<String, (Instant, LoadReply)>>,
    /// CPU time samples per (pid, start time), for the current CPU share.
    pub(crate) cpu_samples: Mutex<HashMap<(i32, u64), (Instant, u64)>>,
    /// The last `/proc/stat` sample (idle, total jiffies).
    pub(crate) host_sample: Mutex<Option<(Instant, u64, u64)>>,
}

impl Managed {
    /// Opens (or creates) `managed.redb` in `dir` and loads the registry.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("managed.redb");
        let err = |why: String| StoreError {
            path: path.display().to_string(),
            why,
        };
        let db = crate::node::db::open(&path).map_err(|e| err(e.to_string()))?;
        let mut entries = BTreeMap::new();
        let mut hosted = BTreeMap::new();
        {
            let w = db.begin_write().map_err(|e| err(e.to_string()))?;
            w.open_table(MANAGED).map_err(|e| err(e.to_string()))?;
            w.open_table(HOSTED).map_err(|e| err(e.to_string()))?;
            w.commit().map_err(|e| err(e.to_string()))?;
            let r = db.begin_read().map_err(|e| err(e.to_string()))?;
            let t = r.open_table(MANAGED).map_err(|e| err(e.to_string()))?;
            for item in t.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = item.map_err(|e| err(e.to_string()))?;
                match serde_json::from_slice::<Entry>(v.value()) {
                    Ok(mut e) => {
                        // Whatever drained its output ended with the previous agent.
                        e.drained = true;
                        entries.insert(e.id.clone(), e);
                    }
                    Err(e) => tracing::warn!(id = k.value(), %e, "unreadable managed entry"),
                }
            }
            // Processes hosted for peers, as a previous run of the agent noted them (the
            // janitor forgets those that ended).
            let t = r.open_table(HOSTED).map_err(|e| err(e.to_string()))?;
            for item in t.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = item.map_err(|e| err(e.to_string()))?;
                match serde_json::from_slice::<StoredHosted>(v.value()) {
                    Ok(h) => {
                        hosted.insert(h.id.clone(), Hosted::from(h));
                    }
                    Err(e) => tracing::warn!(id = k.value(), %e, "unreadable hosted entry"),
                }
            }
        }
        Ok(Self {
            db: Some(db),
            entries: Mutex::new(entries),
            hosted: Mutex::new(hosted),
            ..Default::default()
        })
    }

    fn persist_hosted(&self, id: &str, h: Option<&Hosted>) {
        let Some(db) = &self.db else { return };
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(HOSTED)?;
                match h {
                    Some(h) => {
                        t.insert(id, serde_json::to_vec(&StoredHosted::from(h))?.as_slice())?;
                    }
                    None => {
                        t.remove(id)?;
                    }
                }
            }
            w.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(id, %e, "cannot write the hosted processes store");
        }
    }

    fn persist(&self, id: &str, entry: Option<&Entry>) {
        let Some(db) = &self.db else { return };
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(MANAGED)?;
                match entry {
                    Some(e) => {
                        t.insert(id, serde_json::to_vec(e)?.as_slice())?;
                    }
                    None => {
                        t.remove(id)?;
                    }
                }
            }
            w.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(id, %e, "cannot write the managed processes store");
        }
    }

    /// Adds `entry` under a new id, which it returns.
    pub fn insert(&self, mut entry: Entry) -> Entry {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entry.id = loop {
            let id = new_id();
            if !map.contains_key(&id) {
                break id;
            }
        };
        map.insert(entry.id.clone(), entry.clone());
        drop(map);
        self.persist(&entry.id, Some(&entry));
        entry
    }

    /// Adds (or replaces) `entry` under its own id: a process taken over here after its
    /// host was lost keeps the id it had (agent/src/lease/takeover.rs).
    pub fn adopt(&self, entry: Entry) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.id.clone(), entry.clone());
        self.persist(&entry.id, Some(&entry));
    }

    /// The entry `id`, if it exists and `uid` may see it.
    pub fn get(&self, id: &str, uid: u32, root: bool) -> Option<Entry> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|e| e.visible_to(uid, root)).cloned()
    }

    /// Every entry `uid` may see.
    pub fn list(&self, uid: u32, root: bool) -> Vec<Entry> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .filter(|e| e.visible_to(uid, root))
            .cloned()
            .collect()
    }

    /// Changes entry `id` with `f` (if it still exists) and writes it; returns the result.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) -> Option<Entry> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.get_mut(id)?;
        f(e);
        let e = e.clone();
        drop(map);
        self.persist(id, Some(&e));
        Some(e)
    }

    /// Forgets entry `id`.
    pub fn remove(&self, id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.persist(id, None);
    }

    /// Notes (or replaces) a process hosted here for a peer.
    pub fn host(&self, h: Hosted) {
        self.persist_hosted(&h.id.clone(), Some(&h));
        self.hosted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h.id.clone(), h);
    }

    /// Forgets the process `id` hosted here (it ended).
    pub fn unhost(&self, id: &str) {
        self.hosted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.persist_hosted(id, None);
    }

    /// The process `id` hosted here.
    pub fn hosted(&self, id: &str) -> Option<Hosted> {
        let map = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).cloned()
    }

    /// Changes the process `id` hosted here with `f` (and stores it).
    pub fn update_hosted(&self, id: &str, f: impl FnOnce(&mut Hosted)) -> Option<Hosted> {
        let h = {
            let mut map = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
            let h = map.get_mut(id)?;
            f(h);
            h.clone()
        };
        self.persist_hosted(id, Some(&h));
        Some(h)
    }

    /// Every process hosted here.
    pub fn hosted_list(&self) -> Vec<Hosted> {
        let map = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// The hosted process with PID `pid`, if it is still that process.
    pub fn hosted_by_pid(&self, pid: i32) -> Option<Hosted> {
        let map = self.hosted.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .find(|h| h.pid == pid && alive(h.pid, h.start_time))
            .cloned()
    }

    /// How many managed processes run on this host (its own and those it hosts).
    pub fn running_here(&self) -> u32 {
        let own = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.runs_on.is_empty() && e.exit.is_none() && alive(e.pid, e.start_time))
            .count();
        let hosted = self
            .hosted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| alive(h.pid, h.start_time))
            .count();
        u32::try_from(own + hosted).unwrap_or(u32::MAX)
    }
}

/// A short id: a letter, then three letters or digits (e.g. `k3f9`).
fn new_id() -> String {
    const FIRST: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const REST: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|_| b = (now_ms() as u32 ^ std::process::id()).to_le_bytes());
    let mut id = String::new();
    id.push(char::from(FIRST[usize::from(b[0]) % FIRST.len()]));
    for x in &b[1..] {
        id.push(char::from(REST[usize::from(*x) % REST.len()]));
    }
    id
}

/// What `/proc/PID/stat` says of a process: state letter, CPU time (utime + stime, clock
/// ticks) and start time.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// R, S, D, T, t, Z ...
    pub state: char,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Clock ticks after boot.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: utime is field 14, stime 15, starttime 22.
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        cpu_ticks: num(14)? + num(15)?,
        start_time: num(22)?,
    })
}

/// Whether `pid` is still the process that started at `start_time` (a zombie counts: it has
/// not been reaped yet).
pub fn alive(pid: i32, start_time: u64) -> bool {
    proc_stat(pid).is_some_and(|s| s.start_time == start_time)
}

/// Resident memory of `pid` in bytes (`VmRSS`).
pub fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The status text of an ended process: `finished N` or `killed SIGNAME`.
pub fn exit_text(code: i32, signal: i32) -> String {
    if signal != 0 {
        match nix::sys::signal::Signal::try_from(signal) {
            Ok(s) => format!("killed {}", s.as_str()),
            Err(_) => format!("killed {signal}"),
        }
    } else {
        format!("finished {code}")
    }
}

/// Starts the janitor: every second, bounds the output files of detached processes and
/// removes the cgroups of processes (own and hosted) that ended.
pub fn start(node: NodeRef) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(JANITOR_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = node.clone();
            let _ = tokio::task::spawn_blocking(move || janitor(&n)).await;
        }
    });
}

fn janitor(node: &NodeRef) {
    let me = &node.config.name;
    let cap = output::cap();
    for e in node.managed.list(0, true) {
        let gone = !alive(e.pid, e.start_time) || proc_stat(e.pid).is_some_and(|s| s.state == 'Z');
        if e.detached {
            output::trim(&output::path(&e.id), cap);
        }
        if e.cgroup && gone && cgroup::remove(&cgroup::name(&e.id, me)) {
            node.managed.update(&e.id, |e| e.cgroup = false);
        }
        if e.exit.is_none() && e.ended_unix_ms == 0 && !alive(e.pid, e.start_time) {
            node.managed.update(&e.id, |e| e.ended_unix_ms = now_ms());
        }
    }
    let hosted: Vec<Hosted> = node
        .managed
        .hosted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    let known: std::collections::BTreeSet<String> = node
        .managed
        .entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .chain(hosted.iter().map(|h| &h.id))
        .cloned()
        .collect();
    cgroup::sweep(me, &|id| known.contains(id));
    for h in hosted {
        if alive(h.pid, h.start_time) {
            continue;
        }
        if !h.cgroup || cgroup::remove(&cgroup::name(&h.id, me)) {
            node.managed.unhost(&h.id);
        }
    }
}
