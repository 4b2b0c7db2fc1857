//! Policy and automatic migration (issue 13 item 2; docs/cluster.md, "Policy").
//!
//! The policy file (`policy = "/etc/ferry/policy.toml"` in ferryd's configuration) says when a
//! host is overloaded (CPU or memory above a threshold for a while, or over its quotas), which
//! managed processes may move, and how often. [`decide`] is the pure decision: from the
//! gossiped view of the members and the managed processes running on this host it returns the
//! moves to make now. The [`supervisor`] runs it every second and performs them.

pub mod decide;
pub mod supervisor;
pub mod usage;

use std::path::Path;

use serde::Deserialize;

pub use decide::{Decision, HostView, Memory, ProcView, decide};

/// Which CPU load the thresholds compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuMeasure {
    /// The host's whole CPU busy share (`/proc/stat`), as gossiped.
    #[default]
    Host,
    /// Only the CPU the managed processes running there use (their sum over the host's CPUs):
    /// for hosts whose other load is not the supervisor's business, and for test hosts that
    /// share one kernel (and so one `/proc/stat`).
    Managed,
}

/// Quotas of one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostQuota {
    /// The most managed processes running on it; over it, it sheds one at a time.
    pub max_managed: Option<u32>,
    /// The most memory (bytes, resident) its managed processes may use together.
    pub max_memory: Option<u64>,
}

/// Quotas of one managed process: the limits of `ferry limits` it gets when it has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessQuota {
    /// CPUs (1.5: one and a half).
    pub cpu: Option<f64>,
    /// Memory, bytes.
    pub memory: Option<u64>,
}

/// A parsed, checked policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Decide and record, move nothing.
    pub dry_run: bool,
    /// CPU threshold, percent of the host's CPUs.
    pub cpu_above: Option<f64>,
    /// Memory threshold, percent of the host's memory.
    pub mem_above: Option<f64>,
    /// How long a threshold must be exceeded before a move, ms (`for`).
    pub for_ms: u64,
    /// A destination must stay below this percentage of CPU and of memory after the move.
    pub target_below: f64,
    /// A process moved (or decided on) is not moved again for this long, ms.
    pub cooldown_ms: u64,
    /// At most this many moves under way at once from this host.
    pub max_moves: u32,
    /// Which CPU load the CPU threshold compares.
    pub cpu_measure: CpuMeasure,
    /// Quotas of a host.
    pub host: HostQuota,
    /// Quotas of a process.
    pub process: ProcessQuota,
    /// Only processes with one of these labels may move (empty: any).
    pub labels: Vec<String>,
    /// Only processes of these uids may move (empty: any).
    pub users: Vec<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            dry_run: false,
            cpu_above: None,
            mem_above: None,
            for_ms: 30_000,
            target_below: 80.0,
            cooldown_ms: 300_000,
            max_moves: 1,
            cpu_measure: CpuMeasure::Host,
            host: HostQuota::default(),
            process: ProcessQuota::default(),
            labels: Vec::new(),
            users: Vec::new(),
        }
    }
}

/// The label that keeps a process where it is (`ferry run --pin`).
pub const PIN: &str = "pin";

