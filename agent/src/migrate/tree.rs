//! `ferry migrate PID --tree`: the process moves with all its descendants (docs/migration.md,
//! "Trees"). One image holds the whole tree (as `ferry dump --tree` makes it); every member
//! becomes a `ferry-stub` on the origin, keeping its PID, parent and children, so the tree's
//! shape stays there; each member's relayed descriptors are its own `Peer.Relay` stream,
//! named [`crate::relay::member_id`] (the root's is the migration's own id). Pipes and
//! sockets joining members travel in the image.
//!
//! The commit point is the root's `execve`: the root is turned into its stub first; if that
//! fails, nothing was destroyed and the whole tree is given back. Once it happened the
//! migration is committed: every other member is made to die with its tracer
//! (`PTRACE_O_EXITKILL`) and turned into its stub in turn; a member whose `execve` fails then
//! is ended (its copy runs on the destination; its own relayed descriptors are cut). So a
//! restarted agent decides from the root alone: the root is a stub → commit (a member still
//! its original — the agent died between the root's `execve` and the next step — is ended);
//! the root is not → abort (no member can be a stub).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use ferry_proto::v1::{FileCheck, MemberRelays, MigrationRecord, TransferHeader, TreeMember};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::origin::{Cmd, Ev, TracerJob, is_stub, now_us};
use super::{chain, fault, negotiate, start_time};
use crate::dump::{self, DumpOptions};
use crate::image::ImageReader;
use crate::node::NodeRef;
use crate::relay::dest::Endpoints;
use crate::relay::origin::{Plan, become_stub_of};
use crate::relay::{member_id, stub_path};
use crate::restore::{RestoreError, RestoreOptions, RestoreSummary};

/// What the tree's tracer hands to the migration besides its events.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The members other than the root (PID and start time here), known once frozen.
    pub(super) members: Mutex<Vec<TreeMember>>,
    /// The members that became stubs, with their relay plans.
    pub(super) stubbed: Mutex<Vec<StubbedMember>>,
    /// Members that could not become stubs after the commit point (ended).
    pub(super) lost: Mutex<Vec<String>>,
}

impl Shared {
    /// The members other than the root, once frozen.
    pub(super) fn members(&self) -> Vec<TreeMember> {
        lock(&self.members).clone()
    }
}

/// A member (other than the root) turned into its stub.
#[derive(Debug)]
pub(super) struct StubbedMember {
    pub(super) pid: i32,
    /// Its PID in the image (its relay is named with it).
    pub(super) image_pid: i32,
    pub(super) start: u64,
    pub(super) plan: Plan,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The files of every process of the tree of `pid`, for the negotiation: a file held for
/// writing by one member and mapped or read by another is checked as read.
pub(super) fn file_checks(pid: i32) -> Vec<FileCheck> {
    let mut all: BTreeMap<String, FileCheck> = BTreeMap::new();
    let mut stack = vec![pid];
    let mut seen = std::collections::HashSet::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        for f in negotiate::file_checks(p) {
            match all.get(&f.path) {
                Some(old) if !old.written || f.written => {}
                _ => {
                    all.insert(f.path.clone(), f);
                }
            }
        }
        stack.extend(descendants_of(p));
    }
    all.into_values().collect()
}

