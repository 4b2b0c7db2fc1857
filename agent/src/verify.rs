//! The restore checker: after a process is rebuilt and before it runs, read it back from the
//! kernel with the very code that dumps (so every field an image holds is read the same way)
//! and compare the result with the image, field by field. A difference fails the restore,
//! naming the process, the object and the field, unless a rule below names it as an expected
//! change of a restore (a PID seen from outside a new PID namespace, the inode of a pipe made
//! anew, time that passed on a timer, …).
//!
//! It sits above `dump` and `restore` and uses both; neither knows of it.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dump::{self, DumpError};
use crate::restore::CheckInput;
use crate::state::{FdKind, PageRun, ProcessState};

/// `TFD_TIMER_ABSTIME`.
const TFD_TIMER_ABSTIME: u32 = 1;

/// Whether every page of `inner` is in one of the runs of `outer` (both sorted).
fn runs_within(inner: &[PageRun], outer: &[PageRun]) -> bool {
    const PAGE: u64 = crate::state::PAGE_SIZE;
    let mut o = outer.iter().peekable();
    for r in inner {
        let (start, end) = (r.start, r.start.saturating_add(r.count.saturating_mul(PAGE)));
        loop {
            match o.peek() {
                Some(x) if x.start.saturating_add(x.count.saturating_mul(PAGE)) <= start => {
                    o.next();
                }
                Some(x) if x.start <= start && end <= x.start.saturating_add(x.count.saturating_mul(PAGE)) => break,
                _ => return false,
            }
        }
    }
    true
}

/// Why a restored process was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The restored process could not be read back.
    #[error("read back pid {pid}")]
    ReadBack {
        /// The restored process.
        pid: i32,
        /// Why.
        #[source]
        source: DumpError,
    },
    /// The restored process differs from its image.
    #[error("pid {pid} differs from its image: {}", differences.join("; "))]
    Differs {
        /// The restored process (in the restorer's PID namespace).
        pid: i32,
        /// `field: image X, restored Y`, one per difference.
        differences: Vec<String>,
    },
}

