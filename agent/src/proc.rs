//! Safe parsers for `/proc` text files. Each parser takes the file's contents as `&str` so it
//! can be tested on fixtures.

use std::path::PathBuf;

use procfs::FromRead;

/// A `/proc` file could not be read or did not look as expected.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// Reading failed (the process may have exited).
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The contents did not parse.
    #[error("unexpected contents in {file}: {what}")]
    Parse {
        /// Which file (`maps`, `stat`, …).
        file: &'static str,
        /// What was wrong.
        what: String,
    },
}

fn bad(file: &'static str, what: impl Into<String>) -> ProcError {
    ProcError::Parse {
        file,
        what: what.into(),
    }
}

/// Reads `/proc/PID/NAME` as text.
pub fn read(pid: i32, name: &str) -> Result<String, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/{name}"));
    std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    /// Start address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// `s` (shared) rather than `p`.
    pub shared: bool,
    /// File offset.
    pub offset: u64,
    /// Device as `major:minor` numbers.
    pub dev: (u32, u32),
    /// Inode (0 for anonymous).
    pub inode: u64,
    /// The name column: a path, `[heap]`, … or empty.
    pub name: String,
}

/// Parses `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>, ProcError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut rest = line;
        let mut next = || -> Result<&str, ProcError> {
            let t = rest.trim_start_matches(' ');
            let end = t.find(' ').unwrap_or(t.len());
            let (tok, r) = t.split_at(end);
            rest = r;
            if tok.is_empty() {
                Err(bad("maps", format!("short line {line:?}")))
            } else {
                Ok(tok)
            }
        };
        let range = next()?;
        let perms = next()?;
        let offset = next()?;
        let dev = next()?;
        let inode = next()?;
        let name = rest.trim_start_matches(' ').to_string();
        let (s, e) = range
            .split_once('-')
            .ok_or_else(|| bad("maps", format!("range {range:?}")))?;
        let hex =
            |v: &str| u64::from_str_radix(v, 16).map_err(|_| bad("maps", format!("number {v:?}")));
        let p = perms.as_bytes();
        if p.len() != 4 {
            return Err(bad("maps", format!("perms {perms:?}")));
        }
        let mut prot = 0;
        if p[0] == b'r' {
            prot |= crate::state::prot::READ
        }
        if p[1] == b'w' {
            prot |= crate::state::prot::WRITE
        }
        if p[2] == b'x' {
            prot |= crate::state::prot::EXEC
        }
        let (maj, min) = dev
            .split_once(':')
            .ok_or_else(|| bad("maps", format!("dev {dev:?}")))?;
        let dev_num =
            |v: &str| u32::from_str_radix(v, 16).map_err(|_| bad("maps", format!("dev {v:?}")));
        out.push(MapsEntry {
            start: hex(s)?,
            end: hex(e)?,
            prot,
            shared: p[3] == b's',
            offset: hex(offset)?,
            dev: (dev_num(maj)?, dev_num(min)?),
            inode: inode
                .parse()
                .map_err(|_| bad("maps", format!("inode {inode:?}")))?,
            name,
        });
    }
    Ok(out)
}

/// `VmFlags` of each VMA in `/proc/PID/smaps`, keyed by start address.
pub fn parse_smaps_vmflags(text: &str) -> Vec<(u64, Vec<String>)> {
    let mut out = Vec::new();
    let mut current: Option<u64> = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(start) = current.take() {
                out.push((
                    start,
                    flags.split_whitespace().map(str::to_string).collect(),
                ));
            }
        } else if let Some((first, _)) = line.split_once(' ')
            && !first.ends_with(':')
            && let Some((s, _)) = first.split_once('-')
            && let Ok(start) = u64::from_str_radix(s, 16)
        {
            current = Some(start);
        }
    }
    out
}

/// The range and `VmFlags` of each mapping of `/proc/PID/smaps`.
pub fn parse_smaps_areas(text: &str) -> Vec<(u64, u64, Vec<String>)> {
    let mut out = Vec::new();
    let mut current: Option<(u64, u64)> = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some((start, end)) = current.take() {
                out.push((
                    start,
                    end,
                    flags.split_whitespace().map(str::to_string).collect(),
                ));
            }
        } else if let Some((first, _)) = line.split_once(' ')
            && !first.ends_with(':')
            && let Some((s, e)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
        {
            current = Some((start, end));
        }
    }
    out
}

/// `Shared_Clean` + `Shared_Dirty` (KiB) of each mapping of `/proc/PID/smaps`, by start.
pub fn parse_smaps_shared(text: &str) -> Vec<(u64, u64)> {
    parse_smaps_kb(text, &["Shared_Clean:", "Shared_Dirty:"])
        .into_iter()
        .map(|(start, _, kb)| (start, kb))
        .collect()
}