/// The children of every thread of `pid`.
pub(super) fn descendants_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The tracer of a tree: freeze the whole tree, header (every member's relayed
/// descriptors), shipped files, image; then wait for the decision, and at Commit turn the
/// root, then every other member, into its stub.
pub(super) fn tracer(job: TracerJob, shared: Arc<Shared>) {
    let TracerJob {
        node,
        pid,
        id,
        codec,
        socket,
        ship,
        chunks,
        events,
        cmds,
        wire,
        precopied,
        raw,
        as_user,
        proxy_protocol,
        live,
        cancel,
        ..
    } = job;
    let opts = DumpOptions {
        codec,
        relay_sockets: true,
        ..DumpOptions::default()
    };
    // Live: the rounds while the tree runs, then the final stop when our turn comes. The
    // tracking ends when `pre` is dropped: at every return below (the members run again, or
    // are stubs whose execve took the old memory).
    let mut pre = None;
    if let Some(max_downtime) = live {
        let send = |mut p: ferry_proto::v1::PrecopyPages| {
            p.migration_id = id.clone();
            let sent = super::origin::Sent {
                wire: &wire,
                raw: &precopied,
            };
            super::origin::send_precopy(&chunks, sent, &cancel, p)
        };
        match super::tree_live::precopy(pid, opts, max_downtime, &send, &events) {
            Ok(p) => pre = Some(p),
            Err(why) => {
                let _ = events.send(Ev::Failed(why));
                return;
            }
        }
        match cmds.recv() {
            Ok(Cmd::Freeze) => {}
            _ => {
                drop(pre.take());
                let _ = events.send(Ev::Thawed);
                return;
            }
        }
    }
    let at_us = now_us();
    let held = match &mut pre {
        Some(p) => {
            let checked = p.pids();
            dump::hold_tree_with(Pid::from_raw(pid), opts, &|m| checked.contains(&m), |f| {
                p.finish(f)
            })
        }
        None => dump::hold_tree(Pid::from_raw(pid), opts),
    };
    crate::metrics::dump(held.is_ok());
    let mut held = match held {
        Ok(h) => h,
        Err(e) => {
            drop(pre.take());
            let _ = events.send(Ev::Failed(format!("freeze the tree: {}", chain(&e))));
            return;
        }
    };
    let n = held.tree.processes.len();
    let host_pid = |held: &dump::HeldTree, i: usize| {
        held.tasks(i)
            .map_or(0, |t| t.first().map_or(0, |t| t.tracee.pid().as_raw()))
    };
    if let Some(p) = &pre {
        let hosts: Vec<i32> = (0..n).map(|i| host_pid(&held, i)).collect();
        match p.mark(&mut held.tree, &hosts) {
            Ok(kept) => {
                tracing::debug!(migration = %id, pages = kept, "pages of the tree on the destination already")
            }
            Err(e) => {
                let _ = held.thaw();
                drop(pre.take());
                let _ = events.send(Ev::Failed(format!("pre-copied pages: {}", chain(&e))));
                return;
            }
        }
    }
    // A non-root caller: every member must be theirs, and dumpable, now that none can change.
    if let Some(caller) = as_user {
        for i in 0..n {
            let p = host_pid(&held, i);
            let refused = match crate::node::authorize_migrate(caller, p) {
                Err(s) => Some(s.message().to_string()),
                Ok(()) if held.tree.processes[i].attrs.dumpable != 1 => Some(format!(
                    "permission denied: process {p} of the tree is not dumpable"
                )),
                Ok(()) => None,
            };
            if let Some(why) = refused {
                let _ = held.thaw();
                drop(pre.take());
                let _ = events.send(Ev::Refused { why, at_us });
                return;
            }
        }
    }
    let total: u64 = held
        .tree
        .processes
        .iter()
        .flat_map(|p| &p.mm.vmas)
        .map(|v| v.stored_pages() * 4096)
        .sum();
    *lock(&shared.members) = (1..n)
        .map(|i| {
            let p = host_pid(&held, i);
            TreeMember {
                pid: p,
                start_time: start_time(p).unwrap_or(0),
                remote_pid: 0,
            }
        })
        .collect();
    let _ = events.send(Ev::Frozen {
        since: held.since,
        total,
        at_us,
    });
    let mut plans = Vec::with_capacity(n);
    let within = crate::relay::origin::pipes_within(&held.tree.processes);
    for i in 0..n {
        match Plan::capture_of(
            Pid::from_raw(host_pid(&held, i)),
            &held.tree.processes[i],
            Some(&within),
        ) {
            Ok(p) => plans.push(p),
            Err(e) => {
                let why = format!("relay of pid {}: {}", host_pid(&held, i), chain(&e));
                let _ = held.thaw();
                drop(pre.take());
                let _ = events.send(Ev::Failed(why));
                return;
            }
        }
    }
    // Each --proxy-protocol port names the member that listens on it (the root's error
    // names what it listens on when none does).
    for &port in &proxy_protocol {
        let owner = plans
            .iter()
            .position(|p| {
                p.endpoints.iter().any(|e| {
                    e.kind == crate::relay::Kind::TcpListen
                        && e.local.is_some_and(|a| u32::from(a.port()) == port)
                })
            })
            .unwrap_or(0);
        if let Err(e) = plans[owner].proxy_protocol(&[port]) {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Failed(e.to_string()));
            return;
        }
    }
    // What each relay needs, kept before any stub can exist.
    for (i, plan) in plans.iter().enumerate() {
        let key = if i == 0 {
            id.clone()
        } else {
            member_id(&id, held.tree.processes[i].pid)
        };
        if let Err(e) = node.store.put_relay(&key, &plan.endpoints()) {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Failed(format!("record the relay: {}", chain(&e))));
            return;
        }
    }
    let header = TransferHeader {
        migration_id: id.clone(),
        relays: plans[0].endpoints(),
        image_bytes_hint: total,
        origin_pid: pid,
        members: (1..n)
            .map(|i| MemberRelays {
                pid: held.tree.processes[i].pid,
                relays: plans[i].endpoints(),
            })
            .collect(),
        ..Default::default()
    };
    let sent = super::origin::send_image(header, pid, &ship, &chunks, &wire, &raw, total, |out| {
        held.write_counting(out, codec, Some(&raw))
            .map_err(|e| chain(&e))
    });
    drop(chunks);
    match sent {
        Ok(stats) => {
            let _ = events.send(Ev::Written(stats));
        }
        Err(why) => {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Failed(why));
            return;
        }
    }
    match cmds.recv() {
        Ok(Cmd::Commit) => {}
        // A tree is never lazy (refused before).
        Ok(Cmd::Thaw | Cmd::Freeze | Cmd::Lazy(_)) | Err(_) => {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::Thawed);
            return;
        }
    }
    let stub = match stub_path() {
        Ok(s) => s,
        Err(e) => {
            let _ = held.thaw();
            drop(pre.take());
            let _ = events.send(Ev::StubFailed(chain(&e)));
            return;
        }
    };
    // The commit point: the root's execve. Before it, any failure gives the whole tree back.
    let root_tasks = held.tasks(0).unwrap_or(&[]);
    if let Err(e) = become_stub_of(
        root_tasks,
        &held.tree.processes[0],
        &plans[0],
        &stub,
        &id,
        &socket,
        false,
    ) {
        let _ = held.thaw();
        drop(pre.take());
        let _ = events.send(Ev::StubFailed(chain(&e)));
        return;
    }
    // Committed. Every other member dies with us from now on (its copy takes over).
    for i in 1..n {
        for t in held.tasks(i).unwrap_or(&[]) {
            let _ = nix::sys::ptrace::setoptions(
                t.tracee.pid(),
                nix::sys::ptrace::Options::PTRACE_O_EXITKILL
                    | nix::sys::ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
            );
        }
    }
    if let Some(root) = held.take_member(0)
        && let Err(e) = root.detach_as_is()
    {
        tracing::warn!(migration = %id, error = %chain(&e), "detach the root's stub");
    }
    let mut plans = plans.into_iter();
    let root_plan = plans.next();
    // FERRY_FAULT member-stub-fail: the first other member's execve fails (a stub path that
    // does not exist), after the commit point.
    let missing =
        std::path::PathBuf::from("/nonexistent/ferry-stub (FERRY_FAULT member-stub-fail)");
    for (i, plan) in (1..n).zip(plans) {
        let image_pid = held.tree.processes[i].pid;
        let host = host_pid(&held, i);
        let start = start_time(host).unwrap_or(0);
        let made = become_stub_of(
            held.tasks(i).unwrap_or(&[]),
            &held.tree.processes[i],
            &plan,
            if i == 1 && fault("member-stub-fail") {
                &missing
            } else {
                &stub
            },
            &member_id(&id, image_pid),
            &socket,
            true,
        );
        let Some(frozen) = held.take_member(i) else {
            continue;
        };
        match made {
            Ok(()) => {
                if let Err(e) = frozen.detach_as_is() {
                    tracing::warn!(migration = %id, pid = host, error = %chain(&e), "detach a member's stub");
                }
                lock(&shared.stubbed).push(StubbedMember {
                    pid: host,
                    image_pid,
                    start,
                    plan,
                });
            }
            Err(e) => {
                // Past the commit point its copy is the one: the original goes.
                let why = format!(
                    "pid {host} could not become a stub ({}); its original was ended, its copy \
                     runs on without its own relayed descriptors",
                    chain(&e)
                );
                tracing::error!(migration = %id, "{why}");
                let _ = frozen.kill();
                let _ = node.store.remove_relay(&member_id(&id, image_pid));
                lock(&shared.lost).push(why);
            }
        }
    }
    match root_plan {
        Some(p) => {
            let _ = events.send(Ev::Stubbed(p));
        }
        None => {
            let _ = events.send(Ev::StubFailed("no root plan".into()));
        }
    }
}

