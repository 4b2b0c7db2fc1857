//! Restoring a process tree (`ferry dump --tree`): the root is created as a single process
//! is; every other process is forked by its restored parent once that parent's memory is in
//! place, so it inherits the injection area, arrives traced, and shares copy-on-write the
//! pages it shared with its parent when dumped, as the kernel made them at the original
//! `fork`. Then each process is rebuilt as a single process is.
//!
//! Order, and why:
//! 1. Plans and pipes first: nothing is created before every file checks out.
//! 2. Create: the root (set_tid, or a new PID namespace for the whole tree when any PID of
//!    the tree is taken), then each process in tree order by `clone3(set_tid)` injected in its
//!    parent. A session leader calls `setsid()` at once, before it forks its children: they
//!    inherit the session at fork, and nothing can join a session later. Each process's
//!    memory is rebuilt before any child of it is forked: it joins its cgroups, is wiped
//!    (but for the areas it keeps from its parent, [`crate::state::VmaState::inherited`],
//!    of which it drops every page not inherited), mapped, and given its part of the page
//!    stream (only pages that differ from its parent's).
//! 3. Process groups, once every process exists: leaders first, then members.
//! 4. Zombies exit with their status while their parents are still stubs (whose `SIGCHLD`
//!    is not ignored, so the zombie stays for `wait`); the `SIGCHLD` this queues in the parent
//!    is taken back, the image carries the parent's own pending signals.
//! 5. Each live process gets its protections and locks, its mm, descriptors (a description
//!    shared with an earlier process is taken from it with `pidfd_getfd`), attributes and
//!    threads.
//! 6. Credentials last, then every process resumes, children first.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::ptrace::Options;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::inject::Injector;
use super::{
    CheckInput, RestoreError, RestoreOptions, RestoreSummary, attrs, create_threads, fdkinds,
    files, lock_down, mm, pty, restore_process_attrs, restore_thread_attrs, shm, sockets, task,
    tty,
};
use crate::image::ImageReader;
use crate::ptrace::{PtraceError, Tracee};
use crate::state::{FdKind, PipeQueue, ProcessState, TreeState};
use crate::sys;

/// Kills every process created so far unless disarmed (the root has its own guard).
struct Created {
    pids: Vec<Pid>,
    armed: bool,
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in self.pids.iter().rev() {
            task::kill_traced(*pid);
        }
    }
}

/// Restores every process of `reader`'s tree and lets them run.
pub fn restore_tree<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
) -> Result<RestoreSummary, RestoreError> {
    restore_tree_with(reader, opts, &HashMap::new())
}

/// [`restore_tree`] with `substitutes` per member (by its PID in the image): descriptor
/// number → a descriptor of the caller that the member gets at that number, as
/// [`super::restore_with`] does for one process (a migrated tree's relay endpoints). With
/// [`RestoreOptions::stopped`] every member is left group-stopped.
pub fn restore_tree_with<R: Read + Send>(
    reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &HashMap<i32, HashMap<i32, std::os::fd::RawFd>>,
) -> Result<RestoreSummary, RestoreError> {
    restore_tree_with_pages(reader, opts, substitutes, None)
}

/// Writes a live migration's pre-copied pages of one member of a tree
/// ([`crate::state::VmaState::precopied`]) into its task: called with the member's PID in
/// the image, its task's PID and its areas, once they are mapped and writable, before any
/// child of it is forked (which inherits them).
pub type TreePrecopied<'a> =
    &'a (dyn Fn(i32, Pid, &[crate::state::VmaState]) -> Result<(), String> + Sync);

