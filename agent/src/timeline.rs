//! Where a migration's stop goes (docs/migration.md "Downtime, phase by phase"): each side
//! keeps, per migration, the phases of the stop in the order they ended — the origin from
//! just before the freeze to the destination's acknowledgement of Commit, the destination
//! from the final image's header to the copy running — live, stop-and-copy and post-copy
//! alike. The origin's phases are the summary's `downtime_phases` (with the destination's
//! up to its reply, sent back in `TransferReply.phases`); each side logs its whole timeline
//! at its end as one line (`stop timeline (origin|destination): seize 0.3 ms, collect: fds
//! 4.1 ms, …; total T ms`), which `cargo xtask bench-migrate` prints beside its figures.
//!
//! The code that runs on one thread for a migration (the origin's tracer, the destination's
//! restorer) makes that thread's timeline current ([`enter`]), so that code below it (dump,
//! restore) marks its phases with [`mark`] without being handed anything; a mark with no
//! current timeline does nothing. Code elsewhere names the migration ([`mark_of`]). Marks of
//! several threads of one side go into one sequence, in the order they were made: each
//! phase is the time since the mark before it.
//!
//! Cheap: a mark is an `Instant::now()` and a push under an uncontended lock; nothing per
//! page.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which side of the migration a timeline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The origin: from just before the freeze to the acknowledged Commit.
    Origin,
    /// The destination: from the final image's header to the copy running.
    Destination,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Origin => "origin",
            Side::Destination => "destination",
        }
    }
}

#[derive(Debug)]
enum Entry {
    /// Phase `name` ended at this instant.
    Mark(&'static str, Instant),
    /// A part of the phase that ends next, measured inside it (shown in parentheses).
    Part(&'static str, Duration),
}

/// The phases of one side of one migration's stop.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

impl Timeline {
    /// Ends phase `name` now.
    pub fn mark(&self, name: &'static str) {
        lock(&self.entries).push(Entry::Mark(name, Instant::now()));
    }

    /// The phases so far (`name 1.2 ms (part 0.4 ms), …`) and their total.
    fn text(&self) -> (String, Duration) {
        let entries = lock(&self.entries);
        let mut prev = self.start;
        let mut out = String::new();
        let mut parts = Vec::new();
        fn flush(out: &mut String, parts: &mut Vec<(&'static str, Duration)>) {
            for (name, d) in parts.drain(..) {
                out.push_str(&format!(" ({name} {})", ms(d)));
            }
        }
        for e in entries.iter() {
            match *e {
                Entry::Part(name, d) => parts.push((name, d)),
                Entry::Mark(name, at) => {
                    if !out.is_empty() {
                        out.push_str(", ");
                    }
                    out.push_str(&format!(
                        "{name} {}",
                        ms(at.saturating_duration_since(prev))
                    ));
                    flush(&mut out, &mut parts);
                    prev = prev.max(at);
                }
            }
        }
        // Parts of a phase that never ended (a failure): said anyway.
        flush(&mut out, &mut parts);
        (out, prev.saturating_duration_since(self.start))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The timelines of the migrations under way, by (migration id, side).
type Timelines = HashMap<(String, Side), Arc<Timeline>>;

fn all() -> &'static Mutex<Timelines> {
    static ALL: OnceLock<Mutex<Timelines>> = OnceLock::new();
    ALL.get_or_init(Mutex::default)
}

fn get(side: Side, id: &str) -> Option<Arc<Timeline>> {
    lock(all()).get(&(id.to_string(), side)).cloned()
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Timeline>>> = const { RefCell::new(None) };
}

/// Starts the timeline of `side` of migration `id` at `at` (again, if there was one). Not
/// made any thread's: a thread of the async runtime runs other migrations' code too; a
/// thread of this migration's own calls [`enter`].
pub fn begin(side: Side, id: &str, at: Instant) {
    let t = Arc::new(Timeline {
        start: at,
        entries: Mutex::new(Vec::with_capacity(32)),
    });
    lock(all()).insert((id.to_string(), side), t);
}

/// Makes the timeline of `side` of `id` (if begun) this thread's.
pub fn enter(side: Side, id: &str) {
    let t = get(side, id);
    CURRENT.with(|c| *c.borrow_mut() = t);
}

/// This thread has no current timeline any more.
pub fn leave() {
    CURRENT.with(|c| c.borrow_mut().take());
}

/// Ends phase `name` of this thread's timeline, if it has one.
pub fn mark(name: &'static str) {
    CURRENT.with(|c| {
        if let Some(t) = c.borrow().as_ref() {
            t.mark(name);
        }
    });
}

/// A part of the phase of this thread's timeline that ends next, measured by the caller
/// (shown in parentheses after it; the clock does not move).
pub fn part(name: &'static str, d: Duration) {
    CURRENT.with(|c| {
        if let Some(t) = c.borrow().as_ref() {
            lock(&t.entries).push(Entry::Part(name, d));
        }
    });
}

/// Ends phase `name` of the timeline of `side` of `id`, if begun.
pub fn mark_of(side: Side, id: &str, name: &'static str) {
    if let Some(t) = get(side, id) {
        t.mark(name);
    }
}

/// The phases of `side` of `id` so far, as text (empty if it has none); it goes on.
pub fn so_far(side: Side, id: &str) -> String {
    get(side, id).map(|t| t.text().0).unwrap_or_default()
}

/// Ends the timeline of `side` of `id`: logged (info) as one line with its total, and its
/// phases returned as text ("seize 1.2 ms, collect: fds 8.0 ms, …").
pub fn finish(side: Side, id: &str) -> Option<String> {
    let t = lock(all()).remove(&(id.to_string(), side))?;
    let (text, total) = t.text();
    tracing::info!(migration = %id, "stop timeline ({}): {text}; total {}", side.name(), ms(total));
    Some(text)
}

/// Forgets the timeline of `side` of `id` (the migration ended otherwise).
pub fn forget(side: Side, id: &str) {
    lock(all()).remove(&(id.to_string(), side));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_told_in_order_with_their_lengths_and_parts() {
        let id = "timeline-test";
        begin(Side::Origin, id, Instant::now());
        enter(Side::Origin, id);
        part("last scan", Duration::from_millis(1));
        mark("first");
        std::thread::sleep(Duration::from_millis(5));
        mark_of(Side::Origin, id, "second");
        assert!(so_far(Side::Origin, id).starts_with("first "));
        // Another side's timeline of the same id is another one.
        mark_of(Side::Destination, id, "nothing");
        assert_eq!(so_far(Side::Destination, id), "");
        let text = finish(Side::Origin, id).expect("a timeline");
        let phases: Vec<&str> = text.split(", ").collect();
        assert_eq!(phases.len(), 2, "{text}");
        assert!(
            phases[0].starts_with("first ") && phases[0].ends_with(" (last scan 1.0 ms)"),
            "{text}"
        );
        let second: f64 = phases[1]
            .strip_prefix("second ")
            .and_then(|r| r.strip_suffix(" ms"))
            .and_then(|v| v.parse().ok())
            .expect("a length");
        assert!(second >= 5.0, "{text}");
        // Gone once finished; a mark with none is nothing.
        assert!(finish(Side::Origin, id).is_none());
        leave();
        mark("nothing");
    }
}
