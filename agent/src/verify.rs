//! The restore checker: after a process is rebuilt and before it runs, read it back from the
//! kernel with the very code that dumps (so every field an image holds is read the same way)
//! and compare the result with the image, field by field. A difference fails the restore,
//! naming the process, the object and the field, unless a rule below names it as an expected
//! change of a restore (a PID seen from outside a new PID namespace, the inode of a pipe made
//! anew, time that passed on a timer, …).
//!
//! It sits above `dump` and `restore` and uses both; neither knows of it.

use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde_json::Value;

use crate::dump::{self, DumpError, DumpOptions};
use crate::state::ProcessState;

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

/// What the caller knows about a restore that the image does not say.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Descriptor numbers the restore was told to fill with something else (relay endpoints).
    pub substituted_fds: Vec<i32>,
}

/// What the check found and what it cost.
#[derive(Debug, Clone)]
pub struct Report {
    /// Fields that differ as a restore must make them differ (counted per rule).
    pub expected: Vec<(&'static str, usize)>,
    /// How long reading back and comparing took.
    pub elapsed: Duration,
}

/// Reads the restored process `pid` back (it must not run meanwhile: restore it stopped) and
/// compares it with `image`. The process is left as it was found.
pub fn check(pid: Pid, image: &ProcessState, ctx: &Context) -> Result<Report, VerifyError> {
    let t0 = Instant::now();
    let read_back = |source| VerifyError::ReadBack {
        pid: pid.as_raw(),
        source,
    };
    let held = dump::hold(
        pid,
        DumpOptions {
            leave_running: true,
            tcp_established: true,
            ext_unix_sk: true,
            ..DumpOptions::default()
        },
    )
    .map_err(read_back)?;
    let restored = held.state.clone();
    held.thaw().map_err(read_back)?;
    let mut differences = Vec::new();
    let mut expected = Vec::new();
    compare(image, &restored, ctx, &mut differences, &mut expected);
    if !differences.is_empty() {
        return Err(VerifyError::Differs {
            pid: pid.as_raw(),
            differences,
        });
    }
    Ok(Report {
        expected,
        elapsed: t0.elapsed(),
    })
}

/// Compares two states field by field (through their serialized form, so that a field added
/// to the model is compared without anyone remembering to).
pub fn compare(
    image: &ProcessState,
    restored: &ProcessState,
    ctx: &Context,
    differences: &mut Vec<String>,
    expected: &mut Vec<(&'static str, usize)>,
) {
    // What the restore was asked to make of the image, where that is not the image itself.
    let mut image = image.clone();
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
        match expected_change(&d.path, &d.image, &d.restored, ctx) {
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
    _ctx: &Context,
) -> Option<&'static str> {
    let (field, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    // The parent is the restorer (or whoever adopts the process), not the dumped one's.
    if path == "ppid" {
        return Some("the parent is the restorer");
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