/// [`restore_tree_with`] of a live migration's final image, whose pre-copied pages
/// `precopied` writes. Without it an image with pre-copied pages is refused.
pub fn restore_tree_with_pages<R: Read + Send>(
    mut reader: ImageReader<R>,
    opts: RestoreOptions,
    substitutes: &HashMap<i32, HashMap<i32, std::os::fd::RawFd>>,
    precopied: Option<TreePrecopied<'_>>,
) -> Result<RestoreSummary, RestoreError> {
    let none = HashMap::new();
    let tree = reader.tree().clone();
    let procs = &tree.processes;
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
    let root = &procs[0];
    let mut warnings = Vec::new();
    let layout = tree.session_layout().map_err(RestoreError::Layout)?;
    if let Some(p) = procs.iter().find(|p| p.ipc_ns.is_some()) {
        return Err(RestoreError::Layout(format!(
            "pid {}: a private IPC namespace in a process tree is not supported",
            p.pid
        )));
    }
    for p in procs {
        super::check_root(p)?;
    }

    // 1. Pipes joining several processes, held by the restorer until all have their ends.
    let pipes = make_tree_pipes(&tree)?;
    let pipe_fds: HashMap<u64, (i32, i32)> = pipes
        .iter()
        .map(|(ino, (r, w))| (*ino, (r.as_raw_fd(), w.as_raw_fd())))
        .collect();
    // memfds once for the whole tree: a memfd several processes held is one file again.
    let members: Vec<&ProcessState> = procs.iter().collect();
    let memfds = fdkinds::Memfds::create(&members)?;
    let deleted_maps = mm::DeletedFiles::create(&members)?;
    // Pseudo-terminal pairs made anew, held by the restorer until the restore ends.
    let ptys = pty::Ptys::create(&members, &mut warnings)?;
    super::cow_warning(&members, &mut warnings);
    // Socketpairs between processes, made once; each plan takes its ends.
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
    // A description shared with an earlier member whose descriptor was replaced (a relay
    // endpoint in place of a log file, say) is that replacement in this member too.
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

    // 2. Create. The namespace is decided for the whole tree: every process keeps its PID.
    // A PID held by a zombie (the dumped original, say) is given a moment to be reaped.
    let started = std::time::Instant::now();
    let taken = loop {
        let taken = procs
            .iter()
            .skip(1)
            .map(|p| p.pid)
            .chain(tree.zombies.iter().map(|z| z.pid))
            .find(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
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
    if taken.is_none() {
        // The members are forked one by one while the pages stream in; meanwhile every new
        // task here (the root's stand-in parent, this agent's own threads: each takes a PID)
        // would take the next free PID, which may be a member's. Past the tree's PIDs, they
        // cannot.
        let highest = procs
            .iter()
            .map(|p| p.pid)
            .chain(tree.zombies.iter().map(|z| z.pid))
            .max()
            .unwrap_or(0);
        task::allocate_pids_above(highest);
    }
    let mut root_task = task::create(root.pid, opts.pid_ns, taken.is_some(), opts.as_child)?;
    // Should a member's PID be taken all the same while the root was made (another process
    // forking by a chosen PID), the whole tree goes into a new PID namespace after all.
    if root_task.ns_init.is_none()
        && let Some(pid) = procs
            .iter()
            .skip(1)
            .map(|p| p.pid)
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
    let root_tracee = Tracee::seize(
        root_task.pid,
        Options::PTRACE_O_EXITKILL
            | Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            // The filters restored near the end must not apply to the restore's own calls.
            // Forked children inherit these options.
            | Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
    )?;
    root_tracee.interrupt()?;
    root_tracee.set_sigmask(u64::MAX)?;
    let maps = mm::current_maps(root_task.pid.as_raw())?;
    let vdso_syscall = mm::find_vdso_syscall(&root_tracee, &maps)?;
    // The children inherit the area: it must be free in every process's image.
    let all = crate::state::MmState {
        vmas: procs.iter().flat_map(|p| p.mm.vmas.clone()).collect(),
        ..Default::default()
    };
    let area = mm::pick_area(&maps, &all)?;
    let shared;
    // Which processes took their controlling terminal back.
    let mut ctty = vec![false; procs.len()];
    let area = {
        let inj = Injector::bootstrap(&root_tracee, vdso_syscall, area)?;
        // Unregistered before any fork: children inherit the registration.
        if let Some((ptr, len, sig)) = root_tracee.rseq()? {
            inj.call(
                "rseq(unregister)",
                libc::SYS_rseq,
                [ptr, u64::from(len), 1, u64::from(sig), 0, 0],
            )?;
        }
        inj.call("setsid", libc::SYS_setsid, [0; 6])?;
        // Its terminal before any fork: children inherit it.
        if let Some(tty) = &root.attrs.ctty {
            ctty[0] = tty::take(&inj, &ptys.ctty(tty), &mut warnings)?;
        }
        // Shared memory objects once for the tree, made before any fork (the scratch
        // mappings they need are gone again before the children copy the address space).
        shared = shm::SharedMemory::prepare(&inj, &members, None)?;
        inj.area
    };

    let mut created = Created {
        pids: Vec::new(),
        armed: true,
    };
    let mut tracees = vec![root_tracee];
    let mut pages = mm::PageStream::new(&members);
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
            Some(&procs[parent].mm)
        };
        // Into its cgroups before its memory is touched, so that it is charged where it
        // belongs.
        attrs::join_cgroups(tracees[i].pid(), &p.attrs.cgroups, &mut warnings);
        // Its memory before its children are forked: they keep the pages they share with it.
        let inj = Injector::attach(&tracees[i], area)?;
        let maps = mm::current_maps(tracees[i].pid().as_raw())?;
        let kept = mm::kept_from_parent(&p.mm, parent, &maps)?;
        mm::wipe_and_place_vdso(&inj, &maps, &p.mm, &kept)?;
        if let Some(parent) = parent {
            mm::unset_inherited_mm_flags(&inj, &p.mm, parent)?;
        }
        mm::trim_kept(&inj, &p.mm)?;
        mm::map_vmas(&inj, &p.mm, &memfds, &deleted_maps, &shared, &kept)?;
        mm::advise(&inj, &p.mm)?;
        if let Some(write) = precopied {
            write(p.pid, tracees[i].pid(), &p.mm.vmas).map_err(RestoreError::Layout)?;
        }
        let injs = tracees
            .iter()
            .map(|t| Injector::attach(t, area))
            .collect::<Result<Vec<_>, _>>()?;
        pages.write(&injs.iter().collect::<Vec<_>>(), &mut reader)?;
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
    for leaders in [true, false] {
        for (i, t) in tracees.iter().enumerate() {
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
        } else {
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

    // 5. Rebuild the rest of every live process (its memory is in place).
    let injs = tracees
        .iter()
        .map(|t| Injector::attach(t, area))
        .collect::<Result<Vec<_>, _>>()?;
    let mut threads = Vec::with_capacity(procs.len());
    for ((inj, p), plan) in injs.iter().zip(procs).zip(&plans) {
        let thread = p
            .threads
            .first()
            .ok_or_else(|| RestoreError::Layout(format!("pid {}: no thread", p.pid)))?;
        super::aio::restore_rings(inj, &p.mm)?;
        mm::protect(inj, &p.mm)?;
        mm::lock(inj, &p.mm)?;
        mm::set_mm(inj, p)?;
        // A table shared with the parent is the parent's, built already.
        if p.attrs.shares_with_parent & libc::CLONE_FILES as u32 == 0 {
            files::restore(inj, plan, p, &mut warnings)?;
        }
        restore_process_attrs(inj, p, false)?;
        restore_thread_attrs(inj, p, thread)?;
        let ts = create_threads(inj, p)?;
        for (t, state) in &ts {
            attrs::join_thread_cgroups(t.pid(), &state.cgroups, &mut warnings);
        }
        // Timers and I/O signals may go to any thread: all of them exist now.
        attrs::restore_timers(inj, &p.attrs)?;
        attrs::restore_fd_owners(inj, p)?;
        // The restore maps nothing more of its own: new mappings may be locked from here on.
        mm::lock_future(inj, &p.mm)?;
        threads.push(ts);
        for r in &p.rlimits {
            sys::set_rlimit(inj.tracee().pid(), r.resource, r.cur, r.max).map_err(|source| {
                RestoreError::Rlimit {
                    resource: r.resource,
                    source,
                }
            })?;
        }
    }
    // Every process has its ends now.
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

    // 6. Credentials last (per thread, with seccomp filters and capabilities), then resume,
    // children first.
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
    // 7. Every task in its final state, still stopped; then the check, then resume, children
    // first: a parent never sees a child of the tree go.
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
        // The mask only now: a signal it lets through must not stop the last injected call.
        t.set_sigmask(thread.sigmask)?;
        t.set_regs(&thread.regs.resumed().into())?;
        leaders.push(t);
    }
    shared.mark_removed()?;
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
                    smaps_ahead: None,
                })
                .collect();
            Some(check(&input).map_err(RestoreError::Check)?)
        }
        None => None,
    };
    if let Some(t) = leaders.first() {
        super::arm_pdeathsig(t, &mut root_task, root, opts.as_child, &mut warnings)?;
    }
    let mut others = Vec::with_capacity(procs.len() - 1);
    for ((t, p), ts) in leaders.iter().zip(procs).zip(&threads).rev() {
        // Stopped by job control when dumped: a SIGSTOP queued while every thread is still in
        // a ptrace stop stops the group before any of them runs (its parent is told, as when
        // it stopped the first time).
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
    created.armed = false;
    root_task.disarm();
    Ok(RestoreSummary {
        pid: root_task.pid.as_raw(),
        ns_pid: root_task.ns_init.map(|_| root.pid),
        warnings,
        others,
        checked,
        stopped: root.attrs.stop_signal != 0,
    })
}

