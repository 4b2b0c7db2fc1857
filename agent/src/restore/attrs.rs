//! Process attributes, timers and per-thread scheduling, put back in the order the kernel
//! allows: cgroups first (memory is charged where it belongs), timers once every thread exists,
//! capabilities around the credential change, then what a credential change resets.

use nix::unistd::Pid;

use super::RestoreError;
use super::inject::Injector;
use crate::state::{AttrsState, CgroupState, ProcessState, SchedState, ThreadState};
use crate::sys;

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const SIGEV_THREAD_ID: u32 = 4;

/// Mount points of the cgroup hierarchies, keyed by their controllers ("" for cgroup v2).
fn cgroup_mounts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), Some(_source), Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        match fstype {
            "cgroup2" => out.push((String::new(), mount_point.to_string())),
            "cgroup" => {
                let known = [
                    "cpu",
                    "cpuacct",
                    "cpuset",
                    "memory",
                    "devices",
                    "freezer",
                    "net_cls",
                    "net_prio",
                    "blkio",
                    "perf_event",
                    "hugetlb",
                    "pids",
                    "rdma",
                    "misc",
                ];
                let mut ctl: Vec<&str> = opts.split(',').filter(|o| known.contains(o)).collect();
                if let Some(name) = opts.split(',').find_map(|o| o.strip_prefix("name=")) {
                    ctl.push(name);
                }
                out.push((ctl.join(","), mount_point.to_string()));
            }
            _ => {}
        }
    }
    out
}

fn same_controllers(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> Vec<&str> {
        let mut v: Vec<&str> = s
            .split(',')
            .map(|c| c.strip_prefix("name=").unwrap_or(c))
            .filter(|c| !c.is_empty())
            .collect();
        v.sort_unstable();
        v
    }
    norm(a) == norm(b)
}

/// Moves the new task into the cgroups it was in; one that no longer exists is made again
/// (as CRIU does). A failure is a warning here; the restore checker then names the difference.
pub fn join_cgroups(pid: Pid, cgroups: &[CgroupState], warnings: &mut Vec<String>) {
    join(pid, cgroups, "cgroup.procs", warnings);
}

/// Moves one thread into the cgroups it was in apart from its process (`tasks` of a cgroup
/// v1 hierarchy, `cgroup.threads` of a threaded cgroup v2).
pub fn join_thread_cgroups(tid: Pid, cgroups: &[CgroupState], warnings: &mut Vec<String>) {
    join(tid, cgroups, "", warnings);
}

fn join(pid: Pid, cgroups: &[CgroupState], file: &str, warnings: &mut Vec<String>) {
    // Where the task is now (it starts in the restorer's cgroups): joining a cgroup it is in
    // already costs a cgroup migration (an RCU grace period, ~10 ms) for nothing.
    let now = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let already = |c: &CgroupState| {
        now.lines().any(|line| {
            let mut parts = line.splitn(3, ':');
            matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(h), Some(ctl), Some(path))
                    if h.parse() == Ok(c.hierarchy)
                        && same_controllers(ctl, &c.controllers)
                        && path == c.path
            )
        })
    };
    let mounts = cgroup_mounts();
    for c in cgroups.iter().filter(|c| !already(c)) {
        let Some((_, mount)) = mounts
            .iter()
            .find(|(ctl, _)| same_controllers(ctl, &c.controllers))
        else {
            continue;
        };
        let dir = format!("{mount}{}", c.path.trim_end_matches('/'));
        if !std::path::Path::new(&dir).exists()
            && let Err(e) = std::fs::create_dir_all(&dir)
        {
            warnings.push(format!(
                "cgroup {}:{} could not be made again ({dir}: {e})",
                c.controllers, c.path
            ));
            continue;
        }
        let file = match file {
            "" if c.hierarchy == 0 => "cgroup.threads",
            "" => "tasks",
            f => f,
        };
        let target = format!("{dir}/{file}");
        if let Err(e) = std::fs::write(&target, pid.as_raw().to_string()) {
            warnings.push(format!(
                "cgroup {}:{} not joined ({target}: {e})",
                c.controllers, c.path
            ));
        }
    }
}

