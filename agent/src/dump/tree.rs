//! Checkpointing a process and all its descendants (`ferry dump --tree`).
//!
//! The tree is frozen top-down: a frozen process cannot fork, so once a process is stopped
//! its list of children (`/proc/PID/task/*/children`) is final, and the children found there
//! are frozen in turn. The whole tree is scanned again until a pass finds nobody new.
//! Children that have exited but were not waited for (zombies) are recorded with their wait
//! status, never seized. Then every process is collected as a single process is, and what
//! joins processes is worked out: descriptions they share (`kcmp` across processes), pipes
//! only they hold (one queue stored), sessions and groups. Anything the restore could not
//! rebuild faithfully is refused before a byte is written; every process is then released
//! untouched.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use nix::unistd::Pid;

use super::freeze::Frozen;
use super::{DumpError, DumpOptions, DumpSummary, check_process, collect, precheck, write_image};
use crate::proc;
use crate::state::{FdKind, ProcessState, TreeState, ZombieState};
use crate::sys;

/// Checkpoints `pid` and every descendant into the image file `out`.
pub fn dump_tree(pid: Pid, out: &Path, opts: DumpOptions) -> Result<DumpSummary, DumpError> {
    super::check_output(out)?;
    super::files::forget_outside_scan();
    // Every process already there is checked from /proc before anything is frozen: a refused
    // tree is never stopped, and the freeze itself stays short (reading each member's fds and
    // maps took most of it). One forked during the freeze is checked by `collect`.
    let mut stack = vec![pid.as_raw()];
    while let Some(p) = stack.pop() {
        let zombie = proc::read(p, "stat")
            .ok()
            .and_then(|s| proc::parse_stat(&s).ok())
            .is_some_and(|s| s.state == 'Z');
        if !zombie {
            precheck(Pid::from_raw(p), &opts, true, p != pid.as_raw())
                .map_err(|e| in_member(pid, p, e))?;
        }
        stack.extend(children(p));
    }
    let t0 = Instant::now();
    let (frozen, zombies) = freeze_tree(pid)?;
    let seize = t0.elapsed();
    tracing::debug!(elapsed = ?t0.elapsed(), processes = frozen.len(), "tree frozen");
    let mut warnings = Vec::new();
    // `socks` holds sockets in repair mode: dropped before `frozen` on failure, so they leave
    // repair mode before the processes run again.
    let opts = opts.ending();
    let (processes, mut socks) = collect_tree(&frozen, &opts, pid, &mut warnings)?;
    for (f, p) in frozen.iter().zip(&processes) {
        super::check_aio_in_flight(f, p)
            .map_err(|e| in_member(pid, f.leader().tracee.pid().as_raw(), e))?;
    }
    let mut tree = TreeState { processes, zombies };
    tree.session_layout().map_err(DumpError::Unsupported)?;
    // Last, once nothing else can refuse: what only accepting pending connections reads.
    {
        let mut procs: Vec<(Pid, &mut ProcessState)> = frozen
            .iter()
            .map(|f| f.leader().tracee.pid())
            .zip(tree.processes.iter_mut())
            .collect();
        let mut refs: Vec<&mut super::sockets::SocketDump> = socks.iter_mut().collect();
        super::sockets::take_pending(&mut refs, &mut procs)?;
    }
    let tracees: Vec<_> = frozen.iter().map(|f| &f.leader().tracee).collect();
    let stats = write_image(&tracees, &tree, out, opts.codec, opts.seal.as_ref())?;

    let frozen_for = t0.elapsed();
    let tasks = frozen.iter().map(|f| f.tasks.len()).sum();
    if !opts.leave_running {
        // Before the sockets go, so no peer gets RST before the restore.
        for (f, p) in frozen.iter().zip(&tree.processes) {
            crate::netlock::lock(f.leader().tracee.pid(), p)?;
        }
    }
    // Children first: a parent never sees a child of the tree go.
    for f in frozen.into_iter().rev() {
        if opts.leave_running {
            f.release()?;
        } else {
            f.kill()?;
        }
    }
    // The processes are gone: their connections may now be discarded without a word to the
    // peers.
    for s in socks {
        s.held.close_silently();
    }
    Ok(DumpSummary {
        pid: pid.as_raw(),
        stats,
        frozen: frozen_for,
        seize,
        tasks,
        warnings,
        processes: tree.processes.len(),
    })
}

/// Names the member an error is about, unless it is the root (which the caller names).
fn in_member(root: Pid, member: i32, e: DumpError) -> DumpError {
    if member == root.as_raw() {
        e
    } else {
        DumpError::Member {
            pid: member,
            source: Box::new(e),
        }
    }
}

