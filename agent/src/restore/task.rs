//! Creating the task that becomes the restored process: with its original PID when that is
//! free, else inside a fresh PID namespace where it gets the same PID.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::RestoreError;
use crate::sys::{self, clone::ChildBody};

/// What to do when the original PID is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PidNsMode {
    /// Wait briefly, then restore into a new PID namespace.
    #[default]
    Auto,
    /// Fail.
    Never,
}

/// How long a PID held by a zombie may take to be reaped (PID 1 here reaps about once a second).
pub const ZOMBIE_WAIT: Duration = Duration::from_millis(2500);

/// The new task (and the init of its PID namespace, if one was made). Until `disarm`, dropping
/// it kills both, so a failed restore leaves nothing behind.
#[derive(Debug)]
pub struct NewTask {
    /// PID in the restorer's namespace.
    pub pid: Pid,
    /// Init of the new PID namespace, if the original PID was taken.
    pub ns_init: Option<Pid>,
    /// The stand-in parent of a task that is not to stay our child, until
    /// [`NewTask::release_parent`].
    detacher: Option<Pid>,
    armed: bool,
}

impl NewTask {
    /// The restore succeeded: leave the task alone from now on.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Lets the task go to the parent it keeps after the restore (the nearest child subreaper
    /// above the restorer, or init): its stand-in parent is killed and reaped. From here on a
    /// failure leaves its end to that parent. Nothing to do for a task that is our child or
    /// in a PID namespace of its own.
    pub fn release_parent(&mut self) -> Result<(), RestoreError> {
        let Some(mid) = self.detacher.take() else {
            return Ok(());
        };
        let _ = kill(mid, Signal::SIGKILL);
        waitpid(mid, None)
            .map(drop)
            .map_err(|source| RestoreError::Create {
                step: "end the stand-in parent",
                source,
            })
    }
}

