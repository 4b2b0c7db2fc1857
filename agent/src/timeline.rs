//! Per-phase timing of a migration's stop (docs/migration.md "Post-copy", the figures): each
//! side keeps, per migration, the phases of the stop in the order they ended and logs them as
//! one line (`stop timeline (origin|destination) …: seize 0.3 ms, collect 4.1 ms, …`), which
//! `cargo xtask bench-migrate` prints beside its figures. A mark is an `Instant::now()` and a
//! push under an uncontended lock: cheap enough to stay in.
//!
//! The code that runs on one thread for a migration (the origin's tracer, the destination's
//! restorer) makes that thread's timeline current ([`enter`]), so that code below it (dump,
//! restore) marks its phases with [`mark`] without being handed anything; a mark with no
//! current timeline does nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The phases of one side of one migration's stop.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    marks: Mutex<Vec<(&'static str, Instant)>>,
}

impl Timeline {
    /// Ends phase `name` now.
    pub fn mark(&self, name: &'static str) {
        lock(&self.marks).push((name, Instant::now()));
    }

    /// The phases so far: `name 1.2 ms, …; total T ms`.
    pub fn text(&self) -> String {
        let marks = lock(&self.marks);
        let mut prev = self.start;
        let mut parts = Vec::with_capacity(marks.len());
        for &(name, at) in marks.iter() {
            let d = at.saturating_duration_since(prev);
            parts.push(format!("{name} {:.1} ms", d.as_secs_f64() * 1e3));
            prev = prev.max(at);
        }
        let total = prev.saturating_duration_since(self.start);
        format!(
            "{}; total {:.1} ms",
            parts.join(", "),
            total.as_secs_f64() * 1e3
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The timelines of the migrations under way, by (migration id, side).
type Timelines = HashMap<(String, &'static str), Arc<Timeline>>;

fn all() -> &'static Mutex<Timelines> {
    static ALL: OnceLock<Mutex<Timelines>> = OnceLock::new();
    ALL.get_or_init(Mutex::default)
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Timeline>>> = const { RefCell::new(None) };
}

/// Starts the timeline of `side` (`origin`, `destination`) of migration `id` now (again, if
/// there was one). Not made any thread's: a thread of the async runtime runs other
/// migrations' code too; a thread of this migration's own calls [`enter`].
pub fn begin(id: &str, side: &'static str) -> Arc<Timeline> {
    let t = Arc::new(Timeline {
        start: Instant::now(),
        marks: Mutex::new(Vec::with_capacity(32)),
    });
    lock(all()).insert((id.to_string(), side), t.clone());
    t
}

/// Makes the timeline of `side` of `id` (if begun) this thread's.
pub fn enter(id: &str, side: &'static str) {
    let t = lock(all()).get(&(id.to_string(), side)).cloned();
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

/// Ends phase `name` of the timeline of `side` of `id`, if begun.
pub fn mark_of(id: &str, side: &'static str, name: &'static str) {
    if let Some(t) = lock(all()).get(&(id.to_string(), side)) {
        t.mark(name);
    }
}

/// Ends the timeline of `side` of `id`: logged (info) as one line and returned.
pub fn finish(id: &str, side: &'static str) -> Option<String> {
    let t = lock(all()).remove(&(id.to_string(), side))?;
    let text = t.text();
    tracing::info!(migration = %id, "stop timeline ({side}): {text}");
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_told_in_order_with_their_lengths() {
        let id = "timeline-test";
        begin(id, "origin");
        enter(id, "origin");
        mark("first");
        std::thread::sleep(std::time::Duration::from_millis(5));
        mark_of(id, "origin", "second");
        let text = finish(id, "origin").expect("a timeline");
        let (phases, total) = text.split_once("; total ").expect("a total");
        let names: Vec<&str> = phases
            .split(", ")
            .map(|p| p.split_whitespace().next().unwrap_or_default())
            .collect();
        assert_eq!(names, ["first", "second"]);
        let second: f64 = phases
            .split(", ")
            .nth(1)
            .and_then(|p| p.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("a length");
        assert!(second >= 5.0, "{text}");
        let total: f64 = total.trim_end_matches(" ms").parse().expect("total");
        assert!(total >= second, "{text}");
        // Gone once finished; a mark with none is nothing.
        assert!(finish(id, "origin").is_none());
        leave();
        mark("nothing");
    }
}
