//! The one restore pipeline: a process tree (`ferry dump --tree`) and a single process alike,
//! which is a tree of one member. The root is created (or taken from a live migration's
//! premade task) and every other member is forked by its restored parent once that parent's
//! memory is in place, so it inherits the injection area, arrives traced, and shares
//! copy-on-write the pages it shared with its parent when dumped, as the kernel made them at
//! the original `fork`. Then each member is rebuilt the same way.
//!
//! Order, and why:
//! 1. Plans and pipes first: nothing is created before every file checks out.
//! 2. Create: the root (set_tid, or a new PID namespace for the whole tree when any PID of
//!    the tree is taken), then each member in tree order by `clone3(set_tid)` injected in its
//!    parent. A session leader calls `setsid()` at once, before it forks its children: they
//!    inherit the session at fork, and nothing can join a session later. Each member's memory
//!    is rebuilt before any child of it is forked: it joins its cgroups, is wiped (but for the
//!    areas it keeps from its parent, [`crate::state::VmaState::inherited`], of which it drops
//!    every page not inherited, or from a premade task), mapped, and given its part of the
//!    page stream (only pages that differ from its parent's).
//! 3. Process groups, once every member exists: leaders first, then members.
//! 4. Zombies exit with their status while their parents are still stubs (whose `SIGCHLD`
//!    is not ignored, so the zombie stays for `wait`); the `SIGCHLD` this queues in the parent
//!    is taken back, the image carries the parent's own pending signals.
//! 5. Each live member gets its protections and locks, its mm, descriptors (a description
//!    shared with an earlier member is taken from it with `pidfd_getfd`), attributes and
//!    threads.
//! 6. Credentials last, then the check, then every member resumes, children first.
//!
//! What only a process alone has (a tree of one without zombies), each said where it is done:
//! a live migration's premade task, a private IPC namespace, staying in the restorer's
//! session, its `smaps` read ahead for the check.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::ptrace::Options;
use nix::unistd::Pid;

use super::inject::{AREA_LEN, Injector};
use super::tree::{Created, exit_as, fork, make_tree_pipes};
use super::{
    CheckInput, Premade, RestoreError, RestoreOptions, RestoreSummary, aio, attrs, create_threads,
    fdkinds, files, ipc, lazy, lock_down, mm, pty, restore_process_attrs, restore_thread_attrs,
    shm, sockets, task, tty,
};
use crate::image::ImageReader;
use crate::ptrace::Tracee;
use crate::state::{FdKind, ProcessState, TreeState, VmaKind, VmaState, vmflag};
use crate::sys;

/// Writes a live migration's pre-copied pages of one member
/// ([`crate::state::VmaState::precopied`]): given its PID in the image, its task, its areas
/// and those of them kept from a premade task (which has their pages), once they are mapped
/// and writable, before any child of it is forked (which inherits them).
pub(super) type Precopied<'a> =
    &'a (dyn Fn(i32, Pid, &[VmaState], &[(u64, u64)]) -> Result<(), String> + Sync);

/// Descriptors per member (by its PID in the image): number → a descriptor of the caller.
pub(super) type Substitutes = HashMap<i32, HashMap<i32, RawFd>>;

