//! The restorer's handle on the new task: a private `syscall; int3` page plus scratch memory
//! for arguments, through which every change inside the task is made.

use nix::errno::Errno;

use super::RestoreError;
use crate::ptrace::{Entry, PtraceError, Tracee};

/// Size of the injection area: one page of code, the rest scratch for arguments.
pub const AREA_LEN: u64 = 16 * 4096;
const CODE: [u8; 3] = [0x0f, 0x05, 0xcc]; // syscall; int3

/// Runs system calls inside the task being restored.
#[derive(Debug)]
pub struct Injector<'a> {
    t: &'a Tracee,
    template: libc::user_regs_struct,
    /// Start of the injection area.
    pub area: u64,
}

impl<'a> Injector<'a> {
    /// Maps the injection area at `area` by single-stepping an `mmap` over the `syscall`
    /// instruction at `vdso_syscall`, then writes the code into it through `/proc/PID/mem`.
    pub fn bootstrap(t: &'a Tracee, vdso_syscall: u64, area: u64) -> Result<Self, RestoreError> {
        let mut template = t.regs()?;
        // Injected calls never use the user stack; point it into our scratch area so that a
        // `sigaltstack` check or a stray signal frame never touches the image's memory.
        template.rsp = area + AREA_LEN - 64;
        let got = t.inject(
            Entry::SingleStep(vdso_syscall),
            &template,
            "mmap",
            libc::SYS_mmap,
            [
                area,
                AREA_LEN,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )?;
        if got != area {
            return Err(RestoreError::Layout(format!(
                "injection area landed at {got:#x}, not {area:#x}"
            )));
        }
        t.write_mem(area, &CODE)?;
        Ok(Self { t, template, area })
    }

    /// An injector for a task that has the area mapped already (a process forked by one that
    /// had it).
    pub fn attach(t: &'a Tracee, area: u64) -> Result<Self, RestoreError> {
        let mut template = t.regs()?;
        template.rsp = area + AREA_LEN - 64;
        Ok(Self { t, template, area })
    }

    /// An injector for another thread of the same process, through the same area.
    pub fn for_thread(&self, t: &'a Tracee) -> Result<Self, RestoreError> {
        let mut template = t.regs()?;
        template.rsp = self.area + AREA_LEN - 64;
        Ok(Self {
            t,
            template,
            area: self.area,
        })
    }

    /// The task.
    pub fn tracee(&self) -> &'a Tracee {
        self.t
    }

    /// One system call; `-errno` becomes an error naming `call`.
    pub fn call(&self, call: &'static str, nr: i64, args: [u64; 6]) -> Result<u64, PtraceError> {
        self.t
            .inject(Entry::Trap(self.area), &self.template, call, nr, args)
    }

    /// One system call, returning the raw result for the caller to judge.
    pub fn call_raw(&self, nr: i64, args: [u64; 6]) -> Result<Result<u64, Errno>, PtraceError> {
        let r = self
            .t
            .inject_raw(Entry::Trap(self.area), &self.template, nr, args)?;
        Ok(if (-4095..0).contains(&r) {
            Err(Errno::from_raw(-r as i32))
        } else {
            Ok(r as u64)
        })
    }

    /// Runs `calls` in one stop of the task ([`Tracee::inject_batch`]): the batch code goes
    /// into the code page after `syscall; int3`, the records into the upper half of the
    /// scratch area (so arguments [`Injector::put`] below it stay). Gives each call's raw
    /// result (`-errno` on failure).
    pub fn batch(&self, calls: &[(i64, [u64; 6])]) -> Result<Vec<i64>, RestoreError> {
        const RECORDS: u64 = 8 * 4096;
        const PER_RUN: usize = (4 * 4096) / crate::ptrace::BATCH_RECORD - 1;
        let code = self.area + 64;
        self.t.write_mem(code, &crate::ptrace::BATCH_CODE)?;
        Ok(self
            .t
            .inject_batches(code, self.area + RECORDS, &self.template, calls, PER_RUN)?)
    }

    /// Copies `data` into the scratch area at `offset` and returns its address in the task.
    pub fn put(&self, offset: u64, data: &[u8]) -> Result<u64, RestoreError> {
        if offset < 4096 || offset + data.len() as u64 > AREA_LEN - 128 {
            return Err(RestoreError::Layout(format!(
                "{} bytes do not fit the scratch area",
                data.len()
            )));
        }
        let addr = self.area + offset;
        self.t.write_mem(addr, data)?;
        Ok(addr)
    }

    /// Copies a path, NUL-terminated, into the scratch area.
    pub fn put_path(&self, path: &str) -> Result<u64, RestoreError> {
        let mut bytes = Vec::with_capacity(path.len() + 1);
        bytes.extend_from_slice(path.as_bytes());
        bytes.push(0);
        self.put(4096, &bytes)
    }

    /// Unmaps the injection area as the very last call, leaving the task in a syscall-exit stop.
    pub fn finish(self) -> Result<(), PtraceError> {
        self.t
            .inject_final_munmap(&self.template, self.area, AREA_LEN)
    }
}