impl Drop for NewTask {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in std::iter::once(self.pid).chain(self.ns_init) {
            kill_traced(pid);
        }
        // The stand-in parent reaps the task and exits; should it not, it goes now (the task
        // then goes to the parent above us).
        if let Some(mid) = self.detacher.take() {
            let start = Instant::now();
            while matches!(
                waitpid(mid, Some(WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::StillAlive)
            ) {
                if start.elapsed() > Duration::from_secs(5) {
                    let _ = kill(mid, Signal::SIGKILL);
                    let _ = waitpid(mid, None);
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Kills a half-built process (SIGKILL) and waits until it is gone. As the tracer of its
/// threads we are told of each one's death, and of the leader's only after all the others':
/// the threads are waited for first, or the leader's wait never ends.
pub fn kill_traced(pid: Pid) {
    let threads: Vec<Pid> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&t| t != pid.as_raw())
        .map(Pid::from_raw)
        .collect();
    let _ = kill(pid, Signal::SIGKILL);
    for t in threads {
        let _ = waitpid(t, Some(WaitPidFlag::__WALL));
    }
    let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
}

/// Whether `pid` is held by a zombie (or already gone).
pub fn holder_is_zombie(pid: i32) -> bool {
    match crate::proc::read(pid, "stat") {
        Ok(s) => crate::proc::parse_stat(&s).is_ok_and(|st| st.state == 'Z' || st.state == 'X'),
        Err(_) => true, // gone already: worth another try
    }
}

/// A task with PID `want` that is not our child: made by an intermediate child of ours, its
/// parent until [`NewTask::release_parent`] (or until it reaps the task when the restore
/// fails). Until we seize it, the task watches our pidfd and exits if we die first. Returns
/// the task and the intermediate.
fn detached(want: i32) -> Result<(Pid, Pid), Errno> {
    use std::os::fd::AsRawFd;
    let me = sys::pidfd_open(nix::unistd::getpid())?;
    let mid = sys::clone::clone3(
        ChildBody::Detacher {
            want,
            restorer_pidfd: me.as_raw_fd(),
        },
        None,
        false,
    )?;
    let start = Instant::now();
    loop {
        match waitpid(mid, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) if code > 100 => {
                return Err(Errno::from_raw(code - 100));
            }
            Ok(_) => return Err(Errno::ECHILD),
            Err(e) => return Err(e),
        }
        let made = crate::proc::read(want, "stat")
            .ok()
            .and_then(|s| crate::proc::parse_stat(&s).ok())
            .is_some_and(|st| st.ppid == mid.as_raw());
        if made {
            return Ok((Pid::from_raw(want), mid));
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = kill(mid, Signal::SIGKILL);
            let _ = waitpid(mid, None);
            return Err(Errno::ETIMEDOUT);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Makes the PIDs handed out next in our PID namespace (new processes and threads, ours or
/// anyone's) come after `pid`, by raising `/proc/sys/kernel/ns_last_pid` to it if it is
/// lower: the PIDs up to `pid` that are free stay free for `clone3` with `set_tid` (until
/// the numbers wrap). Best effort: without the privilege, nothing changes.
pub fn allocate_pids_above(pid: i32) {
    const PATH: &str = "/proc/sys/kernel/ns_last_pid";
    let last = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if last.is_some_and(|l| l >= pid) {
        return;
    }
    if let Err(e) = std::fs::write(PATH, pid.to_string()) {
        tracing::debug!(pid, %e, "cannot raise ns_last_pid");
    }
}

/// The parent of zombie `pid`, which is to reap it.
fn zombie_parent(pid: i32) -> Option<i32> {
    let stat = crate::proc::parse_stat(&crate::proc::read(pid, "stat").ok()?).ok()?;
    Some(stat.ppid)
}

/// Creates a task with PID `want`, or one in a new PID namespace per `mode`. `new_ns` asks
/// for the namespace at once (another PID of a tree is taken). `as_child` makes it our own
/// child (we can wait for it); otherwise it is made by a short-lived intermediate process and
/// adopted at once by the nearest child subreaper above us, or init — the parent it would
/// have once we exit — so that a parent-death signal set on it fires when that parent dies,
/// not when we exit. (In a new PID namespace its parent is the namespace's init either way.)
pub fn create(
    want: i32,
    mode: PidNsMode,
    new_ns: bool,
    as_child: bool,
) -> Result<NewTask, RestoreError> {
    let me = nix::unistd::getpid().as_raw();
    let start = Instant::now();
    let mut told = false;
    if !new_ns {
        loop {
            let made = if as_child {
                sys::clone::clone3(ChildBody::Stub { expected_ppid: me }, Some(want), false)
                    .map(|pid| (pid, None))
            } else {
                detached(want).map(|(pid, mid)| (pid, Some(mid)))
            };
            match made {
                Ok((pid, detacher)) => {
                    return Ok(NewTask {
                        pid,
                        ns_init: None,
                        detacher,
                        armed: true,
                    });
                }
                Err(Errno::EEXIST) if holder_is_zombie(want) && start.elapsed() < ZOMBIE_WAIT => {
                    if !told {
                        told = true;
                        tracing::warn!(
                            "pid {want} is still held by an exited process that its parent{} has \
                             not reaped yet; waiting up to {:.1} s for it",
                            zombie_parent(want).map_or(String::new(), |p| format!(" (pid {p})")),
                            ZOMBIE_WAIT.as_secs_f64()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(Errno::EEXIST) => break,
                Err(source) => {
                    return Err(RestoreError::Create {
                        step: "clone3 with set_tid",
                        source,
                    });
                }
            }
        }
    }
    if mode == PidNsMode::Never {
        return Err(RestoreError::PidTaken { pid: want });
    }
    let create = |step| move |source| RestoreError::Create { step, source };
    let init = sys::clone::clone3(ChildBody::NsInit { want }, None, true)
        .map_err(create("clone3 into a new PID namespace"))?;
    let mut task = NewTask {
        pid: init,
        ns_init: Some(init),
        detacher: None,
        armed: true,
    };
    // The init creates the process as its own child; find it by its PID in our namespace.
    let children = format!("/proc/{init}/task/{init}/children");
    let start = Instant::now();
    loop {
        let found = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        if let Some(pid) = found {
            task.pid = Pid::from_raw(pid);
            return Ok(task);
        }
        if let Ok(nix::sys::wait::WaitStatus::Exited(_, code)) =
            waitpid(init, Some(WaitPidFlag::WNOHANG))
        {
            task.armed = false;
            return Err(create("clone3 with set_tid in the new PID namespace")(
                Errno::from_raw(code - 100),
            ));
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(create("wait for the process in the new PID namespace")(
                Errno::ETIMEDOUT,
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