/// The sum of the fields `fields` (KiB, each named with its colon) of each mapping of
/// `/proc/PID/smaps`: (start, end, KiB).
pub fn parse_smaps_kb(text: &str, fields: &[&str]) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for line in text.lines() {
        if let Some(v) = fields.iter().find_map(|f| line.strip_prefix(f)) {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            if let Some(last) = out.last_mut() {
                last.2 += kb;
            }
        } else if let Some((first, _)) = line.split_once(' ')
            && !first.ends_with(':')
            && let Some((s, e)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
        {
            out.push((start, end, 0));
        }
    }
    out
}

/// The fields of `/proc/PID/stat` the engine uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Controlling terminal's device number (0: none).
    pub tty_nr: u64,
    /// Foreground process group of the controlling terminal (-1: none).
    pub tpgid: i32,
    /// Clock ticks after boot when the process started: with the PID, it names one process
    /// for good.
    pub start_time: u64,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// The wait status of an exited task (field 52; 0 while it runs).
    pub exit_code: i32,
}

/// Parses `/proc/PID/stat` (with the `procfs` crate).
pub fn parse_stat(text: &str) -> Result<Stat, ProcError> {
    let st = procfs::process::Stat::from_read(text.as_bytes())
        .map_err(|e| bad("stat", e.to_string()))?;
    // Fields the kernel has printed since 3.3–3.5; `procfs` makes them optional.
    let need = |v: Option<u64>, name: &str| v.ok_or_else(|| bad("stat", format!("no {name}")));
    Ok(Stat {
        state: st.state,
        ppid: st.ppid,
        pgrp: st.pgrp,
        session: st.session,
        tty_nr: u64::from(st.tty_nr as u32),
        tpgid: st.tpgid,
        start_time: st.starttime,
        start_code: st.startcode,
        end_code: st.endcode,
        start_stack: st.startstack,
        start_data: need(st.start_data, "start_data")?,
        end_data: need(st.end_data, "end_data")?,
        start_brk: need(st.start_brk, "start_brk")?,
        arg_start: need(st.arg_start, "arg_start")?,
        arg_end: need(st.arg_end, "arg_end")?,
        env_start: need(st.env_start, "env_start")?,
        env_end: need(st.env_end, "env_end")?,
        exit_code: st.exit_code.ok_or_else(|| bad("stat", "no exit_code"))?,
    })
}

/// The fields of `/proc/PID/status` the engine uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Status {
    pub umask: u32,
    pub threads: u32,
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    /// Innermost `NSpid` entry.
    pub ns_pid: i32,
    /// `Seccomp:` mode (0 none, 1 strict, 2 filter).
    pub seccomp: u32,
    /// `NoNewPrivs:`.
    pub no_new_privs: bool,
    /// `CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb`.
    pub caps: [u64; 5],
}

/// Parses `/proc/PID/status` (with the `procfs` crate).
pub fn parse_status(text: &str) -> Result<Status, ProcError> {
    let st = procfs::process::Status::from_read(text.as_bytes())
        .map_err(|e| bad("status", e.to_string()))?;
    let ns_pid = st
        .nspid
        .as_ref()
        .and_then(|v| v.last().copied())
        .unwrap_or(0);
    if st.threads == 0 || ns_pid == 0 {
        return Err(bad("status", "missing Threads or NSpid"));
    }
    Ok(Status {
        // A zombie has no fs struct left, so no `Umask:` line.
        umask: st.umask.unwrap_or(0),
        threads: u32::try_from(st.threads).map_err(|_| bad("status", "Threads"))?,
        uids: [st.ruid, st.euid, st.suid, st.fuid],
        gids: [st.rgid, st.egid, st.sgid, st.fgid],
        groups: st.groups.clone(),
        ns_pid,
        seccomp: st.seccomp.unwrap_or(0),
        no_new_privs: st.nonewprivs == Some(1),
        caps: [
            st.capinh,
            st.capprm,
            st.capeff,
            st.capbnd.unwrap_or(0),
            st.capamb.unwrap_or(0),
        ],
    })
}