/// Checks the labels of `ferry run --label`: each non-empty, at most 64 bytes, without spaces
/// or commas; at most 16.
pub fn check_labels(labels: &[String]) -> Result<(), String> {
    if labels.len() > 16 {
        return Err(format!("{} labels: at most 16", labels.len()));
    }
    for l in labels {
        if l.is_empty() || l.len() > 64 || l.contains(char::is_whitespace) || l.contains(',') {
            return Err(format!(
                "label {l:?}: 1 to 64 characters, no spaces or commas"
            ));
        }
    }
    Ok(())
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("read the policy {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (the message names the key).
    #[error("policy{}: {why}", at(path))]
    Parse {
        /// The file, when read from one.
        path: Option<String>,
        /// What is wrong.
        why: String,
    },
    /// A value out of range (named with its key).
    #[error("policy{}: {why}", at(path))]
    Invalid {
        /// The file, when read from one.
        path: Option<String>,
        /// What is wrong, naming the key and the value.
        why: String,
    },
}

fn at(path: &Option<String>) -> String {
    path.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    dry_run: bool,
    cpu_above: Option<f64>,
    mem_above: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    target_below: Option<f64>,
    cooldown: Option<String>,
    max_moves: Option<i64>,
    cpu_measure: Option<String>,
    #[serde(default)]
    quotas: RawQuotas,
    #[serde(default)]
    movable: RawMovable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuotas {
    #[serde(default)]
    host: RawHostQuota,
    #[serde(default)]
    process: RawProcessQuota,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostQuota {
    max_managed: Option<i64>,
    max_memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcessQuota {
    cpu: Option<f64>,
    memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMovable {
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    users: Vec<i64>,
}

/// `"30s"`, `"500ms"`, `"2m"`, `"1h"` in milliseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1e3,
        "m" | "min" => n * 60e3,
        "h" => n * 3600e3,
        _ => return None,
    };
    (ms.is_finite() && ms >= 0.0).then_some(ms.round() as u64)
}

/// `"512M"`, `"8G"`, `"1GiB"`, `"4096"` (bytes) in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 1u64,
        "K" | "k" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        Self::parse_at(text, None)
    }

    /// Reads, parses and checks the policy file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse_at(&text, Some(shown))
    }

    fn parse_at(text: &str, path: Option<String>) -> Result<Policy, PolicyError> {
        let raw: Raw = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.clone(),
            why: e.to_string().trim_end().to_owned(),
        })?;
        let bad = |why: String| PolicyError::Invalid {
            path: path.clone(),
            why,
        };
        let percent = |key: &str, v: Option<f64>| -> Result<Option<f64>, PolicyError> {
            match v {
                Some(x) if !(x > 0.0 && x <= 100.0) => Err(bad(format!(
                    "{key} = {x}: a percentage above 0 and at most 100"
                ))),
                v => Ok(v),
            }
        };
        let duration = |key: &str, v: &Option<String>| -> Result<Option<u64>, PolicyError> {
            v.as_ref()
                .map(|s| {
                    parse_duration(s).ok_or_else(|| {
                        bad(format!(
                            "{key} = {s:?}: not a duration such as \"30s\", \"500ms\", \"5m\" or \"1h\""
                        ))
                    })
                })
                .transpose()
        };
        let size = |key: &str, v: &Option<String>| -> Result<Option<u64>, PolicyError> {
            v.as_ref()
                .map(|s| {
                    parse_size(s).filter(|&b| b > 0).ok_or_else(|| {
                        bad(format!(
                            "{key} = {s:?}: not a size such as \"512M\", \"8G\" or \"1GiB\""
                        ))
                    })
                })
                .transpose()
        };
        let d = Policy::default();
        let mut p = Policy {
            dry_run: raw.dry_run,
            cpu_above: percent("cpu_above", raw.cpu_above)?,
            mem_above: percent("mem_above", raw.mem_above)?,
            for_ms: duration("for", &raw.for_)?.unwrap_or(d.for_ms),
            target_below: percent("target_below", raw.target_below)?.unwrap_or(d.target_below),
            cooldown_ms: duration("cooldown", &raw.cooldown)?.unwrap_or(d.cooldown_ms),
            max_moves: d.max_moves,
            cpu_measure: match raw.cpu_measure.as_deref() {
                None | Some("host") => CpuMeasure::Host,
                Some("managed") => CpuMeasure::Managed,
                Some(other) => {
                    return Err(bad(format!(
                        "cpu_measure = {other:?}: \"host\" or \"managed\""
                    )));
                }
            },
            host: HostQuota {
                max_managed: None,
                max_memory: size("quotas.host.max_memory", &raw.quotas.host.max_memory)?,
            },
            process: ProcessQuota {
                cpu: None,
                memory: size("quotas.process.memory", &raw.quotas.process.memory)?,
            },
            labels: raw.movable.labels,
            users: Vec::new(),
        };
        if let Some(n) = raw.max_moves {
            p.max_moves = u32::try_from(n)
                .ok()
                .filter(|&n| (1..=64).contains(&n))
                .ok_or_else(|| bad(format!("max_moves = {n}: a number from 1 to 64")))?;
        }
        if let Some(n) = raw.quotas.host.max_managed {
            p.host.max_managed = Some(u32::try_from(n).map_err(|_| {
                bad(format!(
                    "quotas.host.max_managed = {n}: a number of processes, 0 or more"
                ))
            })?);
        }
        if let Some(c) = raw.quotas.process.cpu {
            if !(c >= 0.01 && c <= 4096.0) {
                return Err(bad(format!(
                    "quotas.process.cpu = {c}: CPUs, from 0.01 (what the scheduler keeps) up"
                )));
            }
            p.process.cpu = Some(c);
        }
        if p.process.memory.is_some_and(|m| m < 1 << 20) {
            return Err(bad(format!(
                "quotas.process.memory = {:?}: below the least that makes sense (1 MiB)",
                raw.quotas.process.memory.unwrap_or_default()
            )));
        }
        for l in &p.labels {
            if l.is_empty() || l.contains(char::is_whitespace) || l.contains(',') {
                return Err(bad(format!(
                    "movable.labels: {l:?} is not a label (no spaces or commas, not empty)"
                )));
            }
        }
        for &u in &raw.movable.users {
            p.users.push(
                u32::try_from(u).map_err(|_| bad(format!("movable.users: {u} is not a uid")))?,
            );
        }
        Ok(p)
    }

    /// `for` as written in reasons: `30s`, `1.5s`, `2m`.
    pub fn for_text(&self) -> String {
        duration_text(self.for_ms)
    }
}