/// Gives the task the audit login uid it had. Only a task can write its own
/// `/proc/self/loginuid`, with `CAP_AUDIT_CONTROL`, which it still has here (its credentials
/// come later), as CRIU does. Its session id cannot be set: writing the login uid starts a
/// new one, and the restore checker names that change.
pub fn set_loginuid(inj: &Injector<'_>, want: Option<u32>) -> Result<(), RestoreError> {
    let Some(want) = want else { return Ok(()) };
    let task = inj.tracee().pid();
    let now = std::fs::read_to_string(format!("/proc/{task}/loginuid"))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok());
    if now.is_none_or(|n| n == want) {
        return Ok(());
    }
    let path = inj.put_path("/proc/self/loginuid")?;
    let fd = inj.call(
        "open /proc/self/loginuid",
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            path,
            (libc::O_WRONLY | libc::O_CLOEXEC) as u64,
            0,
            0,
            0,
        ],
    )?;
    let text = want.to_string();
    let buf = inj.put(4096, text.as_bytes())?;
    let written = inj.call_raw(libc::SYS_write, [fd, buf, text.len() as u64, 0, 0, 0])?;
    inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
    written.map_err(|e| RestoreError::Io {
        what: format!(
            "set the audit login uid to {want} (/proc/self/loginuid; it may be immutable here)"
        ),
        source: e.into(),
    })?;
    Ok(())
}

