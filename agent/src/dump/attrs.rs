//! Process attributes beyond credentials, timers, and per-thread scheduling.

use nix::unistd::Pid;

use super::DumpError;
use crate::proc::{self, ProcError};
use crate::ptrace::{Entry, Tracee};
use crate::state::{
    AttrsState, CgroupState, ItimerState, PosixTimerState, SchedState, ThreadAttrsState,
};

/// What only the process can tell, asked by injected calls through `scratch`.
pub struct Queried {
    dumpable: u32,
    pdeathsig: u32,
    child_subreaper: bool,
    itimers: Vec<ItimerState>,
    /// Timers with their host-namespace notify target still in `notify_tid`.
    posix_timers: Vec<PosixTimerState>,
    membarrier: u32,
}

/// `membarrier(2)` commands whose registration the process can show: each private expedited
/// command (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`, `_SYNC_CORE`, `_RSEQ`) paired with the
/// command that registers it. The command fails with `EPERM` until the process (its mm)
/// registered; it succeeds, running a barrier, once it did.
pub const MEMBARRIER_PRIVATE: [(u32, u32); 3] = [(8, 16), (32, 64), (128, 256)];
/// What only a thread can tell of itself, asked by injected calls in that thread.
#[derive(Debug, Clone, Copy)]
pub struct ThreadQueried {
    timer_slack_ns: u64,
    tsc: u32,
    mce_kill: u32,
    securebits: u32,
}

const PR_MCE_KILL_GET: u64 = 34;

/// Runs the per-thread `prctl` queries in thread `t`.
pub fn query_thread(
    t: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    scratch: u64,
) -> Result<ThreadQueried, DumpError> {
    let prctl = |what: &'static str, op: i32, arg: u64| {
        t.inject(
            entry,
            regs,
            what,
            libc::SYS_prctl,
            [op as u64, arg, 0, 0, 0, 0],
        )
    };
    let timer_slack_ns = prctl("prctl(PR_GET_TIMERSLACK)", libc::PR_GET_TIMERSLACK, 0)?;
    let mce_kill = prctl("prctl(PR_MCE_KILL_GET)", PR_MCE_KILL_GET as i32, 0)? as u32;
    let securebits = prctl("prctl(PR_GET_SECUREBITS)", libc::PR_GET_SECUREBITS, 0)? as u32;
    // EINVAL where the processor cannot make the TSC fault: readable, as for everyone.
    let tsc = match t.inject_raw(
        entry,
        regs,
        libc::SYS_prctl,
        [libc::PR_GET_TSC as u64, scratch, 0, 0, 0, 0],
    )? {
        0 => {
            let mut int = [0u8; 4];
            t.read_mem(scratch, &mut int)?;
            u32::from_le_bytes(int)
        }
        _ => 1,
    };
    Ok(ThreadQueried {
        timer_slack_ns,
        tsc,
        mce_kill,
        securebits,
    })
}

/// A thread's own attributes: what it answered ([`query_thread`]) and what is read from
/// outside (its name, its I/O priority).
pub fn thread_attrs(pid: Pid, tid: Pid, q: ThreadQueried) -> Result<ThreadAttrsState, DumpError> {
    let comm = proc::read(pid.as_raw(), &format!("task/{tid}/comm"))?
        .trim_end_matches('\n')
        .to_string();
    let ioprio =
        crate::sys::ioprio_get(tid).map_err(|source| crate::ptrace::PtraceError::Request {
            op: "ioprio_get",
            pid: tid.as_raw(),
            source,
        })?;
    Ok(ThreadAttrsState {
        comm,
        ioprio,
        timer_slack_ns: q.timer_slack_ns,
        tsc: q.tsc,
        mce_kill: q.mce_kill,
        securebits: q.securebits,
    })
}

/// `/proc/PID/coredump_filter` (hexadecimal).
fn coredump_filter(pid: i32) -> Result<u32, DumpError> {
    let text = proc::read(pid, "coredump_filter")?;
    u32::from_str_radix(text.trim(), 16).map_err(|_| {
        ProcError::Parse {
            file: "coredump_filter",
            what: format!("{:?} is not a hexadecimal number", text.trim()),
        }
        .into()
    })
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())
}