/// A duration as reasons show it.
pub fn duration_text(ms: u64) -> String {
    if ms % 60_000 == 0 && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_policy_parses() {
        let p = Policy::parse(
            r#"
            dry_run = true
            cpu_above = 85
            for = "30s"
            mem_above = 90.5
            target_below = 70
            cooldown = "10m"
            max_moves = 2
            cpu_measure = "managed"
            [quotas.host]
            max_managed = 20
            max_memory = "8G"
            [quotas.process]
            cpu = 1.5
            memory = "512MiB"
            [movable]
            labels = ["batch", "web"]
            users = [1000, 0]
            "#,
        )
        .unwrap();
        assert!(p.dry_run);
        assert_eq!(p.cpu_above, Some(85.0));
        assert_eq!(p.mem_above, Some(90.5));
        assert_eq!(p.for_ms, 30_000);
        assert_eq!(p.target_below, 70.0);
        assert_eq!(p.cooldown_ms, 600_000);
        assert_eq!(p.max_moves, 2);
        assert_eq!(p.cpu_measure, CpuMeasure::Managed);
        assert_eq!(p.host.max_managed, Some(20));
        assert_eq!(p.host.max_memory, Some(8 << 30));
        assert_eq!(p.process.cpu, Some(1.5));
        assert_eq!(p.process.memory, Some(512 << 20));
        assert_eq!(p.labels, ["batch", "web"]);
        assert_eq!(p.users, [1000, 0]);
        assert_eq!(p.for_text(), "30s");
    }

    #[test]
    fn an_empty_policy_has_the_defaults() {
        let p = Policy::parse("").unwrap();
        assert_eq!(p, Policy::default());
    }

    fn err(text: &str) -> String {
        Policy::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = err("cpu_abov = 85\n");
        assert!(e.contains("cpu_abov"), "{e}");
        let e = err("cpu_above = 150\n");
        assert!(e.contains("cpu_above = 150"), "{e}");
        let e = err("cpu_above = \"high\"\n");
        assert!(e.contains("cpu_above"), "{e}");
        let e = err("for = \"30 parsecs\"\n");
        assert!(e.contains("for = \"30 parsecs\""), "{e}");
        let e = err("cooldown = \"soon\"\n");
        assert!(e.contains("cooldown"), "{e}");
        let e = err("max_moves = 0\n");
        assert!(e.contains("max_moves = 0"), "{e}");
        let e = err("cpu_measure = \"cgroup\"\n");
        assert!(e.contains("cpu_measure = \"cgroup\""), "{e}");
        let e = err("[quotas.host]\nmax_memory = \"lots\"\n");
        assert!(e.contains("quotas.host.max_memory = \"lots\""), "{e}");
        let e = err("[quotas.host]\nmax_managed = -1\n");
        assert!(e.contains("quotas.host.max_managed = -1"), "{e}");
        let e = err("[quotas.process]\ncpu = 0\n");
        assert!(e.contains("quotas.process.cpu = 0"), "{e}");
        let e = err("[quotas.process]\nmemory = \"1K\"\n");
        assert!(e.contains("quotas.process.memory"), "{e}");
        let e = err("[quotas.process]\ngpu = 1\n");
        assert!(e.contains("gpu"), "{e}");
        let e = err("[movable]\nusers = [-3]\n");
        assert!(e.contains("-3"), "{e}");
        let e = err("[movable]\nlabels = [\"a b\"]\n");
        assert!(e.contains("\"a b\""), "{e}");
        let e = err("target_below = 0\n");
        assert!(e.contains("target_below = 0"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Policy::load("/nonexistent/policy.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/policy.toml"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("2s"), Some(2000));
        assert_eq!(parse_duration("1.5s"), Some(1500));
        assert_eq!(parse_duration("250ms"), Some(250));
        assert_eq!(parse_duration("5m"), Some(300_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("2Q"), None);
        assert_eq!(duration_text(30_000), "30s");
        assert_eq!(duration_text(120_000), "2m");
        assert_eq!(duration_text(1500), "1.5s");
    }
}