/// Interval timers and POSIX timers (with their ids), once every thread exists.
pub fn restore_timers(inj: &Injector<'_>, a: &AttrsState) -> Result<(), RestoreError> {
    for t in a
        .itimers
        .iter()
        .filter(|t| t.value_us != 0 || t.interval_us != 0)
    {
        let tv = |us: u64| [us / 1_000_000, us % 1_000_000];
        // A periodic timer caught at its expiry reads 0 left; 0 would disarm it.
        let value_us = if t.value_us == 0 { 1 } else { t.value_us };
        let val: Vec<u8> = tv(t.interval_us)
            .into_iter()
            .chain(tv(value_us))
            .flat_map(u64::to_le_bytes)
            .collect();
        let addr = inj.put(4096, &val)?;
        inj.call(
            "setitimer",
            libc::SYS_setitimer,
            [u64::from(t.which), addr, 0, 0, 0, 0],
        )?;
    }
    if a.posix_timers.is_empty() {
        return Ok(());
    }
    // With this switch on, timer_create takes the id to use from *timerid.
    inj.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0],
    )?;
    for t in &a.posix_timers {
        // struct sigevent: sigev_value (8), sigev_signo (4), sigev_notify (4), then the
        // union whose first member is the thread id; 64 bytes in all.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&t.value.to_le_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_le_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_le_bytes());
        if t.notify == SIGEV_THREAD_ID {
            ev[16..20].copy_from_slice(&t.notify_tid.to_le_bytes());
        }
        let ev_addr = inj.put(4096, &ev)?;
        let id_addr = inj.put(4096 + 64, &t.id.to_le_bytes())?;
        inj.call(
            "timer_create",
            libc::SYS_timer_create,
            [t.clock as u64, ev_addr, id_addr, 0, 0, 0],
        )?;
        // As for itimers: a periodic timer at its expiry reads 0 left, which would disarm it.
        let value_ns = if t.value_ns == 0 && t.interval_ns != 0 {
            1
        } else {
            t.value_ns
        };
        let spec: Vec<u8> = [
            t.interval_ns / 1_000_000_000,
            t.interval_ns % 1_000_000_000,
            value_ns / 1_000_000_000,
            value_ns % 1_000_000_000,
        ]
        .into_iter()
        .flat_map(u64::to_le_bytes)
        .collect();
        let spec_addr = inj.put(4096 + 128, &spec)?;
        inj.call(
            "timer_settime",
            libc::SYS_timer_settime,
            [t.id as u64, 0, spec_addr, 0, 0, 0],
        )?;
    }
    inj.call(
        "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
        libc::SYS_prctl,
        [PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// Owners and signals of signal-driven I/O (`F_SETOWN_EX`, `F_SETSIG`), once every thread
/// exists (an owner may be any of them). Set from inside, so the ids are the process's own.
pub fn restore_fd_owners(inj: &Injector<'_>, s: &ProcessState) -> Result<(), RestoreError> {
    for f in &s.fds {
        let o = f.owner;
        if o.pid != 0 {
            let mut ex = Vec::with_capacity(8);
            ex.extend_from_slice(&o.kind.to_le_bytes());
            ex.extend_from_slice(&o.pid.to_le_bytes());
            let addr = inj.put(4096, &ex)?;
            inj.call_raw(
                libc::SYS_fcntl,
                [f.fd as u64, sys::F_SETOWN_EX as u64, addr, 0, 0, 0],
            )?
            .map_err(|e| {
                RestoreError::Layout(format!(
                    "fd {}: I/O signal owner (type {}, id {}) not set back: {e}",
                    f.fd, o.kind, o.pid
                ))
            })?;
        }
        if o.sig != 0 {
            inj.call_raw(
                libc::SYS_fcntl,
                [f.fd as u64, sys::F_SETSIG as u64, u64::from(o.sig), 0, 0, 0],
            )?
            .map_err(|e| {
                RestoreError::Layout(format!(
                    "fd {}: I/O signal {} not set back: {e}",
                    f.fd, o.sig
                ))
            })?;
        }
    }
    Ok(())
}

/// Before the ids change, in each thread: keep the permitted capabilities across `setresuid`
/// and drop what the bounding set lacked (needs `CAP_SETPCAP`, gone afterwards).
pub fn before_creds(inj: &Injector<'_>, a: &AttrsState) -> Result<(), RestoreError> {
    if a.caps == [0; 5] {
        return Ok(()); // an image without attributes
    }
    inj.call(
        "prctl(PR_SET_KEEPCAPS)",
        libc::SYS_prctl,
        [libc::PR_SET_KEEPCAPS as u64, 1, 0, 0, 0, 0],
    )?;
    // The capabilities this kernel knows (the `caps` crate asks it).
    let known = caps::runtime::thread_all_supported();
    for cap in known.iter().map(|c| u64::from(c.index())) {
        if a.caps[3] & (1 << cap) == 0 {
            // EINVAL for a capability this kernel does not know is harmless.
            let _ = inj.call_raw(
                libc::SYS_prctl,
                [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct` (version 3) and two `__user_cap_data_struct` for the
/// sets (inheritable, permitted, effective), as `capset` takes them.
fn capset_args(inheritable: u64, permitted: u64, effective: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    buf.extend_from_slice(&0x2008_0522u32.to_le_bytes());
    buf.extend_from_slice(&0i32.to_le_bytes());
    for half in [0u32, 32] {
        for set in [effective, permitted, inheritable] {
            buf.extend_from_slice(&((set >> half) as u32).to_le_bytes());
        }
    }
    buf
}

/// The permitted capabilities of the restorer, which a new task forked from it holds, and
/// keeps across its id change (`PR_SET_KEEPCAPS` in [`before_creds`]).
fn restorer_permitted() -> u64 {
    caps::read(None, caps::CapSet::Permitted)
        .map(|set| set.iter().fold(0u64, |m, c| m | (1 << c.index())))
        .unwrap_or(0)
}

/// Right after the ids changed (which empties the effective set of a task that leaves uid 0):
/// every capability the task still holds made effective again, so that the steps after the
/// id change that need one (`setfsuid` to an id that is none of the others, `CAP_SETUID`;
/// `PR_SET_SECUREBITS`, `CAP_SETPCAP`) can be taken. [`after_creds`] sets the image's sets.
pub fn raise_kept_caps(inj: &Injector<'_>, a: &AttrsState) -> Result<bool, RestoreError> {
    if a.caps == [0; 5] {
        return Ok(false); // an image without attributes: nothing was kept
    }
    let all = restorer_permitted();
    let hdr = inj.put(4096, &capset_args(a.caps[0] & all, all, all))?;
    Ok(inj
        .call_raw(libc::SYS_capset, [hdr, hdr + 8, 0, 0, 0, 0])?
        .is_ok())
}

/// The image's ambient capabilities (each must be permitted and inheritable by then).
fn raise_ambient(inj: &Injector<'_>, a: &AttrsState) -> Result<(), RestoreError> {
    for cap in (0..64u64).filter(|c| a.caps[4] & (1 << c) != 0) {
        inj.call(
            "prctl(PR_CAP_AMBIENT_RAISE)",
            libc::SYS_prctl,
            [
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_RAISE as u64,
                cap,
                0,
                0,
                0,
            ],
        )?;
    }
    Ok(())
}

/// After the ids changed, in each thread: the capability sets, then what a credential change
/// resets (no_new_privs stays set once set, so it comes last). The process-wide attributes
/// are set by the leader only. The thread's securebits (`PR_SET_SECUREBITS`, `CAP_SETPCAP`) come
/// after everything they could forbid (`PR_SET_KEEPCAPS` under `SECBIT_KEEP_CAPS_LOCKED`,
/// ambient capabilities under `SECBIT_NO_CAP_AMBIENT_RAISE`) and before the capability sets
/// are lowered to the image's.
pub fn after_creds(
    inj: &Injector<'_>,
    s: &ProcessState,
    t: &ThreadState,
    leader: bool,
    pdeathsig: bool,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let a = &s.attrs;
    if a.caps != [0; 5] {
        inj.call(
            "prctl(PR_SET_KEEPCAPS)",
            libc::SYS_prctl,
            [libc::PR_SET_KEEPCAPS as u64, 0, 0, 0, 0, 0],
        )?;
        // Ambient capabilities must be permitted and inheritable when raised: with the
        // image's inheritable set and everything still permitted, when the task still has it.
        let all = restorer_permitted();
        let hdr = inj.put(4096, &capset_args(a.caps[0], all, all))?;
        let raised = inj
            .call_raw(libc::SYS_capset, [hdr, hdr + 8, 0, 0, 0, 0])?
            .is_ok();
        if raised {
            raise_ambient(inj, a)?;
        }
        if let Some(ta) = &t.attrs
            && ta.securebits != 0
        {
            if raised {
                inj.call(
                    "prctl(PR_SET_SECUREBITS)",
                    libc::SYS_prctl,
                    [
                        libc::PR_SET_SECUREBITS as u64,
                        u64::from(ta.securebits),
                        0,
                        0,
                        0,
                        0,
                    ],
                )?;
            } else {
                warnings.push(format!(
                    "thread {}: securebits {:#x} could not be set back (no CAP_SETPCAP left)",
                    t.tid, ta.securebits
                ));
            }
        }
        let hdr = inj.put(4096, &capset_args(a.caps[0], a.caps[1], a.caps[2]))?;
        if let Err(e) = inj.call_raw(libc::SYS_capset, [hdr, hdr + 8, 0, 0, 0, 0])? {
            warnings.push(format!(
                "capabilities could not be set back ({e}); the process has fewer"
            ));
        }
        if !raised {
            raise_ambient(inj, a)?;
        }
    }
    if a.no_new_privs {
        inj.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
    }
    if leader {
        // Changing ids reset these two.
        let dumpable = if a.caps == [0; 5] && a.dumpable == 0 {
            1
        } else {
            a.dumpable
        };
        inj.call(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            [
                libc::PR_SET_DUMPABLE as u64,
                u64::from(dumpable),
                0,
                0,
                0,
                0,
            ],
        )?;
        // A credential change clears the parent-death signal: it comes after, on a tree
        // member (its parent is restored too); the root's is set by `arm_pdeathsig`.
        if a.pdeathsig != 0 && pdeathsig {
            inj.call(
                "prctl(PR_SET_PDEATHSIG)",
                libc::SYS_prctl,
                [
                    libc::PR_SET_PDEATHSIG as u64,
                    u64::from(a.pdeathsig),
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        if a.child_subreaper {
            inj.call(
                "prctl(PR_SET_CHILD_SUBREAPER)",
                libc::SYS_prctl,
                [libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

/// From outside: `oom_score_adj` of the process.
pub fn set_oom_score_adj(pid: Pid, a: &AttrsState, warnings: &mut Vec<String>) {
    let path = format!("/proc/{pid}/oom_score_adj");
    let now = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if now != Some(a.oom_score_adj)
        && let Err(e) = std::fs::write(&path, a.oom_score_adj.to_string())
    {
        warnings.push(format!(
            "oom_score_adj {} could not be set back ({e})",
            a.oom_score_adj
        ));
    }
}

/// From outside: nice value, policy (with `SCHED_RESET_ON_FORK`) and CPU affinity of one
/// thread. A policy or nice value the kernel refuses fails the restore: the process would run
/// otherwise than it did.
pub fn set_sched(tid: Pid, s: &SchedState, warnings: &mut Vec<String>) -> Result<(), RestoreError> {
    const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;
    if s.affinity.is_empty() {
        return Ok(()); // an image without scheduling state
    }
    let mut set = nix::sched::CpuSet::new();
    for cpu in 0..(s.affinity.len() * 64).min(nix::sched::CpuSet::count()) {
        if s.affinity[cpu / 64] & (1 << (cpu % 64)) != 0 {
            let _ = set.set(cpu);
        }
    }
    if let Err(e) = nix::sched::sched_setaffinity(tid, &set) {
        warnings.push(format!("thread {tid}: CPU affinity not set back ({e})"));
    }
    let policy = s.policy
        | if s.reset_on_fork {
            SCHED_RESET_ON_FORK
        } else {
            0
        };
    if policy != 0 || s.rt_priority != 0 {
        sys::set_scheduler(tid, policy, s.rt_priority).map_err(|e| {
            RestoreError::Layout(format!(
                "thread {tid}: scheduling policy {} (priority {}{}) not set back: {e}",
                s.policy,
                s.rt_priority,
                if s.reset_on_fork {
                    ", reset on fork"
                } else {
                    ""
                }
            ))
        })?;
    }
    sys::set_nice(tid, s.nice).map_err(|e| {
        RestoreError::Layout(format!("thread {tid}: nice {} not set back: {e}", s.nice))
    })?;
    Ok(())
}

/// seccomp filters (oldest first) or strict mode of one thread. Installed while the task is
/// still root (a filter needs `CAP_SYS_ADMIN` or no_new_privs) and traced with
/// `PTRACE_O_SUSPEND_SECCOMP`, so they bind only once it runs on its own.
pub fn restore_seccomp(
    inj: &Injector<'_>,
    s: &crate::state::SeccompState,
) -> Result<(), RestoreError> {
    const SECCOMP_SET_MODE_STRICT: u64 = 0;
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    for f in &s.filters {
        let filter = inj.put(8192, f)?;
        // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        let mut prog = Vec::with_capacity(16);
        prog.extend_from_slice(&((f.len() / 8) as u64).to_le_bytes());
        prog.extend_from_slice(&filter.to_le_bytes());
        let prog_addr = inj.put(4096, &prog)?;
        inj.call(
            "seccomp(SECCOMP_SET_MODE_FILTER)",
            libc::SYS_seccomp,
            [SECCOMP_SET_MODE_FILTER, 0, prog_addr, 0, 0, 0],
        )?;
    }
    if s.mode == 1 {
        inj.call(
            "seccomp(SECCOMP_SET_MODE_STRICT)",
            libc::SYS_seccomp,
            [SECCOMP_SET_MODE_STRICT, 0, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

const PR_MCE_KILL: u64 = 33;
const PR_MCE_KILL_CLEAR: u64 = 0;
const PR_MCE_KILL_SET: u64 = 1;
const PR_MCE_KILL_DEFAULT: u32 = 2;
const PR_TSC_ENABLE: u32 = 1;

/// What a thread has of its own and sets for itself: its name, timer slack (before its
/// scheduling policy, which a real-time one would make ignore it), machine-check kill policy
/// and `PR_SET_TSC`. A new thread inherits these from the one that made it, so each thread
/// sets its own; `inherited` is the thread it was made by (`None` for the leader, made by the
/// restorer).
pub fn restore_thread_own(
    inj: &Injector<'_>,
    t: &ThreadState,
    inherited: Option<&ThreadState>,
) -> Result<(), RestoreError> {
    let Some(a) = &t.attrs else {
        return Ok(()); // an image without them
    };
    if !a.comm.is_empty() {
        let mut name = a.comm.as_bytes().to_vec();
        name.truncate(15);
        name.push(0);
        let addr = inj.put(4096, &name)?;
        inj.call(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, addr, 0, 0, 0, 0],
        )?;
    }
    // 0 is what a real-time thread reads; setting 0 asks for the default, which the policy
    // set later makes 0 again.
    inj.call(
        "prctl(PR_SET_TIMERSLACK)",
        libc::SYS_prctl,
        [libc::PR_SET_TIMERSLACK as u64, a.timer_slack_ns, 0, 0, 0, 0],
    )?;
    // What the thread starts with: the restorer's (the default policy, the TSC readable) for
    // the leader, the leader's for the others.
    let (mce_kill, tsc) = inherited
        .and_then(|l| l.attrs.as_ref())
        .map_or((PR_MCE_KILL_DEFAULT, PR_TSC_ENABLE), |l| {
            (l.mce_kill, l.tsc)
        });
    if a.mce_kill != mce_kill {
        let args = if a.mce_kill == PR_MCE_KILL_DEFAULT {
            [PR_MCE_KILL, PR_MCE_KILL_CLEAR, 0, 0, 0, 0]
        } else {
            [PR_MCE_KILL, PR_MCE_KILL_SET, u64::from(a.mce_kill), 0, 0, 0]
        };
        inj.call("prctl(PR_MCE_KILL)", libc::SYS_prctl, args)?;
    }
    if a.tsc != 0 && a.tsc != tsc {
        inj.call(
            "prctl(PR_SET_TSC)",
            libc::SYS_prctl,
            [libc::PR_SET_TSC as u64, u64::from(a.tsc), 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// From outside: the I/O priority of one thread. A thread that never chose one reads the
/// priority its nice value gives (`IOPRIO_CLASS_NONE`); one equal to that is set back as
/// `IOPRIO_CLASS_NONE` (it follows the nice value, as it did), and set explicitly when that
/// does not read back the same.
pub fn set_ioprio(tid: Pid, t: &ThreadState, warnings: &mut Vec<String>) {
    let Some(a) = &t.attrs else {
        return;
    };
    let now = sys::ioprio_get(tid).ok();
    if now == Some(a.ioprio) {
        return;
    }
    if a.ioprio != 0
        && sys::ioprio_set(tid, 0).is_ok()
        && sys::ioprio_get(tid).ok() == Some(a.ioprio)
    {
        return;
    }
    if let Err(e) = sys::ioprio_set(tid, a.ioprio) {
        warnings.push(format!(
            "thread {tid}: I/O priority {:#x} could not be set back ({e})",
            a.ioprio
        ));
    }
}

/// From outside: `/proc/PID/coredump_filter` of the process.
pub fn set_coredump_filter(pid: Pid, a: &AttrsState, warnings: &mut Vec<String>) {
    let Some(filter) = a.coredump_filter else {
        return;
    };
    let path = format!("/proc/{pid}/coredump_filter");
    if let Err(e) = std::fs::write(&path, format!("{filter:#x}")) {
        warnings.push(format!(
            "coredump_filter {filter:#x} could not be set back ({e})"
        ));
    }
}