/// Origin, after Commit was acknowledged: the relay of every member that became a stub.
pub(super) fn relay_members(node: &NodeRef, shared: &Shared, id: &str, to: &str) {
    for m in lock(&shared.stubbed).drain(..) {
        super::origin::keep_relaying(
            node.clone(),
            Some(m.plan),
            m.pid,
            m.start,
            member_id(id, m.image_pid),
            to.to_string(),
        );
    }
}

/// The PID of `pid` as its own PID namespace sees it (what the image names it).
fn ns_pid(pid: i32) -> Option<i32> {
    crate::proc::parse_status(&crate::proc::read(pid, "status").ok()?)
        .ok()
        .map(|s| s.ns_pid)
}

/// On start, for a tree committed before the agent stopped: ends every member still its
/// original (the agent stopped between the root's `execve` and the members' becoming
/// stubs: their copies take over on the destination).
pub(super) fn end_unstubbed_members(rec: &MigrationRecord) {
    for m in &rec.members {
        if start_time(m.pid) == Some(m.start_time) && !is_stub(m.pid, m.start_time) {
            tracing::warn!(migration = %rec.migration_id, pid = m.pid, "a member of the committed tree is still its original: ending it");
            let _ = kill(Pid::from_raw(m.pid), Signal::SIGKILL);
        }
    }
}