/// Parses `/proc/PID/limits` (with the `procfs` crate) into `(soft, hard)` per resource, in
/// `RLIMIT_*` order (`u64::MAX` for "unlimited").
pub fn parse_limits(text: &str) -> Result<Vec<(u64, u64)>, ProcError> {
    let l = procfs::process::Limits::from_read(text.as_bytes())
        .map_err(|e| bad("limits", e.to_string()))?;
    let value = |v: &procfs::process::LimitValue| match v {
        procfs::process::LimitValue::Unlimited => u64::MAX,
        procfs::process::LimitValue::Value(n) => *n,
    };
    // RLIMIT_CPU, FSIZE, DATA, STACK, CORE, RSS, NPROC, NOFILE, MEMLOCK, AS, LOCKS, SIGPENDING,
    // MSGQUEUE, NICE, RTPRIO, RTTIME.
    Ok([
        &l.max_cpu_time,
        &l.max_file_size,
        &l.max_data_size,
        &l.max_stack_size,
        &l.max_core_file_size,
        &l.max_resident_set,
        &l.max_processes,
        &l.max_open_files,
        &l.max_locked_memory,
        &l.max_address_space,
        &l.max_file_locks,
        &l.max_pending_signals,
        &l.max_msgqueue_size,
        &l.max_nice_priority,
        &l.max_realtime_priority,
        &l.max_realtime_timeout,
    ]
    .iter()
    .map(|limit| (value(&limit.soft_limit), value(&limit.hard_limit)))
    .collect())
}

/// One timer of `/proc/PID/timers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixTimer {
    /// Timer id.
    pub id: i32,
    /// Signal number.
    pub signo: u32,
    /// `sigev_value`.
    pub value: u64,
    /// `SIGEV_SIGNAL` (0), `SIGEV_NONE` (1), `SIGEV_THREAD` (2, the kernel treats it as
    /// `SIGEV_SIGNAL`) or `SIGEV_THREAD_ID` (4, with the signal to one thread).
    pub notify: u32,
    /// Thread or process the signal goes to (in the reader's PID namespace).
    pub target: i32,
    /// Clock id.
    pub clock: i32,
}

/// Parses `/proc/PID/timers`.
pub fn parse_timers(text: &str) -> Result<Vec<PosixTimer>, ProcError> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key == "ID" {
            out.push(PosixTimer {
                id: value.parse().map_err(|_| bad("timers", "ID"))?,
                ..Default::default()
            });
            continue;
        }
        let t = out
            .last_mut()
            .ok_or_else(|| bad("timers", "field before ID"))?;
        match key {
            "signal" => {
                let (sig, val) = value
                    .split_once('/')
                    .ok_or_else(|| bad("timers", "signal"))?;
                t.signo = sig.parse().map_err(|_| bad("timers", "signal number"))?;
                t.value =
                    u64::from_str_radix(val, 16).map_err(|_| bad("timers", "signal value"))?;
            }
            "notify" => {
                let (how, who) = value
                    .split_once('/')
                    .ok_or_else(|| bad("timers", "notify"))?;
                // "HOW/pid.N" or "HOW/tid.N": the kernel prints `notify & ~SIGEV_THREAD_ID`
                // by name, and the SIGEV_THREAD_ID bit as "tid".
                let how = match how {
                    "signal" => 0,
                    "none" => 1,
                    "thread" => 2,
                    other => return Err(bad("timers", format!("notify {other:?}"))),
                };
                let (kind, target) = who
                    .split_once('.')
                    .ok_or_else(|| bad("timers", "notify target"))?;
                t.notify = match kind {
                    "pid" => how,
                    "tid" => how | 4,
                    other => return Err(bad("timers", format!("notify target {other:?}"))),
                };
                t.target = target.parse().map_err(|_| bad("timers", "notify target"))?;
            }
            "ClockID" => t.clock = value.parse().map_err(|_| bad("timers", "ClockID"))?,
            _ => {}
        }
    }
    Ok(out)
}

/// `/proc/PID/fdinfo/N`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// `pos:`.
    pub pos: u64,
    /// `flags:` (octal in the file).
    pub flags: u32,
    /// `tfd:` lines of an epoll instance.
    pub epoll: Vec<crate::state::EpollTarget>,
}

/// Parses `/proc/PID/fdinfo/N`.
pub fn parse_fdinfo(text: &str) -> Result<FdInfo, ProcError> {
    let mut info = FdInfo::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            info.pos = v.trim().parse().map_err(|_| bad("fdinfo", "pos"))?;
        } else if let Some(v) = line.strip_prefix("flags:") {
            info.flags = u32::from_str_radix(v.trim(), 8).map_err(|_| bad("fdinfo", "flags"))?;
        } else if let Some(v) = line.strip_prefix("tfd:") {
            // "tfd:        5 events:       19 data:                5  pos:0 ino:.. sdev:.."
            let toks: Vec<&str> = v.split_whitespace().collect();
            let get = |key: &str| {
                toks.iter()
                    .position(|t| *t == key)
                    .and_then(|i| toks.get(i + 1))
            };
            let fd = toks
                .first()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| bad("fdinfo", "tfd"))?;
            let events = get("events:")
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad("fdinfo", "events"))?;
            let data = get("data:")
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad("fdinfo", "data"))?;
            info.epoll.push(crate::state::EpollTarget {
                fd,
                events,
                data,
                file_fd: fd,
                pending: false,
            });
        }
    }
    Ok(info)
}