/// Restores every process of `reader`'s image (one, or a tree) and lets them run (or leaves
/// them stopped, [`RestoreOptions::stopped`]).
pub(super) fn run<R: Read + Send>(
    mut reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &Substitutes,
    precopied: Option<Precopied<'_>>,
    premade: Option<Premade>,
) -> Result<RestoreSummary, RestoreError> {
    let start = std::time::Instant::now();
    let none = HashMap::new();
    let tree = reader.tree().clone();
    let procs = &tree.processes;
    let root = procs
        .first()
        .ok_or_else(|| RestoreError::Layout("the image has no process".into()))?;
    // A process alone: nothing is forked.
    let lone = procs.len() == 1 && tree.zombies.is_empty();
    if precopied.is_none()
        && let Some(p) = procs
            .iter()
            .find(|p| p.mm.vmas.iter().any(|v| !v.precopied.is_empty()))
    {
        return Err(RestoreError::Layout(format!(
            "pid {}: the image is the last part of a live migration: its pre-copied pages are \
             only on that migration's destination",
            p.pid
        )));
    }
    let mut warnings = Vec::new();
    let layout = tree.session_layout().map_err(RestoreError::Layout)?;
    if !lone && let Some(p) = procs.iter().find(|p| p.ipc_ns.is_some()) {
        return Err(RestoreError::Layout(format!(
            "pid {}: a private IPC namespace in a process tree is not supported",
            p.pid
        )));
    }
    for p in procs {
        super::check_root(p)?;
    }

    // 1. Pipes joining several members, held by the restorer until all have their ends.
    let pipes = make_tree_pipes(&tree)?;
    let pipe_fds: HashMap<u64, (i32, i32)> = pipes
        .iter()
        .map(|(ino, (r, w))| (*ino, (r.as_raw_fd(), w.as_raw_fd())))
        .collect();
    // memfds once for the whole tree: a memfd several members held is one file again.
    let members: Vec<&ProcessState> = procs.iter().collect();
    let memfds = fdkinds::Memfds::create(&members)?;
    let deleted_maps = mm::DeletedFiles::create(&members)?;
    // Pseudo-terminal pairs made anew, held by the restorer until the restore ends.
    let ptys = pty::Ptys::create(&members, &mut warnings)?;
    super::cow_warning(&members, &mut warnings);
    // Socketpairs between members, made once; each plan takes its ends.
    let mut tree_socks = sockets::tree_pairs(&tree)?;
    let mut plans = procs
        .iter()
        .map(|p| {
            files::plan_with(
                p,
                opts.inherit_stdio,
                &pipe_fds,
                files::Made {
                    memfds: &memfds,
                    ptys: &ptys,
                },
                &mut tree_socks,
                substitutes.get(&p.pid).unwrap_or(&none),
                &mut warnings,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    shared_replacements(procs, &mut plans);
    tracing::debug!(elapsed = ?start.elapsed(), "files checked");
    crate::timeline::mark("restore: header, files");

    // 2. Create the root: a live migration's task made ahead, if it is the one this image
    // needs (else dropped: it dies), or a new one.
    let premade = premade.filter(|p| {
        lone && p.want == root.pid
            && !root
                .mm
                .vmas
                .iter()
                .any(|v| v.start < p.area + AREA_LEN && p.area < v.end)
    });
    let mut premade_pidfd = None;
    let (mut root_task, root_tracee, premade_at, premade_areas) = match premade {
        Some(Premade {
            task,
            tracee,
            area,
            areas,
            pidfd_in_task,
            ..
        }) => {
            attrs::join_cgroups(task.pid, &root.attrs.cgroups, &mut warnings);
            tracing::debug!(elapsed = ?start.elapsed(), areas = areas.len(), "premade task taken");
            premade_pidfd = Some(pidfd_in_task);
            (task, tracee, Some(area), areas)
        }
        None => {
            let task = create_root(&tree, opts)?;
            tracing::debug!(elapsed = ?start.elapsed(), "task created");
            // Into its cgroups before any memory is touched, so that it is charged where it
            // belongs.
            attrs::join_cgroups(task.pid, &root.attrs.cgroups, &mut warnings);
            // EXITKILL: should the restorer die half-way, the half-built tasks die with it.
            // TRACECLONE: the threads we create arrive traced and stopped; TRACEFORK: so do
            // the members forked (they inherit these options).
            let trace_fork = if lone {
                Options::empty()
            } else {
                Options::PTRACE_O_TRACEFORK
            };
            let tracee = Tracee::seize(
                task.pid,
                Options::PTRACE_O_EXITKILL
                    | Options::PTRACE_O_TRACESYSGOOD
                    | Options::PTRACE_O_TRACECLONE
                    | trace_fork
                    // The filters restored near the end must not apply to the restore's own
                    // calls.
                    | Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
            )?;
            tracee.interrupt()?;
            // Nothing may be delivered while the task is being built; the image's mask comes
            // last.
            tracee.set_sigmask(u64::MAX)?;
            (task, tracee, None, Vec::new())
        }
    };
    let maps = mm::current_maps(root_task.pid.as_raw())?;
    // Which members took their controlling terminal back.
    let mut ctty = vec![false; procs.len()];
    let (area, ipc_ns, shared) = {
        let inj = match premade_at {
            Some(area) => {
                let inj = Injector::attach(&root_tracee, area)?;
                // Made before the descriptor plan, the task has our pidfd at another number.
                if let (Some(q), Some(p)) = (premade_pidfd, plans[0].pidfd())
                    && q != p
                {
                    inj.call(
                        "dup3(pidfd)",
                        libc::SYS_dup3,
                        [q as u64, p as u64, libc::O_CLOEXEC as u64, 0, 0, 0],
                    )?;
                }
                inj
            }
            None => {
                let vdso_syscall = mm::find_vdso_syscall(&root_tracee, &maps)?;
                // The members inherit the area: it must be free in every member's image.
                let ranges: Vec<(u64, u64)> = procs
                    .iter()
                    .flat_map(|p| p.mm.vmas.iter().map(|v| (v.start, v.end)))
                    .collect();
                let area = mm::pick_area_avoiding(&maps, &ranges)?;
                let inj = Injector::bootstrap(&root_tracee, vdso_syscall, area)?;
                // The task is a copy of us, with our thread's rseq area registered; unregister
                // it before its memory goes, or the next return to user mode faults beyond
                // repair (and before any fork: children inherit the registration).
                if let Some((ptr, len, sig)) = root_tracee.rseq()? {
                    inj.call(
                        "rseq(unregister)",
                        libc::SYS_rseq,
                        [ptr, u64::from(len), 1, u64::from(sig), 0, 0],
                    )?;
                }
                inj
            }
        };
        // Its own IPC namespace first (a process alone): its shared memory segments are made
        // in it.
        crate::timeline::mark("restore: task");
        let ipc_ns = ipc::make(&inj, root)?;
        crate::timeline::mark("restore: IPC namespace");
        root_session(&inj, root, &root_task, lone)?;
        // Its terminal before any fork: children inherit it. A process alone takes it back
        // only if it led its session; a tree's root leads the session of its members.
        if let Some(tty) = root.attrs.ctty.as_ref()
            && (!lone || root.sid == root.pid)
        {
            ctty[0] = tty::take(&inj, &ptys.ctty(tty), &mut warnings)?;
        }
        // Shared memory objects once for the tree, made by the root while it still has a
        // whole address space of its own to make them in, before any fork (the scratch
        // mappings they need are gone again before the children copy the address space).
        let shared = shm::SharedMemory::prepare(&inj, &members, ipc_ns.as_ref())?;
        (inj.area, ipc_ns, shared)
    };
    let t0 = std::time::Instant::now();
    tracing::debug!(elapsed = ?start.elapsed(), "injector ready");

    let mut created = Created {
        pids: Vec::new(),
        armed: true,
    };
    let mut tracees = vec![root_tracee];
    let mut pages = mm::PageStream::new(&members);
    // The root's `smaps` for the check, read before its pages (see below).
    let mut smaps_ahead = None;
    for (i, p) in procs.iter().enumerate() {
        let parent = if i == 0 {
            None
        } else {
            let parent = procs[..i]
                .iter()
                .position(|q| q.pid == p.ppid)
                .ok_or_else(|| RestoreError::Layout(format!("pid {}: no parent", p.pid)))?;
            // A descriptor table or filesystem context shared with the parent is shared from
            // the start: the parent builds it, once.
            let flags = p.attrs.shares_with_parent & (libc::CLONE_FS | libc::CLONE_FILES) as u32;
            let child = fork(
                &Injector::attach(&tracees[parent], area)?,
                p.pid,
                u64::from(flags),
            )?;
            created.pids.push(child.pid());
            if layout[i].setsid {
                let inj = Injector::attach(&child, area)?;
                inj.call("setsid", libc::SYS_setsid, [0; 6])?;
                // Before its own children are forked: they inherit the terminal.
                if let Some(tty) = &p.attrs.ctty {
                    ctty[i] = tty::take(&inj, &ptys.ctty(tty), &mut warnings)?;
                }
            }
            tracees.push(child);
            // Into its cgroups before its memory is touched, so that it is charged where it
            // belongs (the root joined its own as it was made).
            attrs::join_cgroups(tracees[i].pid(), &p.attrs.cgroups, &mut warnings);
            Some(&procs[parent].mm)
        };
        // Its memory before its children are forked: they keep the pages they share with it.
        let inj = Injector::attach(&tracees[i], area)?;
        let maps = mm::current_maps(tracees[i].pid().as_raw())?;
        let inherited = mm::kept_from_parent(&p.mm, parent, &maps)?;
        // A live migration's root keeps the areas of its premade task that the image has as
        // they are, with their pages.
        let (premade_vmas, premade_kept) = premade_kept(&p.mm, &premade_areas);
        let keep_areas: Vec<_> = inherited.iter().chain(&premade_kept).copied().collect();
        let kept: Vec<_> = inherited.iter().chain(&premade_vmas).copied().collect();
        crate::timeline::mark("restore: session, shared memory");
        mm::wipe_and_place_vdso(&inj, &maps, &p.mm, &keep_areas)?;
        crate::timeline::mark("restore: wipe");
        if let Some(parent) = parent {
            mm::unset_inherited_mm_flags(&inj, &p.mm, parent)?;
        }
        mm::trim_kept(&inj, &p.mm)?;
        mm::map_vmas(&inj, &p.mm, &memfds, &deleted_maps, &shared, &kept)?;
        mm::trim_precopied(&inj, &p.mm, &premade_vmas)?;
        mm::advise(&inj, &p.mm)?;
        tracing::debug!(elapsed = ?t0.elapsed(), pid = p.pid, kept = kept.len(), "vmas mapped");
        crate::timeline::mark("restore: areas");
        // For the check of a process alone: `smaps` before the pages, when the memory steps
        // after them (protect; lock and AIO rings not: the image has none) change nothing it
        // tells.
        // Read on a thread of its own while the restore goes on (no later step changes what
        // it tells; a live migration's kept areas hold their pages already, so it walks them
        // all).
        if lone && opts.check.is_some() && mm::flags_set_before_pages(&p.mm) {
            smaps_ahead = Some(crate::verify::smaps_ahead(tracees[i].pid().as_raw()));
        }
        // The pre-copied pages and the stream's are disjoint: their order does not matter.
        if let Some(write) = precopied {
            write(p.pid, tracees[i].pid(), &p.mm.vmas, &premade_vmas)
                .map_err(RestoreError::Layout)?;
            crate::timeline::mark("restore: pre-copied pages");
        }
        let injs = tracees
            .iter()
            .map(|t| Injector::attach(t, area))
            .collect::<Result<Vec<_>, _>>()?;
        pages.write(&injs.iter().collect::<Vec<_>>(), &mut reader)?;
        tracing::debug!(elapsed = ?t0.elapsed(), pid = p.pid, "pages written");
        crate::timeline::mark("restore: pages of the image");
    }
    pages.finish()?;
    let mut zombies = Vec::with_capacity(tree.zombies.len());
    for z in &tree.zombies {
        let parent = procs
            .iter()
            .position(|q| q.pid == z.ppid)
            .ok_or_else(|| RestoreError::Layout(format!("zombie {}: no parent", z.pid)))?;
        let child = fork(&Injector::attach(&tracees[parent], area)?, z.pid, 0)?;
        created.pids.push(child.pid());
        zombies.push((parent, child, z.status));
    }

    // 3. Groups: a group must exist (its leader in it) before others join.
    // (The root's session and group are set as it is made.)
    for leaders in [true, false] {
        for (i, t) in tracees.iter().enumerate().skip(1) {
            let place = layout[i];
            if place.setsid || (place.pgid == procs[i].pid) != leaders {
                continue;
            }
            let pgid = if leaders { 0 } else { place.pgid as u64 };
            Injector::attach(t, area)?.call("setpgid", libc::SYS_setpgid, [0, pgid, 0, 0, 0, 0])?;
        }
    }
    // The foreground group of each terminal taken back, now that the groups exist: one of
    // its session (the root's original group is the root's now).
    for (i, t) in tracees.iter().enumerate() {
        let Some(tty) = procs[i].attrs.ctty.as_ref().filter(|_| ctty[i]) else {
            continue;
        };
        let tty = &ptys.ctty(tty);
        if tty.fg_pgid == 0 {
            continue;
        }
        let fg = if tty.fg_pgid == root.pgid && layout[i].sid == root.pid {
            root.pid
        } else {
            tty.fg_pgid
        };
        if layout
            .iter()
            .any(|l| l.pgid == fg && l.sid == layout[i].sid)
        {
            tty::set_foreground(&Injector::attach(t, area)?, tty, fg, &mut warnings)?;
        } else if !lone {
            warnings.push(format!(
                "pid {}: the foreground group {} of its terminal {} is not in the tree; the terminal has the session leader's group in the foreground",
                procs[i].pid, tty.fg_pgid, tty.path
            ));
        }
    }

    // 4. Zombies.
    for (_, z, status) in &zombies {
        exit_as(z, area, *status)?;
    }
    for (parent, _, _) in &zombies {
        let inj = Injector::attach(&tracees[*parent], area)?;
        let set = inj.put(4096, &(1u64 << (libc::SIGCHLD - 1)).to_le_bytes())?;
        let ts = inj.put(4096 + 64, &[0u8; 16])?;
        // EAGAIN once none is left.
        let _ = inj.call_raw(libc::SYS_rt_sigtimedwait, [set, 0, ts, 8, 0, 0])?;
    }

    // 5. Rebuild the rest of every live member (its memory is in place).
    let injs = tracees
        .iter()
        .map(|t| Injector::attach(t, area))
        .collect::<Result<Vec<_>, _>>()?;
    let mut threads = Vec::with_capacity(procs.len());
    let mut address_space_calls = None;
    for (i, ((inj, p), plan)) in injs.iter().zip(procs).zip(&plans).enumerate() {
        let thread = p
            .threads
            .first()
            .ok_or_else(|| RestoreError::Layout(format!("pid {}: no thread", p.pid)))?;
        aio::restore_rings(inj, &p.mm)?;
        crate::timeline::mark("restore: AIO rings");
        mm::protect(inj, &p.mm)?;
        crate::timeline::mark("restore: protect");
        mm::lock(inj, &p.mm)?;
        crate::timeline::mark("restore: lock");
        if i == 0 {
            address_space_calls = Some(crate::ptrace::address_space_calls());
        }
        // After the wipe: PR_SET_MM_MAP refuses a new exe while the old executable is mapped.
        mm::set_mm(inj, p)?;
        // A table shared with the parent is the parent's, built already.
        crate::timeline::mark("restore: memory steps, mm");
        if p.attrs.shares_with_parent & libc::CLONE_FILES as u32 == 0 {
            files::restore(inj, plan, p, &mut warnings)?;
        }
        crate::timeline::mark("restore: descriptors");
        restore_process_attrs(inj, p)?;
        restore_thread_attrs(inj, p, thread)?;
        // The other threads share everything set so far (memory, fds, handlers).
        crate::timeline::mark("restore: attributes");
        let ts = create_threads(inj, p)?;
        crate::timeline::mark("restore: threads");
        for (t, state) in &ts {
            attrs::join_thread_cgroups(t.pid(), &state.cgroups, &mut warnings);
        }
        // Timers and I/O signals may go to any thread: all of them exist now.
        attrs::restore_timers(inj, &p.attrs)?;
        attrs::restore_fd_owners(inj, p)?;
        // The restore maps nothing more of its own: new mappings may be locked from here on.
        mm::lock_future(inj, &p.mm)?;
        mm::late_madvise_fault(inj, &p.mm)?;
        // Post-copy (asked for a process alone): the missing pages' userfaultfd, while the
        // task still has our privileges.
        if i == 0 {
            crate::timeline::mark("restore: timers, owners, locks");
            lazy::arm(inj, inj.tracee().pid(), &p.mm)?;
            crate::timeline::mark("restore: userfaultfd made");
        }
        threads.push(ts);
        // Limits late, so that none of them (RLIMIT_AS, RLIMIT_NOFILE) gets in the way of the
        // restore's own calls.
        for r in &p.rlimits {
            sys::set_rlimit(inj.tracee().pid(), r.resource, r.cur, r.max).map_err(|source| {
                RestoreError::Rlimit {
                    resource: r.resource,
                    source,
                }
            })?;
        }
    }
    // Every member has its ends now.
    drop(pipes);
    // Queues with descriptors in flight, which may name any member's descriptors.
    let actual: Vec<_> = procs
        .iter()
        .zip(&tracees)
        .map(|(p, t)| (p, t.pid()))
        .collect();
    sockets::send_in_flight(&actual)?;
    // Seals after every mapping and descriptor: they may forbid what those needed.
    memfds.seal()?;

    crate::timeline::mark("restore: limits, in flight, seals");
    // 6. Credentials last (per thread, with seccomp filters and capabilities): once they
    // drop, the task could no longer do the privileged steps.
    for ((inj, p), ts) in injs.iter().zip(procs).zip(&threads) {
        // Its root last of all that opens paths (they are the host's); a filesystem context
        // shared with the parent is the parent's, in its root already.
        if p.attrs.shares_with_parent & libc::CLONE_FS as u32 == 0 {
            super::enter_root(inj, p)?;
        }
        for (t, tstate) in ts {
            lock_down(&inj.for_thread(t)?, p, tstate, false, false, &mut warnings)?;
        }
        let thread = &p.threads[0];
        // Every member but the root has its parent restored with it (and alive while it is
        // restored): its parent-death signal is set back; the root's waits for its parent
        // (`arm_pdeathsig`).
        lock_down(inj, p, thread, true, p.pid != root.pid, &mut warnings)?;
        let pid = inj.tracee().pid();
        attrs::set_oom_score_adj(pid, &p.attrs, &mut warnings);
        attrs::set_coredump_filter(pid, &p.attrs, &mut warnings);
        attrs::set_sched(pid, &thread.sched, &mut warnings)?;
        attrs::set_ioprio(pid, thread, &mut warnings);
        for (t, tstate) in ts {
            attrs::set_sched(t.pid(), &tstate.sched, &mut warnings)?;
            attrs::set_ioprio(t.pid(), tstate, &mut warnings);
        }
    }
    // Every task in its final state, still stopped. The threads go first: their registers no
    // longer point into the injection area, which the leader unmaps last.
    let mut leaders = Vec::with_capacity(procs.len());
    for ((inj, p), ts) in injs.into_iter().zip(procs).zip(&threads) {
        for (t, ts) in ts {
            t.set_xstate(&ts.xstate)?;
            t.set_sigmask(ts.sigmask)?;
            t.set_regs(&ts.regs.resumed().into())?;
        }
        let thread = &p.threads[0];
        let t = inj.tracee();
        t.set_xstate(&thread.xstate)?;
        inj.finish()?;
        // The mask only now: a signal it lets through (a timer that fired meanwhile) must not
        // stop the last injected call; it is delivered once the task runs.
        t.set_sigmask(thread.sigmask)?;
        t.set_regs(&thread.regs.resumed().into())?;
        leaders.push(t);
    }
    shared.mark_removed()?;
    // The smaps read ahead holds if nothing since the memory steps changed an area (the
    // injection area's own `munmap` by `finish` is not counted: it is gone, and no other area
    // lies in its range).
    let smaps_ahead = smaps_ahead
        .and_then(crate::verify::SmapsAhead::join)
        .filter(|_| address_space_calls == Some(crate::ptrace::address_space_calls()));
    crate::timeline::mark("restore: credentials, registers");
    // Then the check, then resume, children first: a parent never sees a child of the tree
    // go.
    let checked = match opts.check {
        Some(check) => {
            let tids: Vec<Vec<Pid>> = leaders
                .iter()
                .zip(&threads)
                .map(|(leader, ts)| {
                    std::iter::once(leader.pid())
                        .chain(ts.iter().map(|(t, _)| t.pid()))
                        .collect()
                })
                .collect();
            let input: Vec<CheckInput<'_>> = tids
                .iter()
                .zip(procs)
                .zip(&plans)
                .map(|((tids, p), plan)| CheckInput {
                    tids,
                    image: p,
                    new_pid_ns: root_task.ns_init.is_some(),
                    parent_restored: p.pid != root.pid,
                    as_child: opts.as_child,
                    substituted_fds: &plan.replaced_fds,
                    recreated_files: &plan.recreated_files,
                    smaps_ahead: smaps_ahead.as_deref().filter(|_| p.pid == root.pid),
                })
                .collect();
            Some(check(&input).map_err(RestoreError::Check)?)
        }
        None => None,
    };
    crate::timeline::mark("restore: checker");
    if let Some(t) = leaders.first() {
        super::arm_pdeathsig(t, &mut root_task, root, opts.as_child, &mut warnings)?;
    }
    let mut others = Vec::with_capacity(procs.len() - 1);
    for ((t, p), ts) in leaders.iter().zip(procs).zip(&threads).rev() {
        // Stopped by job control when dumped (or asked to be left stopped): a SIGSTOP queued
        // while every thread is still in a ptrace stop: the first thread back on its way to
        // user mode takes it and stops the whole group before any of them runs a single
        // instruction (its parent is told, as when it stopped the first time). Not traced any
        // more, it stays stopped whatever happens to us.
        if p.attrs.stop_signal != 0 || opts.stopped {
            nix::sys::signal::kill(t.pid(), nix::sys::signal::Signal::SIGSTOP).map_err(
                |source| RestoreError::Create {
                    step: "queue SIGSTOP",
                    source,
                },
            )?;
        }
        for (thread, _) in ts {
            thread.detach(None)?;
        }
        t.detach(None)?;
        if p.attrs.stop_signal != 0 {
            super::wait_group_stop(t.pid())?;
        }
        if p.pid != root.pid {
            others.push(t.pid().as_raw());
        }
    }
    others.reverse();
    shared.finish();
    drop(ipc_ns);
    created.armed = false;
    root_task.disarm();
    tracing::debug!(elapsed = ?t0.elapsed(), "restored");
    crate::timeline::mark("restore: held stopped");
    Ok(RestoreSummary {
        pid: root_task.pid.as_raw(),
        ns_pid: root_task.ns_init.map(|_| root.pid),
        warnings,
        others,
        checked,
        stopped: root.attrs.stop_signal != 0,
    })
}

/// A description shared with an earlier member whose descriptor was replaced (a relay
/// endpoint in place of a log file, say) is that replacement in this member too.
fn shared_replacements(procs: &[ProcessState], plans: &mut [files::FdPlan]) {
    for i in 1..procs.len() {
        let (earlier, rest) = plans.split_at_mut(i);
        for f in &procs[i].fds {
            if let FdKind::Shared { pid, fd } = f.kind
                && let Some(j) = procs[..i].iter().position(|q| q.pid == pid)
                && earlier[j].replaced_fds.contains(&fd)
            {
                rest[0].replaced_fds.push(f.fd);
            }
        }
        // And a duplicate of such a descriptor in this member.
        for f in &procs[i].fds {
            if let FdKind::Dup { of } = f.kind
                && rest[0].replaced_fds.contains(&of)
                && !rest[0].replaced_fds.contains(&f.fd)
            {
                rest[0].replaced_fds.push(f.fd);
            }
        }
    }
}

/// Creates the root's task. The namespace is decided for the whole tree: every member keeps
/// its PID. A PID held by a zombie (the dumped original, say) is given a moment to be reaped.
fn create_root(tree: &TreeState, opts: RestoreOptions) -> Result<task::NewTask, RestoreError> {
    let procs = &tree.processes;
    let root = &procs[0];
    // The PIDs of the members forked later (the root's own is waited for by `task::create`).
    let later = || {
        procs
            .iter()
            .skip(1)
            .map(|p| p.pid)
            .chain(tree.zombies.iter().map(|z| z.pid))
    };
    let started = std::time::Instant::now();
    let taken = loop {
        let taken = later().find(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        match taken {
            Some(pid) if task::holder_is_zombie(pid) && started.elapsed() < task::ZOMBIE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other,
        }
    };
    if let Some(pid) = taken
        && opts.pid_ns == task::PidNsMode::Never
    {
        return Err(RestoreError::PidTaken { pid });
    }
    if taken.is_none()
        && let Some(highest) = later().max()
    {
        // The members are forked one by one while the pages stream in; meanwhile every new
        // task here (the root's stand-in parent, this agent's own threads: each takes a PID)
        // would take the next free PID, which may be a member's. Past the tree's PIDs, they
        // cannot.
        task::allocate_pids_above(highest.max(root.pid));
    }
    let mut root_task = task::create(root.pid, opts.pid_ns, taken.is_some(), opts.as_child)?;
    // Should a member's PID be taken all the same while the root was made (another process
    // forking by a chosen PID), the whole tree goes into a new PID namespace after all.
    if root_task.ns_init.is_none()
        && let Some(pid) = later()
            .take(procs.len() - 1)
            .find(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        if opts.pid_ns == task::PidNsMode::Never {
            return Err(RestoreError::PidTaken { pid });
        }
        tracing::info!(
            pid,
            "a member's pid was taken while the root was made: the tree goes into a new PID namespace"
        );
        drop(root_task);
        root_task = task::create(root.pid, opts.pid_ns, true, opts.as_child)?;
    }
    Ok(root_task)
}

/// The root's session. A process alone that led a process group of a session it did not
/// lead is put back so when that session is the restorer's own (a restore from the session
/// it was dumped in): its own group again, in the same session. Otherwise (another session,
/// which it cannot join, or a new PID namespace) it leads a new session, an expected change
/// the restore checker names; so does one in a group it did not lead (joining the restorer's
/// group would tie it to a job it was not part of), and the root of a tree, whose members of
/// its session follow it. Like a daemon, it is detached from the restoring command's
/// terminal and job control.
fn root_session(
    inj: &Injector<'_>,
    root: &ProcessState,
    task: &task::NewTask,
    lone: bool,
) -> Result<(), RestoreError> {
    let same_session = lone
        && root.pgid == root.pid
        && root.sid != root.pid
        && task.ns_init.is_none()
        && nix::unistd::getsid(None).is_ok_and(|sid| sid.as_raw() == root.sid);
    if same_session {
        inj.call("setpgid", libc::SYS_setpgid, [0; 6])?;
    } else {
        inj.call("setsid", libc::SYS_setsid, [0; 6])?;
    }
    Ok(())
}

/// Address ranges.
type Ranges = Vec<(u64, u64)>;

/// The areas of `premade` the final image has as they are (a run of private anonymous areas
/// covering exactly one premade area, with the same `MAP_NORESERVE`): kept, with the pages
/// written into them. Returns the image's areas kept and the premade areas they cover.
fn premade_kept(mm: &crate::state::MmState, premade: &[super::PremadeArea]) -> (Ranges, Ranges) {
    let mut vmas = Vec::new();
    let mut areas = Vec::new();
    for p in premade {
        let over: Vec<_> = mm
            .vmas
            .iter()
            .filter(|v| v.start < p.end && p.start < v.end)
            .collect();
        let fits = over.first().is_some_and(|v| v.start == p.start)
            && over.last().is_some_and(|v| v.end == p.end)
            && over.windows(2).all(|w| w[0].end == w[1].start)
            && over.iter().all(|v| {
                !v.shared
                    && !v.growsdown
                    && matches!(v.kind, VmaKind::Anonymous | VmaKind::Heap)
                    && (v.flags & vmflag::NORESERVE != 0) == p.noreserve
            });
        if fits {
            vmas.extend(over.iter().map(|v| (v.start, v.end)));
            areas.push((p.start, p.end));
        }
    }
    (vmas, areas)
}