/// On start: serves again the stubs of the members of a committed tree.
pub(super) fn resume_member_relays(node: &NodeRef, rec: &MigrationRecord) {
    for m in &rec.members {
        let key = member_id(&rec.migration_id, ns_pid(m.pid).unwrap_or(m.pid));
        match node.store.relay(&key) {
            Ok(Some(_)) if is_stub(m.pid, m.start_time) => {
                super::origin::keep_relaying(
                    node.clone(),
                    None,
                    m.pid,
                    m.start_time,
                    key,
                    rec.peer.clone(),
                );
            }
            Ok(Some(_)) => {
                let _ = node.store.remove_relay(&key);
            }
            _ => {}
        }
    }
}

/// Destination: the local endpoints of every member but the root, by its PID in the image.
pub(super) fn member_endpoints(header: &TransferHeader) -> Result<Vec<(i32, Endpoints)>, String> {
    header
        .members
        .iter()
        .map(|m| {
            Endpoints::make(&m.relays)
                .map(|e| (m.pid, e))
                .map_err(|e| format!("relay endpoints of pid {}: {}", m.pid, chain(&e)))
        })
        .collect()
}

/// A member copy the destination made, stopped.
#[derive(Debug)]
pub(super) struct MadeMember {
    /// Its PID here, and start time.
    pub(super) pid: i32,
    pub(super) start: u64,
    /// Its PID on the origin (in the image).
    pub(super) origin_pid: i32,
    pub(super) endpoints: Endpoints,
}

/// Destination: restores the whole tree of `reader`, stopped, each member with its relay
/// endpoints in place of the descriptors that stayed on the origin.
pub(super) fn restore<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
    root: &Endpoints,
    members: Vec<(i32, Endpoints)>,
    staged: &super::tree_live::Staging,
) -> Result<(RestoreSummary, Vec<MadeMember>), RestoreError> {
    let image_pids: Vec<i32> = reader.tree().processes.iter().map(|p| p.pid).collect();
    let mut subs: HashMap<i32, HashMap<i32, RawFd>> = HashMap::new();
    if let Some(&r) = image_pids.first() {
        subs.insert(r, root.substitutes().into_iter().collect());
    }
    for (p, e) in &members {
        subs.insert(*p, e.substitutes().into_iter().collect());
    }
    let write = |image_pid: i32, pid: Pid, vmas: &[crate::state::VmaState]| {
        staged.write(image_pid, pid, vmas)
    };
    let summary = crate::restore::restore_tree_with_pages(reader, opts, &subs, Some(&write))?;
    let mut by_pid: HashMap<i32, Endpoints> = members.into_iter().collect();
    let made = image_pids
        .iter()
        .skip(1)
        .zip(&summary.others)
        .filter_map(|(&origin_pid, &pid)| {
            Some(MadeMember {
                pid,
                start: start_time(pid).unwrap_or(0),
                origin_pid,
                endpoints: by_pid.remove(&origin_pid)?,
            })
        })
        .collect();
    Ok((summary, made))
}

/// Destination: the record's members, as made.
pub(super) fn record_members(made: &[MadeMember]) -> Vec<TreeMember> {
    made.iter()
        .map(|m| TreeMember {
            pid: m.pid,
            start_time: m.start,
            remote_pid: m.origin_pid,
        })
        .collect()
}

/// Destination: holds every member's endpoints for its relay (and starts its watcher).
pub(super) fn hold_members(node: &NodeRef, id: &str, made: Vec<MadeMember>) {
    for m in made {
        node.relays
            .hold_dest_member(&member_id(id, m.origin_pid), m.pid, m.endpoints);
    }
}

/// Destination: ends the member copies still the processes made (an abort).
pub(super) fn kill_members(node: &NodeRef, id: &str, members: &[TreeMember]) {
    for m in members.iter().rev() {
        if start_time(m.pid) == Some(m.start_time) {
            let _ = kill(Pid::from_raw(m.pid), Signal::SIGKILL);
        }
        drop(node.relays.take_dest(&member_id(id, m.remote_pid)));
    }
}

/// Destination: lets every member copy run (at Commit, before the root), deepest first.
pub(super) fn cont_members(members: &[TreeMember]) {
    for m in members.iter().rev() {
        if start_time(m.pid) == Some(m.start_time)
            && let Err(e) = kill(Pid::from_raw(m.pid), Signal::SIGCONT)
        {
            tracing::warn!(pid = m.pid, %e, "SIGCONT a member");
        }
    }
}

/// The warnings a tree migration adds to its summary.
pub(super) fn summary_warnings(shared: &Shared) -> Vec<String> {
    lock(&shared.lost).clone()
}