/// One `lock:` line of `/proc/PID/fdinfo/N` (the format of `/proc/locks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLock {
    /// `FLOCK`, `POSIX`, `OFDLCK`, `LEASE`, `DELEG`, …
    pub kind: String,
    /// `ADVISORY`, or for leases `ACTIVE`, `BREAKING`, `BREAKER`.
    pub state: String,
    /// `WRITE` rather than `READ`.
    pub write: bool,
    /// `major:minor:inode` of the locked file.
    pub inode: String,
    /// First byte.
    pub start: u64,
    /// Last byte, `None` for `EOF`.
    pub end: Option<u64>,
    /// The whole line, for messages.
    pub line: String,
}

/// Parses the `lock:` lines of `/proc/PID/fdinfo/N`:
/// `lock:\t1: POSIX  ADVISORY  WRITE 6257 fe:00:10010675 10 14`.
pub fn parse_fdinfo_locks(text: &str) -> Result<Vec<FdLock>, ProcError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("lock:") else {
            continue;
        };
        let toks: Vec<&str> = rest.split_whitespace().collect();
        // id: kind state rw pid dev start end
        let [_id, kind, state, rw, _pid, inode, start, end] = toks[..] else {
            return Err(bad("fdinfo", format!("lock line {line:?}")));
        };
        let start = start
            .parse()
            .map_err(|_| bad("fdinfo", format!("lock start in {line:?}")))?;
        let end = if end == "EOF" {
            None
        } else {
            Some(
                end.parse()
                    .map_err(|_| bad("fdinfo", format!("lock end in {line:?}")))?,
            )
        };
        out.push(FdLock {
            kind: kind.to_string(),
            state: state.to_string(),
            write: rw == "WRITE",
            inode: inode.to_string(),
            start,
            end,
            line: rest.trim().to_string(),
        });
    }
    Ok(out)
}

/// One line of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Key.
    pub key: i32,
    /// Id.
    pub id: i32,
    /// `shm_perm.mode` (permission bits plus `SHM_DEST`, `SHM_LOCKED`).
    pub perms: u32,
    /// Size in bytes.
    pub size: u64,
    /// Attach count.
    pub nattch: u64,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Creator uid.
    pub cuid: u32,
    /// Creator gid.
    pub cgid: u32,
}

/// Parses `/proc/sysvipc/shm` (key shmid perms size cpid lpid nattch uid gid cuid cgid ...).
pub fn parse_sysvipc_shm(text: &str) -> Vec<SegmentInfo> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some(SegmentInfo {
                key: f.first()?.parse().ok()?,
                id: f.get(1)?.parse().ok()?,
                perms: u32::from_str_radix(f.get(2)?, 8).ok()?,
                size: num(3)?,
                nattch: num(6)?,
                uid: u32::try_from(num(7)?).ok()?,
                gid: u32::try_from(num(8)?).ok()?,
                cuid: u32::try_from(num(9)?).ok()?,
                cgid: u32::try_from(num(10)?).ok()?,
            })
        })
        .collect()
}