/// Runs the queries in the thread-group leader.
pub fn query(
    t: &Tracee,
    entry: Entry,
    regs: &libc::user_regs_struct,
    scratch: u64,
) -> Result<Queried, DumpError> {
    let pid = t.pid().as_raw();
    let dumpable = t.inject(
        entry,
        regs,
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0],
    )? as u32;
    let mut int = [0u8; 4];
    t.inject(
        entry,
        regs,
        "prctl(PR_GET_PDEATHSIG)",
        libc::SYS_prctl,
        [libc::PR_GET_PDEATHSIG as u64, scratch, 0, 0, 0, 0],
    )?;
    t.read_mem(scratch, &mut int)?;
    let pdeathsig = u32::from_le_bytes(int);
    t.inject(
        entry,
        regs,
        "prctl(PR_GET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        [libc::PR_GET_CHILD_SUBREAPER as u64, scratch, 0, 0, 0, 0],
    )?;
    t.read_mem(scratch, &mut int)?;
    let child_subreaper = u32::from_le_bytes(int) != 0;
    let mut membarrier = 0;
    for (cmd, register) in MEMBARRIER_PRIVATE {
        let r = t.inject_raw(
            entry,
            regs,
            libc::SYS_membarrier,
            [u64::from(cmd), 0, 0, 0, 0, 0],
        )?;
        // EPERM: not registered; EINVAL: a kernel without that command.
        if r == 0 {
            membarrier |= register;
        }
    }

    let mut itimers = Vec::with_capacity(3);
    let mut buf = [0u8; 32];
    for which in 0..3u32 {
        t.inject(
            entry,
            regs,
            "getitimer",
            libc::SYS_getitimer,
            [u64::from(which), scratch, 0, 0, 0, 0],
        )?;
        t.read_mem(scratch, &mut buf)?;
        // struct itimerval { it_interval, it_value }, each { tv_sec, tv_usec }.
        let us = |i: usize| {
            word(&buf, i)
                .saturating_mul(1_000_000)
                .saturating_add(word(&buf, i + 1))
        };
        itimers.push(ItimerState {
            which,
            interval_us: us(0),
            value_us: us(2),
        });
    }

    let mut posix_timers = Vec::new();
    for pt in proc::parse_timers(&proc::read(pid, "timers")?)? {
        t.inject(
            entry,
            regs,
            "timer_gettime",
            libc::SYS_timer_gettime,
            [pt.id as u64, scratch, 0, 0, 0, 0],
        )?;
        t.read_mem(scratch, &mut buf)?;
        // struct itimerspec { it_interval, it_value }, each { tv_sec, tv_nsec }.
        let ns = |i: usize| {
            word(&buf, i)
                .saturating_mul(1_000_000_000)
                .saturating_add(word(&buf, i + 1))
        };
        let overrun = t.inject(
            entry,
            regs,
            "timer_getoverrun",
            libc::SYS_timer_getoverrun,
            [pt.id as u64, 0, 0, 0, 0, 0],
        )? as i32;
        posix_timers.push(PosixTimerState {
            id: pt.id,
            clock: pt.clock,
            signo: pt.signo,
            value: pt.value,
            notify: pt.notify,
            notify_tid: if pt.notify == 4 { pt.target } else { 0 },
            interval_ns: ns(0),
            value_ns: ns(2),
            overrun,
        });
    }
    // `/proc/PID/timers` lists them in the kernel's hash order, which a restore changes.
    posix_timers.sort_by_key(|t| t.id);
    Ok(Queried {
        dumpable,
        pdeathsig,
        child_subreaper,
        itimers,
        posix_timers,
        membarrier,
    })
}

/// Puts the attributes together. `tids` maps the threads' TIDs in our namespace to theirs.
pub fn collect(
    pid: Pid,
    status: &proc::Status,
    q: Queried,
    tids: &[(i32, i32)],
) -> Result<AttrsState, DumpError> {
    let raw = pid.as_raw();
    let oom_score_adj = proc::read(raw, "oom_score_adj")?
        .trim()
        .parse()
        .map_err(|_| ProcError::Parse {
            file: "oom_score_adj",
            what: "not a number".into(),
        })?;
    let cgroups = cgroups_of(&proc::read(raw, "cgroup")?)?;
    let mut posix_timers = q.posix_timers;
    for pt in &mut posix_timers {
        if pt.notify == 4 {
            pt.notify_tid = tids
                .iter()
                .find(|(host, _)| *host == pt.notify_tid)
                .map_or(0, |(_, own)| *own);
            if pt.notify_tid == 0 {
                return Err(DumpError::Unsupported(format!(
                    "POSIX timer {} signals a thread outside the process",
                    pt.id
                )));
            }
        }
    }
    Ok(AttrsState {
        no_new_privs: status.no_new_privs,
        caps: status.caps,
        dumpable: q.dumpable,
        pdeathsig: q.pdeathsig,
        child_subreaper: q.child_subreaper,
        oom_score_adj,
        loginuid: audit_id(raw, "loginuid"),
        sessionid: audit_id(raw, "sessionid"),
        cgroups,
        itimers: q.itimers,
        posix_timers,
        ctty: None,
        stop_signal: 0,
        membarrier: q.membarrier,
        shares_with_parent: 0,
        coredump_filter: Some(coredump_filter(raw)?),
    })
}