/// What the check found and what it cost.
#[derive(Debug, Clone)]
pub struct Report {
    /// Fields that differ as a restore must make them differ (counted per rule).
    pub expected: Vec<(&'static str, usize)>,
    /// How long reading back and comparing took.
    pub elapsed: Duration,
}

/// The restore checker in the shape [`crate::restore::RestoreOptions::check`] takes.
pub fn restore_check(input: &CheckInput<'_>) -> Result<Duration, String> {
    match check(input) {
        Ok(report) => {
            tracing::debug!(elapsed = ?report.elapsed, expected = ?report.expected, "restore checked");
            Ok(report.elapsed)
        }
        Err(e) => Err(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads the rebuilt process back (its tasks traced and stopped by the restorer, which gets
/// them back as they were) and compares it with its image.
pub fn check(input: &CheckInput<'_>) -> Result<Report, VerifyError> {
    let t0 = Instant::now();
    let pid = input.tids.first().map_or(0, |p| p.as_raw());
    let restored =
        dump::read_traced(input.tids).map_err(|source| VerifyError::ReadBack { pid, source })?;
    let mut differences = Vec::new();
    let mut expected = Vec::new();
    compare(input, &restored, &mut differences, &mut expected);
    if !differences.is_empty() {
        return Err(VerifyError::Differs { pid, differences });
    }
    Ok(Report {
        expected,
        elapsed: t0.elapsed(),
    })
}

/// Compares two states field by field (through their serialized form, so that a field added
/// to the model is compared without anyone remembering to).
pub fn compare(
    input: &CheckInput<'_>,
    restored: &ProcessState,
    differences: &mut Vec<String>,
    expected: &mut Vec<(&'static str, usize)>,
) {
    // What the restore was asked to make of the image, where that is not the image itself.
    let mut image = input.image.clone();
    let mut substituted = 0;
    for fd in &mut image.fds {
        if input.substituted_fds.contains(&fd.fd)
            && let Some(now) = restored.fds.iter().find(|f| f.fd == fd.fd)
        {
            *fd = now.clone();
            substituted += 1;
        }
    }
    if substituted > 0 {
        expected.push((
            "a descriptor the restore was told to substitute",
            substituted,
        ));
    }
    // Timers count down from what they had left at the dump once they are set again; the
    // read-back comes a little later. Armed stays armed, disarmed stays disarmed, and no
    // timer has more left than it had (or than its period, once it fired and reloaded).
    let mut ran = 0;
    for (a, b) in image.attrs.itimers.iter_mut().zip(&restored.attrs.itimers) {
        if a.which == b.which
            && a.interval_us == b.interval_us
            && a.value_us != b.value_us
            && (a.value_us == 0) == (b.value_us == 0)
            && b.value_us <= a.value_us.max(a.interval_us)
        {
            a.value_us = b.value_us;
            ran += 1;
        }
    }
    for (a, b) in image
        .attrs
        .posix_timers
        .iter_mut()
        .zip(&restored.attrs.posix_timers)
    {
        if a.id == b.id
            && a.interval_ns == b.interval_ns
            && a.value_ns != b.value_ns
            && (a.value_ns == 0) == (b.value_ns == 0)
            && b.value_ns <= a.value_ns.max(a.interval_ns)
        {
            a.value_ns = b.value_ns;
            ran += 1;
        }
    }
    for (a, b) in image.fds.iter_mut().zip(&restored.fds) {
        if let (FdKind::Timerfd(a), FdKind::Timerfd(b)) = (&mut a.kind, &b.kind)
            && a.value_ns != b.value_ns
            && a.interval_ns == b.interval_ns
            && (a.value_ns == 0) == (b.value_ns == 0)
        {
            let ok = if a.settime_flags & TFD_TIMER_ABSTIME != 0 {
                // An absolute expiry is read as time left plus now, twice: the two agree
                // within the clock's reading jitter.
                a.value_ns.abs_diff(b.value_ns) < 10_000_000
            } else {
                b.value_ns <= a.value_ns.max(a.interval_ns)
            };
            if ok {
                a.value_ns = b.value_ns;
                ran += 1;
            }
        }
    }
    if ran > 0 {
        expected.push(("time left on a running timer, which counts on", ran));
    }
    // Pages that were all zeros are not written, so not present: the restored process may
    // have fewer pages present than the image lists, never others.
    let mut unwritten = 0;
    for (a, b) in image.mm.vmas.iter_mut().zip(&restored.mm.vmas) {
        if a.start == b.start && a.end == b.end && a.pages != b.pages && runs_within(&b.pages, &a.pages) {
            a.pages = b.pages.clone();
            unwritten += 1;
        }
    }
    if unwritten > 0 {
        expected.push((
            "pages that held only zeros are not written (not present until touched)",
            unwritten,
        ));
    }
    let mut resumed = 0;
    for t in &mut image.threads {
        let r = t.regs.resumed();
        resumed += usize::from(r != t.regs);
        t.regs = r;
    }
    if resumed > 0 {
        expected.push((
            "a thread stopped in a system call resumes as the kernel would have it (restarted, \
             or EINTR for ERESTART_RESTARTBLOCK)",
            resumed,
        ));
    }
    let a = serde_json::to_value(&image).unwrap_or(Value::Null);
    let b = serde_json::to_value(restored).unwrap_or(Value::Null);
    let mut raw = Vec::new();
    diff("", &a, &b, &mut raw);
    for d in raw {
        match expected_change(&d.path, &d.image, &d.restored, input) {
            Some(rule) => match expected.iter_mut().find(|(r, _)| *r == rule) {
                Some((_, n)) => *n += 1,
                None => expected.push((rule, 1)),
            },
            None => differences.push(format!(
                "{}: image {}, restored {}",
                d.path,
                short(&d.image),
                short(&d.restored)
            )),
        }
    }
}

/// One field whose values differ.
#[derive(Debug)]
struct Diff {
    path: String,
    image: Value,
    restored: Value,
}

fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<Diff>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(&p, va, y.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    diff(&format!("{path}.{k}"), &Value::Null, vb, out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(Diff {
            path: path.to_owned(),
            image: a.clone(),
            restored: b.clone(),
        }),
        _ => {}
    }
}

/// A value for a message: long arrays and objects are cut.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(117).collect::<String>())
    } else {
        s
    }
}

/// The rule that names `path`'s change as one a restore makes, if any.
fn expected_change(
    path: &str,
    image: &Value,
    restored: &Value,
    input: &CheckInput<'_>,
) -> Option<&'static str> {
    let (field, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    // The parent is the restorer (or whoever adopts the process), not the dumped one's.
    if path == "ppid" && !input.parent_restored {
        return Some("the parent is the restorer");
    }
    // A process restored alone (or the root of a tree) leads a session and process group of
    // its own: the ones it was in are another session's, which it cannot join.
    if !input.parent_restored
        && matches!(path, "pgid" | "sid")
        && restored.as_i64() == input.tids.first().map(|p| i64::from(p.as_raw()))
    {
        return Some("a restored process leads a new session and process group");
    }
    // Objects made anew (pipes, memfds, shared anonymous memory) have new inode numbers.
    if leaf == "ino"
        && (field.starts_with("memfds[")
            || [".Pipe", ".LocalPipe", ".Memfd", ".SharedAnonymous"]
                .iter()
                .any(|k| field.ends_with(k)))
    {
        return Some("the inode number of an object made anew");
    }
    // An open file or FIFO is shared with others, who may have written to it since the dump.
    if field.starts_with("fds[")
        && (field.ends_with(".File.file.identity") || field.ends_with(".Fifo.file.identity"))
        && matches!(leaf, "size" | "mtime_ns")
    {
        return Some("the size or mtime of an open file written by others since the dump");
    }
    // PIDs read from outside the process's new PID namespace.
    if input.new_pid_ns && matches!(path, "ppid" | "pgid" | "sid") {
        return Some("a PID seen from outside the new PID namespace");
    }
    // open(2) on 64 bits always adds O_LARGEFILE, which means nothing there; F_SETFL cannot
    // take it away.
    if field.starts_with("fds[") && leaf == "flags" {
        let (a, b) = (image.as_u64()?, restored.as_u64()?);
        // The kernel's value: libc's is 0 on x86_64.
        const O_LARGEFILE: u64 = 0o100000;
        if a ^ b == O_LARGEFILE && b & O_LARGEFILE != 0 {
            return Some("O_LARGEFILE, which open(2) adds on 64 bits");
        }
    }
    None
}
