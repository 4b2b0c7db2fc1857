//! Creating the task that becomes the restored process: with its original PID when that is
//! free, else inside a fresh PID namespace where it gets the same PID.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::CloneFlags;
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
const ZOMBIE_WAIT: Duration = Duration::from_millis(2500);

/// The new task (and the init of its PID namespace, if one was made). Until `disarm`, dropping
/// it kills both, so a failed restore leaves nothing behind.
#[derive(Debug)]
pub struct NewTask {
    /// PID in the restorer's namespace.
    pub pid: Pid,
    /// Init of the new PID namespace, if the original PID was taken.
    pub ns_init: Option<Pid>,
    /// Write end of the pipe that keeps the namespace init waiting until we exit.
    _hold: Option<OwnedFd>,
    armed: bool,
}

impl NewTask {
    /// The restore succeeded: leave the task alone from now on.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for NewTask {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in std::iter::once(self.pid).chain(self.ns_init) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
        }
    }
}

fn holder_is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next()).is_some_and(|st| st == "Z" || st == "X"),
        Err(_) => true, // gone already: worth another try
    }
}

/// Creates a task with PID `want`, or one in a new PID namespace per `mode`.
pub fn create(want: i32, mode: PidNsMode) -> Result<NewTask, RestoreError> {
    let me = nix::unistd::getpid().as_raw();
    let start = Instant::now();
    loop {
        match sys::clone::clone3(ChildBody::Stub { expected_ppid: me }, Some(want), false) {
            Ok(pid) => return Ok(NewTask { pid, ns_init: None, _hold: None, armed: true }),
            Err(Errno::EEXIST) if holder_is_zombie(want) && start.elapsed() < ZOMBIE_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::EEXIST) => break,
            Err(source) => return Err(RestoreError::Create { step: "clone3 with set_tid", source }),
        }
    }
    if mode == PidNsMode::Never {
        return Err(RestoreError::PidTaken { pid: want });
    }
    let create = |step| move |source| RestoreError::Create { step, source };
    let (hold_read, hold_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(create("pipe"))?;
    let init = sys::clone::clone3(
        ChildBody::NsInit { hold_read: hold_read.as_raw_fd(), hold_write: hold_write.as_raw_fd() },
        None,
        true,
    )
    .map_err(create("clone3 into a new PID namespace"))?;
    drop(hold_read);
    let mut task = NewTask { pid: init, ns_init: Some(init), _hold: Some(hold_write), armed: true };
    let pidfd = sys::pidfd_open(init).map_err(create("pidfd_open"))?;
    nix::sched::setns(&pidfd, CloneFlags::CLONE_NEWPID).map_err(create("setns into the new PID namespace"))?;
    // Inside the namespace our child sees no parent (getppid() == 0).
    let pid = sys::clone::clone3(ChildBody::Stub { expected_ppid: 0 }, Some(want), false)
        .map_err(create("clone3 with set_tid in the new PID namespace"))?;
    task.pid = pid;
    Ok(task)
}