/// Forks a child with PID `pid` (in the parent's PID namespace) from the task behind `inj`,
/// with the `clone` `flags` given (`CLONE_FS`, `CLONE_FILES`); it arrives traced and stopped,
/// a copy of the parent (injection area included).
fn fork(inj: &Injector<'_>, pid: i32, flags: u64) -> Result<Tracee, RestoreError> {
    let tid_addr = inj.put(8192, &(pid as u64).to_le_bytes())?;
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
    // stack_size, tls, set_tid, set_tid_size, cgroup.
    let args: Vec<u8> = [
        flags,
        0,
        0,
        0,
        libc::SIGCHLD as u64,
        0,
        0,
        0,
        tid_addr,
        1,
        0,
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect();
    let args_addr = inj.put(4096, &args)?;
    inj.call_raw(libc::SYS_clone3, [args_addr, args.len() as u64, 0, 0, 0, 0])?
        .map_err(|source| RestoreError::Create {
            step: if source == nix::errno::Errno::EEXIST {
                "clone3 with set_tid in the parent (pid taken)"
            } else {
                "clone3 with set_tid in the parent"
            },
            source,
        })?;
    let child = inj
        .tracee()
        .take_new_thread()
        .ok_or_else(|| RestoreError::Layout(format!("process {pid} did not report")))?;
    let t = Tracee::attached(child)?;
    // Its first stop, from PTRACE_O_TRACEFORK.
    t.wait()?;
    Ok(t)
}

/// Ends a recreated zombie the way the original ended: `exit_group(code)`, or death by its
/// signal (without a core dump).
fn exit_as(t: &Tracee, area: u64, status: i32) -> Result<(), RestoreError> {
    let pid = t.pid();
    let mut regs = t.regs()?;
    regs.orig_rax = u64::MAX;
    regs.rip = area;
    let sig = status & 0x7f;
    if sig == 0 {
        regs.rax = libc::SYS_exit_group as u64;
        regs.rdi = ((status >> 8) & 0xff) as u64;
        t.set_regs(&regs)?;
        nix::sys::ptrace::cont(pid, None).map_err(|source| PtraceError::Request {
            op: "cont",
            pid: pid.as_raw(),
            source,
        })?;
    } else {
        sys::set_rlimit(pid, libc::RLIMIT_CORE, 0, 0).map_err(|source| RestoreError::Rlimit {
            resource: libc::RLIMIT_CORE,
            source,
        })?;
        // Default action for the signal, and nothing blocked.
        let inj = Injector::attach(t, area)?;
        let act = inj.put(4096, &[0u8; 32])?;
        inj.call(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            [sig as u64, act, 0, 8, 0, 0],
        )?;
        t.set_sigmask(0)?;
        regs.rax = libc::SYS_getpid as u64;
        t.set_regs(&regs)?;
        let signal = Signal::try_from(sig).map_err(|source| RestoreError::Create {
            step: "zombie's signal",
            source,
        })?;
        nix::sys::ptrace::cont(pid, Some(signal)).map_err(|source| PtraceError::Request {
            op: "cont",
            pid: pid.as_raw(),
            source,
        })?;
    }
    // The tracer hears of the death first; once it has, the parent can wait for the zombie.
    loop {
        match t.wait() {
            Err(PtraceError::Gone { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(nix::sys::wait::WaitStatus::Stopped(_, s)) => {
                nix::sys::ptrace::cont(pid, Some(s)).map_err(|source| PtraceError::Request {
                    op: "cont",
                    pid: pid.as_raw(),
                    source,
                })?;
            }
            Ok(_) => {
                nix::sys::ptrace::cont(pid, None).map_err(|source| PtraceError::Request {
                    op: "cont",
                    pid: pid.as_raw(),
                    source,
                })?;
            }
        }
    }
}

/// Pipes whose descriptors are spread over several processes: made here, sized, filled with
/// their queued bytes, and reopened by each process through `/proc/RESTORER/fd/N`.
fn make_tree_pipes(tree: &TreeState) -> Result<HashMap<u64, (OwnedFd, OwnedFd)>, RestoreError> {
    let mut holders: HashMap<u64, (Vec<i32>, Option<&PipeQueue>)> = HashMap::new();
    for p in &tree.processes {
        for f in &p.fds {
            if let FdKind::LocalPipe { ino, queue } = &f.kind {
                let e = holders.entry(*ino).or_default();
                if !e.0.contains(&p.pid) {
                    e.0.push(p.pid);
                }
                if e.1.is_none() {
                    e.1 = queue.as_ref();
                }
            }
        }
    }
    let mut out = HashMap::new();
    for (ino, (pids, queue)) in holders {
        if pids.len() < 2 {
            continue;
        }
        let what = |s: &str| format!("pipe:[{ino}]: {s}");
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| {
            RestoreError::Io {
                what: what("pipe2"),
                source: e.into(),
            }
        })?;
        if let Some(q) = queue {
            let size = i32::try_from(q.size).unwrap_or(i32::MAX);
            fcntl(w.as_fd(), FcntlArg::F_SETPIPE_SZ(size)).map_err(|e| RestoreError::Io {
                what: what("set its buffer size"),
                source: e.into(),
            })?;
            std::fs::File::from(w.try_clone().map_err(|source| RestoreError::Io {
                what: what("dup"),
                source,
            })?)
            .write_all(&q.data)
            .map_err(|source| RestoreError::Io {
                what: what(&format!("write its {} queued bytes", q.data.len())),
                source,
            })?;
        }
        out.insert(ino, (r, w));
    }
    Ok(out)
}
