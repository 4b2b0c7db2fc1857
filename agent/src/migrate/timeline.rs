//! Where a migration's downtime goes: named phases from the freeze to the copy running, kept
//! per migration while it runs and said at its end (the summary's `downtime_phases`, the log
//! line "downtime phases"). Each side keeps its own: the origin from the freeze to the
//! destination's acknowledgement of Commit, the destination from the header of the final
//! image to its reply (sent back in `TransferReply.phases` and shown inside the origin's).
//!
//! Cheap: a mutex and a few `Instant`s per phase; nothing per page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Timeline {
    /// The end of the last phase noted.
    at: Instant,
    phases: Vec<(&'static str, Duration)>,
}

/// The timelines of the migrations under way, by side and migration id.
static LINES: Mutex<Option<HashMap<(bool, String), Timeline>>> = Mutex::new(None);

fn with<R>(origin: bool, id: &str, f: impl FnOnce(&mut Timeline) -> R) -> Option<R> {
    let mut g = LINES.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashMap::new)
        .get_mut(&(origin, id.to_string()))
        .map(f)
}

/// Which side of the migration a timeline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The origin: from the freeze to the acknowledged Commit.
    Origin,
    /// The destination: from the final image's header to the reply.
    Destination,
}

impl Side {
    fn key(self) -> bool {
        self == Side::Origin
    }
}

/// Starts the timeline of `id` on `side` at `at` (the freeze; the header).
pub fn begin(side: Side, id: &str, at: Instant) {
    let mut g = LINES.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashMap::new).insert(
        (side.key(), id.to_string()),
        Timeline {
            at,
            phases: Vec::new(),
        },
    );
}

/// The phase `name` ended now: it took the time since the last phase ended.
pub fn mark(side: Side, id: &str, name: &'static str) {
    let now = Instant::now();
    with(side.key(), id, |t| {
        t.phases.push((name, now.saturating_duration_since(t.at)));
        t.at = now;
    });
}

/// The phase `name`, measured by its caller, took `d` from the end of the last one.
pub fn add(side: Side, id: &str, name: &'static str, d: Duration) {
    with(side.key(), id, |t| {
        t.phases.push((name, d));
        t.at += d;
    });
}

/// A part of the last phase, measured inside it: `name` starts with a space and is shown in
/// parentheses after that phase; the clock does not move.
pub fn part(side: Side, id: &str, name: &'static str, d: Duration) {
    with(side.key(), id, |t| t.phases.push((name, d)));
}

/// Ends the timeline of `id` on `side`: its phases as text ("freeze 1.2 ms, collect 8.0
/// ms, …"), empty if there was none.
pub fn take(side: Side, id: &str) -> String {
    let mut g = LINES.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = g
        .get_or_insert_with(HashMap::new)
        .remove(&(side.key(), id.to_string()))
    else {
        return String::new();
    };
    text(&t.phases)
}

/// Forgets the timeline of `id` on `side` (the migration ended otherwise).
pub fn forget(side: Side, id: &str) {
    let mut g = LINES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = g.as_mut() {
        m.remove(&(side.key(), id.to_string()));
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn text(phases: &[(&'static str, Duration)]) -> String {
    let mut out = String::new();
    for (name, d) in phases {
        if let Some(inner) = name.strip_prefix(' ') {
            // A part of the phase before.
            out.push_str(&format!(" ({inner} {})", ms(*d)));
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&format!("{name} {}", ms(*d)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_each_other_and_parts_stay_inside() {
        let t0 = Instant::now();
        begin(Side::Origin, "t1", t0);
        add(Side::Origin, "t1", "freeze", Duration::from_millis(2));
        part(Side::Origin, "t1", " last scan", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        mark(Side::Origin, "t1", "collect");
        let s = take(Side::Origin, "t1");
        assert!(
            s.starts_with("freeze 2.0 ms (last scan 1.0 ms), collect "),
            "{s}"
        );
        let collect: f64 = s
            .rsplit("collect ")
            .next()
            .and_then(|r| r.strip_suffix(" ms"))
            .and_then(|v| v.parse().ok())
            .expect("a duration");
        // The freeze's 2 ms are not counted again in the collection.
        assert!(collect >= 3.0, "{s}");
        assert_eq!(take(Side::Origin, "t1"), "", "taken once");
        // Another side's timeline of the same id is another one.
        mark(Side::Destination, "t1", "nothing");
        assert_eq!(take(Side::Destination, "t1"), "");
    }
}