/// The state of every process of a frozen tree (`frozen`, root first), read as a tree:
/// descriptions and sockets shared between members are marked, each pipe queue and shared
/// memory page kept once. Returns the sockets held (some in repair mode) with the states.
pub(super) fn collect_tree(
    frozen: &[Frozen],
    opts: &DumpOptions,
    root: Pid,
    warnings: &mut Vec<String>,
) -> Result<(Vec<ProcessState>, Vec<super::sockets::SocketDump>), DumpError> {
    let members: Vec<i32> = frozen
        .iter()
        .map(|f| f.leader().tracee.pid().as_raw())
        .collect();
    // fds and VMAs are checked again by `collect`.
    for f in frozen {
        let p = f.leader().tracee.pid();
        check_process(p).map_err(|e| in_member(root, p.as_raw(), e))?;
    }
    let mut processes = Vec::with_capacity(frozen.len());
    let mut socks = Vec::with_capacity(frozen.len());
    let sockets_of: Vec<HashSet<u64>> = members.iter().map(|&m| socket_inodes(m)).collect();
    for (i, f) in frozen.iter().enumerate() {
        let mut s = super::sockets::SocketDump::capture(opts.sockets());
        s.members = members.clone();
        // A socket connected to one of another member is half of a pair between members.
        s.member_sockets = sockets_of
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, set)| set.iter().copied())
            .collect();
        processes.push(
            collect(f, opts, &members, warnings, &mut s, None)
                .map_err(|e| in_member(root, members[i], e))?,
        );
        warnings.append(&mut s.warnings);
        socks.push(s);
    }
    if !opts.relay_sockets {
        super::sockets::refuse_unaccepted_across(&socks, &processes, &members)?;
    }
    mark_shared(&members, &mut processes)?;
    mark_shared_with_parent(&members, &mut processes)?;
    // Read while every member is still frozen: the page frames of the pages a child shares
    // with its parent.
    super::mm::mark_inherited(&members, &mut processes)?;
    keep_one_queue(&mut processes);
    super::mm::drop_repeated_shmem_pages(&mut processes);
    Ok((processes, socks))
}