const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;
const SCHED_DEADLINE: u32 = 6;

/// Nice value, policy (with `SCHED_RESET_ON_FORK`), real-time priority and CPU affinity of one
/// thread. `SCHED_DEADLINE` is refused: its runtime, deadline and period are not kept.
pub fn sched(pid: Pid, tid: Pid) -> Result<SchedState, DumpError> {
    let stat = proc::read(pid.as_raw(), &format!("task/{tid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // fields[0] is stat field 3.
    let field = |n: usize| -> Result<i64, ProcError> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ProcError::Parse {
                file: "stat",
                what: format!("field {n}"),
            })
    };
    let set = nix::sched::sched_getaffinity(tid).map_err(|source| {
        crate::ptrace::PtraceError::Request {
            op: "sched_getaffinity",
            pid: tid.as_raw(),
            source,
        }
    })?;
    let cpus = nix::sched::CpuSet::count();
    let mut affinity = vec![0u64; cpus.div_ceil(64)];
    for cpu in 0..cpus {
        if set.is_set(cpu).unwrap_or(false) {
            affinity[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    while affinity.last() == Some(&0) {
        affinity.pop();
    }
    let raw =
        crate::sys::get_scheduler(tid).map_err(|source| crate::ptrace::PtraceError::Request {
            op: "sched_getscheduler",
            pid: tid.as_raw(),
            source,
        })?;
    let policy = (raw & !SCHED_RESET_ON_FORK) as u32;
    if policy == SCHED_DEADLINE {
        return Err(DumpError::Unsupported(format!(
            "thread {tid}: SCHED_DEADLINE scheduling"
        )));
    }
    Ok(SchedState {
        nice: field(19)? as i32,
        policy,
        rt_priority: field(40)? as u32,
        reset_on_fork: raw & SCHED_RESET_ON_FORK != 0,
        affinity,
    })
}

/// seccomp mode and filters of one stopped thread, oldest filter first.
pub fn seccomp(tid: Pid, mode: u32) -> Result<crate::state::SeccompState, DumpError> {
    let mut filters = Vec::new();
    if mode == 2 {
        for index in 0.. {
            match crate::sys::ptrace::get_seccomp_filter(tid, index) {
                Ok(Some(f)) => filters.push(f),
                Ok(None) => break,
                Err(source) => {
                    return Err(crate::ptrace::PtraceError::Request {
                        op: "get seccomp filter",
                        pid: tid.as_raw(),
                        source,
                    }
                    .into());
                }
            }
        }
        // PTRACE_SECCOMP_GET_FILTER counts from the oldest filter (index 0 is the first
        // installed), the order they are installed in again.
    }
    Ok(crate::state::SeccompState { mode, filters })
}

/// Parses `/proc/PID/cgroup` (or a thread's).
pub fn cgroups_of(text: &str) -> Result<Vec<CgroupState>, DumpError> {
    let mut cgroups = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(h), Some(c), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ProcError::Parse {
                file: "cgroup",
                what: format!("line {line:?}"),
            }
            .into());
        };
        cgroups.push(CgroupState {
            hierarchy: h.parse().map_err(|_| ProcError::Parse {
                file: "cgroup",
                what: format!("hierarchy {h:?}"),
            })?,
            controllers: c.to_string(),
            path: path.to_string(),
        });
    }
    Ok(cgroups)
}

/// `/proc/PID/loginuid` or `sessionid`; `None` without audit in the kernel.
fn audit_id(pid: i32, file: &str) -> Option<u32> {
    proc::read(pid, file).ok()?.trim().parse().ok()
}