/// The segments of this IPC namespace.
pub fn sysv_segments() -> Result<Vec<SegmentInfo>, ProcError> {
    let path = "/proc/sysvipc/shm";
    let text = std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.into(),
        source,
    })?;
    Ok(parse_sysvipc_shm(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_locks() {
        let l = parse_fdinfo_locks(
            "pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t10010675\n\
             lock:\t1: POSIX  ADVISORY  WRITE 6257 fe:00:10010675 10 14\n\
             lock:\t2: POSIX  ADVISORY  READ 6257 fe:00:10010675 100 EOF\n\
             lock:\t1: LEASE  ACTIVE    READ 6257 fe:00:10010693 0 EOF\n",
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(
            (l[0].kind.as_str(), l[0].write, l[0].start, l[0].end),
            ("POSIX", true, 10, Some(14))
        );
        assert_eq!((l[1].write, l[1].start, l[1].end), (false, 100, None));
        assert_eq!(
            (l[2].kind.as_str(), l[2].state.as_str()),
            ("LEASE", "ACTIVE")
        );
        parse_fdinfo_locks("lock:\t1: POSIX\n").unwrap_err();
    }

    #[test]
    fn maps_line_with_path_and_spaces() {
        let m = parse_maps(
            "55d0c8a00000-55d0c8a02000 r--p 00000000 fd:01 1234   /usr/bin/my prog\n\
             7ffd1c9e8000-7ffd1ca09000 rw-p 00000000 00:00 0                          [stack]\n\
             7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n",
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "/usr/bin/my prog");
        assert_eq!(m[0].dev, (0xfd, 1));
        assert_eq!(m[1].name, "[stack]");
        assert_eq!(m[1].prot, 3);
        assert_eq!(m[2].prot, 0);
        assert_eq!(m[2].name, "");
    }

    #[test]
    fn smaps_flags() {
        let f = parse_smaps_vmflags(
            "7ffd1c9e8000-7ffd1ca09000 rw-p 00000000 00:00 0   [stack]\nSize:  132 kB\nVmFlags: rd wr mr mw me gd ac\n\
             7f00-7f01 r--s 00000000 fd:01 5 /x\nRss: 4 kB\nVmFlags: rd sh mr mw me ms\n",
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, 0x7ffd1c9e8000);
        assert!(f[0].1.contains(&"gd".to_string()));
        assert_eq!(f[1].0, 0x7f00);
    }

    #[test]
    fn stat_with_odd_comm() {
        let s = "42 (a) b) c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 4194304 4198400 140737488346112 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 6291456 6295552 6299648 140737488347000 140737488347010 140737488347010 140737488347100 0\n";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.start_code, 4194304);
        assert_eq!(st.start_time, 100);
        assert_eq!(st.start_brk, 6299648);
        assert_eq!(st.env_end, 140737488347100);
    }

    #[test]
    fn timers_file() {
        let t = parse_timers("ID: 7\nsignal: 10/00000000000000ff\nnotify: signal/tid.25843\nClockID: 1\nID: 8\nsignal: 14/0000000000000000\nnotify: signal/pid.9\nClockID: 0\nID: 9\nsignal: 14/0000000000000000\nnotify: thread/pid.9\nClockID: 0\n").unwrap();
        assert_eq!(t.len(), 3);
        // The kernel keeps SIGEV_THREAD (2) as asked and treats it as SIGEV_SIGNAL.
        assert_eq!(t[2].notify, 2);
        assert_eq!(
            (
                t[0].id,
                t[0].signo,
                t[0].value,
                t[0].notify,
                t[0].target,
                t[0].clock
            ),
            (7, 10, 255, 4, 25843, 1)
        );
        assert_eq!((t[1].notify, t[1].target), (0, 9));
    }

    #[test]
    fn limits_table() {
        let l = parse_limits(&read(std::process::id() as i32, "limits").unwrap()).unwrap();
        assert_eq!(l.len(), 16);
        let nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(l[libc::RLIMIT_NOFILE as usize], nofile);
        let stack =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK).unwrap();
        assert_eq!(l[libc::RLIMIT_STACK as usize], stack);
    }

    #[test]
    fn fdinfo_epoll() {
        let i = parse_fdinfo("pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\ntfd:        5 events:       19 data:                7  pos:0 ino:3 sdev:d\n").unwrap();
        assert_eq!(i.flags, 0o2000002);
        assert_eq!(
            i.epoll,
            vec![crate::state::EpollTarget {
                fd: 5,
                events: 0x19,
                data: 7,
                file_fd: 5,
                pending: false,
            }]
        );
    }

    #[test]
    fn status_fields() {
        let me = std::process::id() as i32;
        let s = parse_status(&read(me, "status").unwrap()).unwrap();
        let uid = nix::unistd::getresuid().unwrap();
        assert_eq!(
            s.uids[..3],
            [
                uid.real.as_raw(),
                uid.effective.as_raw(),
                uid.saved.as_raw()
            ]
        );
        assert_eq!(s.ns_pid, me);
        assert!(s.threads >= 1);
        let mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o22));
        nix::sys::stat::umask(mask);
        assert_eq!(s.umask, mask.bits());
    }

    #[test]
    fn parses_sysvipc_shm() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n 305441741          7  1640                 12288 20183 20183      1     0     0  1000  1000 1795453715          0 1795453715                  4096                     0\n";
        let s = parse_sysvipc_shm(text);
        assert_eq!(
            s,
            vec![SegmentInfo {
                key: 305441741,
                id: 7,
                perms: 0o1640,
                size: 12288,
                nattch: 1,
                uid: 0,
                gid: 0,
                cuid: 1000,
                cgid: 1000,
            }]
        );
    }
}