/// Inodes of the sockets `pid` holds.
fn socket_inodes(pid: i32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|e| {
            let l = std::fs::read_link(e.path()).ok()?;
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Children of every thread of `pid`.
pub(super) fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let path = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(path) {
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out
}

/// Freezes `root` and its descendants, parents before children, re-scanning until stable.
fn freeze_tree(root: Pid) -> Result<(Vec<Frozen>, Vec<ZombieState>), DumpError> {
    let mut frozen = vec![Frozen::seize(root)?];
    let mut zombies: Vec<ZombieState> = Vec::new();
    let mut known: HashSet<i32> = HashSet::from([root.as_raw()]);
    loop {
        let mut found = false;
        let mut i = 0;
        while i < frozen.len() {
            let parent = frozen[i].leader().tracee.pid().as_raw();
            for c in children(parent) {
                if !known.insert(c) {
                    continue;
                }
                found = true;
                let stat = proc::parse_stat(&proc::read(c, "stat")?)?;
                if stat.state == 'Z' {
                    let status = stat.exit_code;
                    let ns_pid = proc::parse_status(&proc::read(c, "status")?)?.ns_pid;
                    zombies.push(ZombieState {
                        pid: ns_pid,
                        ppid: ns_pid_of(parent)?,
                        pgid: stat.pgrp,
                        sid: stat.session,
                        status,
                    });
                    continue;
                }
                frozen.push(Frozen::seize(Pid::from_raw(c))?);
            }
            i += 1;
        }
        if !found {
            break;
        }
    }
    Ok((frozen, zombies))
}

fn ns_pid_of(pid: i32) -> Result<i32, DumpError> {
    Ok(proc::parse_status(&proc::read(pid, "status")?)?.ns_pid)
}

/// A descriptor that is the same open file description as one of an earlier process becomes
/// [`FdKind::Shared`]. Only descriptors of the same inode can share a description.
fn mark_shared(members: &[i32], processes: &mut [ProcessState]) -> Result<(), DumpError> {
    // (dev, ino) -> descriptions seen so far: (host pid, image pid, fd).
    type Seen = Vec<(i32, i32, i32)>;
    let mut seen: HashMap<(u64, u64), Seen> = HashMap::new();
    for (host, p) in members.iter().zip(processes.iter_mut()) {
        let mut mine = Vec::new();
        for f in p.fds.iter_mut() {
            if matches!(f.kind, FdKind::Dup { .. }) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(format!("/proc/{host}/fd/{}", f.fd)) else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            let mut shared = None;
            for &(other_host, other_pid, other_fd) in seen.get(&key).into_iter().flatten() {
                let same = sys::same_file_description_in(
                    Pid::from_raw(other_host),
                    other_fd,
                    Pid::from_raw(*host),
                    f.fd,
                )
                .map_err(|e| {
                    DumpError::Unsupported(format!(
                        "pid {} fd {}: kcmp failed ({e}); not supported",
                        p.pid, f.fd
                    ))
                })?;
                if same {
                    shared = Some((other_pid, other_fd));
                    break;
                }
            }
            match shared {
                Some((pid, fd)) => f.kind = FdKind::Shared { pid, fd },
                None => {
                    if matches!(f.kind, FdKind::DeletedFile { .. })
                        && seen.get(&key).is_some_and(|v| !v.is_empty())
                    {
                        return Err(DumpError::Unsupported(format!(
                            "pid {} fd {}: a second open file description of a file deleted while open is not supported yet",
                            p.pid, f.fd
                        )));
                    }
                    mine.push((key, (*host, p.pid, f.fd)));
                }
            }
        }
        for (key, v) in mine {
            seen.entry(key).or_default().push(v);
        }
    }
    // Locks of a shared description are listed in every holder; they are taken once, by the
    // process that creates the description.
    for p in processes.iter_mut() {
        let shared: HashSet<i32> = p
            .fds
            .iter()
            .filter(|f| matches!(f.kind, FdKind::Shared { .. }))
            .map(|f| f.fd)
            .collect();
        p.locks.retain(|l| !shared.contains(&l.fd));
    }
    Ok(())
}

/// Descriptor tables and filesystem contexts (`CLONE_FILES`, `CLONE_FS` without
/// `CLONE_THREAD`) a member shares with its parent become its `attrs.shares_with_parent`: the
/// restore forks it with the same flags. Members sharing one otherwise (two siblings whose
/// parent has left the object since) are refused, naming both: the restore makes the sharing
/// only from parent to child. `members` are the host PIDs of `processes`.
pub(super) fn mark_shared_with_parent(
    members: &[i32],
    processes: &mut [ProcessState],
) -> Result<(), DumpError> {
    let parent: Vec<Option<usize>> = processes
        .iter()
        .enumerate()
        .map(|(i, p)| members[..i].iter().position(|&m| m == p.ppid))
        .collect();
    let kinds = [
        (sys::Kcmp::Fs, libc::CLONE_FS as u32, "filesystem context"),
        (
            sys::Kcmp::Files,
            libc::CLONE_FILES as u32,
            "file descriptor table",
        ),
    ];
    let same = |a: usize, b: usize, what: sys::Kcmp| {
        sys::same_kernel_object(Pid::from_raw(members[a]), Pid::from_raw(members[b]), what)
            .unwrap_or(false)
    };
    for (what, bit, name) in kinds {
        // The group each member's object belongs to, by the first member holding it along
        // parent links.
        let mut group: Vec<usize> = (0..members.len()).collect();
        for i in 0..members.len() {
            processes[i].attrs.shares_with_parent &= !bit;
            if let Some(p) = parent[i]
                && same(i, p, what)
            {
                processes[i].attrs.shares_with_parent |= bit;
                group[i] = group[p];
            }
        }
        for i in 0..members.len() {
            for j in i + 1..members.len() {
                if group[i] != group[j] && same(i, j, what) {
                    return Err(DumpError::Unsupported(format!(
                        "pids {} and {} share their {name} though neither's parent shares it \
                         with them; restoring that sharing is not supported yet",
                        processes[i].pid, processes[j].pid
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The bytes queued in a pipe held by several processes travel once, with its first holder.
fn keep_one_queue(processes: &mut [ProcessState]) {
    let mut stored = HashSet::new();
    for p in processes.iter_mut() {
        for f in p.fds.iter_mut() {
            if let FdKind::LocalPipe { ino, queue } = &mut f.kind
                && queue.is_some()
                && !stored.insert(*ino)
            {
                *queue = None;
            }
        }
    }
}

/// A process tree frozen with its state collected (`ferry migrate --tree`), held until the
/// caller decides, as [`super::Held`] holds one process: write its image (to any writer), then
/// thaw it, or turn its members into something else and detach them one by one. Dropping it
/// thaws every member. The thread that called [`hold_tree`] is the tracer.
#[derive(Debug)]
pub struct HeldTree {
    /// The image's contents: every member (root first, tree order) and the zombies.
    pub tree: TreeState,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// When the freeze began.
    pub since: Instant,
    // Before `frozen`: the sockets leave repair mode before the processes run again.
    socks: Vec<super::sockets::SocketDump>,
    /// Each member's frozen threads, in the order of `tree.processes`; `None` once handed
    /// out ([`HeldTree::take_member`]).
    frozen: Vec<Option<Frozen>>,
}

/// Freezes `pid` and every descendant and collects their state, for a migration (the
/// processes stay until the caller decides); see [`HeldTree`].
pub fn hold_tree(pid: Pid, opts: DumpOptions) -> Result<HeldTree, DumpError> {
    precheck_tree(pid, opts, &|_| false)?;
    hold_tree_inner(pid, opts, |_| Ok(()))
}

/// What [`hold_tree`] refuses before it freezes anything, for every member of the tree of
/// `pid` but those `skip` names (by PID: a live migration checks each member before it
/// tracks its writes, which leaves marks in /proc that the check would take for the
/// member's own).
pub fn precheck_tree(
    pid: Pid,
    opts: DumpOptions,
    skip: &dyn Fn(i32) -> bool,
) -> Result<(), DumpError> {
    super::files::forget_outside_scan();
    let mut stack = vec![pid.as_raw()];
    while let Some(p) = stack.pop() {
        let zombie = proc::read(p, "stat")
            .ok()
            .and_then(|s| proc::parse_stat(&s).ok())
            .is_some_and(|s| s.state == 'Z');
        if !zombie && !skip(p) {
            precheck(Pid::from_raw(p), &opts, true, p != pid.as_raw())
                .map_err(|e| in_member(pid, p, e))?;
        }
        stack.extend(children(p));
    }
    Ok(())
}

/// [`hold_tree`] of a live migration's tree: `checked` names the members checked already
/// (their writes are tracked: see [`precheck_tree`]); the others (forked since) are checked
/// now. `under_freeze` runs once every member is frozen, before anything is collected, with
/// each member's frozen threads (root first): the last scan of written pages.
pub fn hold_tree_with(
    pid: Pid,
    opts: DumpOptions,
    checked: &dyn Fn(i32) -> bool,
    under_freeze: impl FnOnce(&[Frozen]) -> Result<(), DumpError>,
) -> Result<HeldTree, DumpError> {
    precheck_tree(pid, opts, checked)?;
    hold_tree_inner(pid, opts, under_freeze)
}

fn hold_tree_inner(
    pid: Pid,
    opts: DumpOptions,
    under_freeze: impl FnOnce(&[Frozen]) -> Result<(), DumpError>,
) -> Result<HeldTree, DumpError> {
    let since = Instant::now();
    let (frozen, zombies) = freeze_tree(pid)?;
    under_freeze(&frozen)?;
    let mut warnings = Vec::new();
    let (processes, socks) = collect_tree(&frozen, &opts, pid, &mut warnings)?;
    for (f, p) in frozen.iter().zip(&processes) {
        super::check_aio_in_flight(f, p)
            .map_err(|e| in_member(pid, f.leader().tracee.pid().as_raw(), e))?;
    }
    let tree = TreeState { processes, zombies };
    tree.session_layout().map_err(DumpError::Unsupported)?;
    // Every task in an interrupt stop: should the tracer die, each member simply goes on.
    for f in &frozen {
        super::settle(f)?;
    }
    Ok(HeldTree {
        tree,
        warnings,
        since,
        socks,
        frozen: frozen.into_iter().map(Some).collect(),
    })
}

impl HeldTree {
    /// Writes the image (manifest, then every member's pages in tree order) into `out`,
    /// adding the raw page bytes to `progress` as they go.
    pub fn write_counting<W: std::io::Write + Send>(
        &self,
        out: W,
        codec: crate::image::Codec,
        progress: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<(W, crate::image::WriteStats), DumpError> {
        let mut writer = crate::image::ImageWriter::new_tree(out, &self.tree, codec)
            .map_err(DumpError::Image)?;
        for (f, state) in self.frozen.iter().zip(&self.tree.processes) {
            let Some(f) = f else {
                return Err(DumpError::BadTarget {
                    pid: state.pid,
                    why: "a member was handed out before the image was written".into(),
                });
            };
            let t = &f.leader().tracee;
            super::mm::write_pages(t, &state.mm.vmas, &mut writer, progress)
                .map_err(|e| super::freeze::explain_death(t.pid(), e))?;
        }
        writer.finish().map_err(DumpError::Image)
    }

    /// The frozen threads of member `i` (tree order, the root 0), leader first.
    pub fn tasks(&self, i: usize) -> Option<&[super::freeze::FrozenTask]> {
        self.frozen
            .get(i)
            .and_then(Option::as_ref)
            .map(|f| f.tasks.as_slice())
    }

    /// Hands member `i` out of the tree (its caller then detaches or ends it).
    pub fn take_member(&mut self, i: usize) -> Option<Frozen> {
        self.frozen.get_mut(i).and_then(Option::take)
    }

    /// Lets every member still held go on as if nothing happened, children first.
    pub fn thaw(mut self) -> Result<(), DumpError> {
        self.socks.clear();
        let mut first_err = None;
        for f in self.frozen.drain(..).rev().flatten() {
            if let Err(e) = f.release() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for HeldTree {
    fn drop(&mut self) {
        self.socks.clear();
        // Children first, as `thaw` does (each `Frozen` thaws itself when dropped).
        while let Some(f) = self.frozen.pop() {
            drop(f);
        }
    }
}
