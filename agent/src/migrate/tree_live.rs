//! Live migration of a tree (`ferry migrate PID --tree`, docs/migration.md "Trees"): every
//! member's private anonymous memory is tracked ([`Precopy`], one per member) and sent
//! in rounds while the whole tree runs; the final stop freezes the tree as it is then and
//! copies what is left.
//!
//! A member that forks or exits during the rounds: the final stop dumps the tree as it is at
//! the freeze, and pre-copied pages count only for the members (PID and start time) still
//! tracked then, and, as for a single process, only in the areas still registered and for
//! the pages neither written nor moved since they were sent. A member made during the rounds
//! is not tracked (a fork does not pass the registration on): all of it travels in the final
//! copy. A member that ended took its tracking with it; what it sent is never used.
//!
//! The destination has no task made ahead (a tree is made by `clone3(set_tid)` in order, each
//! child forked by its restored parent): it keeps every member's pages in a staging store
//! ([`Staging`], by member PID and address, newest first) and writes them into each member
//! during the final restore, once its areas are mapped and before its children are forked.

use std::collections::HashMap;
use std::time::Duration;

use ferry_proto::v1::PrecopyPages;
use nix::unistd::Pid;

use super::live::{Decoded, MAX_ROUNDS, Precopy, Received, Round, Rounds, bytes_of};
use super::origin::Ev;
use super::{chain, fault, start_time};
use crate::dump::freeze::Frozen;
use crate::dump::{self, DumpError, DumpOptions};
use crate::state::{TreeState, VmaState};

/// One member whose writes are tracked.
#[derive(Debug)]
struct Member {
    pid: i32,
    start: u64,
    /// Its PID as the image names it (messages are tagged with it).
    image_pid: i32,
    pre: Precopy,
    /// What the next round reads.
    next: Vec<(u64, u64)>,
}

/// The origin's side: the write tracking of every member.
#[derive(Debug)]
pub(super) struct TreePrecopy {
    members: Vec<Member>,
}

/// Whether `pid` is still the process that started at `start` and has not ended.
fn alive(pid: i32, start: u64) -> bool {
    crate::proc::read(pid, "stat")
        .ok()
        .and_then(|s| crate::proc::parse_stat(&s).ok())
        .is_some_and(|s| s.start_time == start && s.state != 'Z' && s.state != 'X')
}

fn ns_pid(pid: i32) -> Option<i32> {
    crate::proc::parse_status(&crate::proc::read(pid, "status").ok()?)
        .ok()
        .map(|s| s.ns_pid)
}

/// The members of the tree of `root` (root first, each parent before its children), but
/// zombies.
fn members_of(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = std::collections::HashSet::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        let zombie = crate::proc::read(p, "stat")
            .ok()
            .and_then(|s| crate::proc::parse_stat(&s).ok())
            .is_none_or(|s| s.state == 'Z');
        if !zombie {
            out.push(p);
        }
        stack.extend(super::tree::descendants_of(p));
    }
    out
}

/// The pre-copy rounds of a tree's live migration: the tracking starts, the rounds go out
/// through `send`, each reported, then [`Ev::Precopied`]; the tracking goes on until the
/// final stop (or the returned value is dropped).
pub(super) fn precopy(
    root: i32,
    opts: DumpOptions,
    max_downtime: Duration,
    send: &(dyn Fn(PrecopyPages) -> Result<(), String> + Sync),
    events: &tokio::sync::mpsc::UnboundedSender<Ev>,
) -> Result<TreePrecopy, String> {
    let mut pre = TreePrecopy::start(root, opts)?;
    let mut report = |n: u32, r: &Round| {
        let _ = events.send(Ev::Round { n, raw: r.raw });
    };
    let rounds = pre.rounds(max_downtime, send, &mut report)?;
    let _ = events.send(Ev::Precopied(rounds));
    Ok(pre)
}

impl TreePrecopy {
    /// Checks the tree of `root` as its dump would (nothing is tracked in a tree that would
    /// be refused), then starts tracking the writes of every member. A member that ended
    /// meanwhile is left out; any other failure ends the tracking of all.
    pub(super) fn start(root: i32, opts: DumpOptions) -> Result<Self, String> {
        dump::precheck_tree(Pid::from_raw(root), opts, &|_| false)
            .map_err(|e| format!("freeze the tree: {}", chain(&e)))?;
        let mut members = Vec::new();
        for pid in members_of(root) {
            let Some(start) = start_time(pid) else {
                continue;
            };
            let image_pid = ns_pid(pid).unwrap_or(pid);
            match Precopy::start(Pid::from_raw(pid), opts.codec) {
                Ok(pre) => members.push(Member {
                    pid,
                    start,
                    image_pid,
                    pre,
                    next: Vec::new(),
                }),
                Err(_) if pid != root && !alive(pid, start) => {}
                Err(e) => {
                    return Err(format!("start write tracking of pid {pid}: {}", chain(&e)));
                }
            }
        }
        Ok(TreePrecopy { members })
    }

    /// The members tracked (checked before their tracking started: see
    /// [`dump::hold_tree_with`]).
    pub(super) fn pids(&self) -> std::collections::HashSet<i32> {
        self.members.iter().map(|m| m.pid).collect()
    }

    /// Drops the members that ended (their tracking with them), after `e` (a failure of one
    /// of theirs): `Err(e)` if a member still alive failed.
    fn forget_ended(&mut self, failed: Option<(usize, String)>) -> Result<(), String> {
        if let Some((i, e)) = failed
            && alive(self.members[i].pid, self.members[i].start)
        {
            return Err(e);
        }
        self.members.retain_mut(|m| {
            let keep = alive(m.pid, m.start);
            if !keep {
                tracing::debug!(pid = m.pid, "a member ended during the pre-copy rounds");
                m.pre.stop();
            }
            keep
        });
        Ok(())
    }

    /// Runs the pre-copy rounds of every member, as [`super::live::precopy_rounds`] does for one
    /// process: round 1 sends every present page, each next one what was written meanwhile;
    /// they stop when what is left (all members together) would travel within
    /// `max_downtime` at the rate the rounds went, after [`MAX_ROUNDS`], or when a round saw
    /// as much written as it sent. `send` gets every message, tagged with its member.
    pub(super) fn rounds(
        &mut self,
        max_downtime: Duration,
        send: &(dyn Fn(PrecopyPages) -> Result<(), String> + Sync),
        report: &mut dyn FnMut(u32, &Round),
    ) -> Result<Rounds, String> {
        let mut out = Rounds::default();
        let mut failed = None;
        for (i, m) in self.members.iter_mut().enumerate() {
            match m.pre.present() {
                Ok(r) => m.next = r,
                Err(e) => failed = failed.or(Some((i, e))),
            }
        }
        self.forget_ended(failed)?;
        let mut rate: f64 = 0.0;
        for n in 1..=MAX_ROUNDS {
            if fault(&format!("origin-exit-precopy-round-{n}")) {
                tracing::error!(
                    round = n,
                    "FERRY_FAULT origin-exit-precopy-round-{n}: exiting"
                );
                std::process::exit(70);
            }
            if fault(&format!("pause-precopy-round-{n}")) {
                tracing::warn!(
                    round = n,
                    "FERRY_FAULT pause-precopy-round-{n}: sleeping 5 s"
                );
                std::thread::sleep(Duration::from_secs(5));
            }
            let mut total = Round::default();
            let mut failed = None;
            for (i, m) in self.members.iter_mut().enumerate() {
                let member = m.image_pid;
                // Every message names its member; none asks for a task made ahead.
                let tagged = |mut p: PrecopyPages| {
                    p.member = member;
                    p.pid = 0;
                    p.area_starts.clear();
                    p.area_ends.clear();
                    p.area_noreserve.clear();
                    p.avoid_starts.clear();
                    p.avoid_ends.clear();
                    send(p)
                };
                let ranges = std::mem::take(&mut m.next);
                match m.pre.round(n, &ranges, &tagged) {
                    Ok(r) => {
                        total.raw += r.raw;
                        total.wire += r.wire;
                        total.took += r.took;
                    }
                    Err(e) => {
                        failed = Some((i, e));
                        break;
                    }
                }
            }
            self.forget_ended(failed)?;
            out.bytes.push(total.raw);
            report(n, &total);
            if total.raw >= 4 << 20 || rate == 0.0 {
                rate = rate.max(total.raw as f64 / total.took.as_secs_f64().max(1e-6));
            }
            let mut failed = None;
            for (i, m) in self.members.iter_mut().enumerate() {
                match m.pre.written() {
                    Ok(r) => m.next = r,
                    Err(e) => failed = failed.or(Some((i, e))),
                }
            }
            self.forget_ended(failed)?;
            let left: u64 = self.members.iter().map(|m| bytes_of(&m.next)).sum();
            let need = Duration::from_secs_f64(left as f64 / rate.max(1.0));
            let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
            tracing::debug!(
                round = n,
                sent = total.raw,
                left,
                ?need,
                rate,
                members = self.members.len(),
                "tree pre-copy round"
            );
            if need <= max_downtime {
                out.why = format!(
                    "converged: {} left in {} member(s) after round {n}, ~{} ms at {:.0} MB/s",
                    mib(left),
                    self.members.len(),
                    need.as_millis(),
                    rate / 1e6
                );
                break;
            }
            if left >= total.raw && total.raw > 0 {
                out.why = format!(
                    "did not converge: {} written during round {n}, which sent {}; stopped and \
                     copied the rest",
                    mib(left),
                    mib(total.raw)
                );
                break;
            }
            if n == MAX_ROUNDS {
                out.why = format!(
                    "did not converge: {} still written after {MAX_ROUNDS} rounds; stopped and \
                     copied the rest",
                    mib(left)
                );
            }
        }
        Ok(out)
    }

    /// Under the freeze of the tree (`frozen`, every member's threads), before anything is
    /// collected: the last scan of each member still tracked. A tracked member not in the
    /// tree any more (it ended, or left it) is no longer tracked.
    pub(super) fn finish(&mut self, frozen: &[Frozen]) -> Result<(), DumpError> {
        let mut kept = Vec::with_capacity(self.members.len());
        for mut m in std::mem::take(&mut self.members) {
            let f = frozen
                .iter()
                .find(|f| f.leader().tracee.pid().as_raw() == m.pid)
                .filter(|_| start_time(m.pid) == Some(m.start));
            match f {
                Some(f) => {
                    m.pre.finish(f)?;
                    kept.push(m);
                }
                None => m.pre.stop(),
            }
        }
        self.members = kept;
        Ok(())
    }

    /// After the dump collected `tree` (under the same freeze as [`TreePrecopy::finish`];
    /// `host_pids`: each process's PID here, in the order of `tree.processes`): marks in each
    /// tracked member the pages the destination has already. Returns how many.
    pub(super) fn mark(&self, tree: &mut TreeState, host_pids: &[i32]) -> Result<u64, DumpError> {
        let mut kept = 0;
        for m in &self.members {
            if let Some(i) = host_pids.iter().position(|&p| p == m.pid)
                && let Some(p) = tree.processes.get_mut(i)
            {
                let n = m.pre.mark(&mut p.mm.vmas)?;
                let stored: u64 = p.mm.vmas.iter().map(|v| v.stored_pages()).sum();
                tracing::info!(
                    member = m.pid,
                    precopied = n,
                    stored,
                    "a member's pages on the destination already"
                );
                kept += n;
            }
        }
        Ok(kept)
    }

    /// Ends every member's tracking (also done when this is dropped).
    pub(super) fn stop(&mut self) {
        for m in &mut self.members {
            m.pre.stop();
        }
    }
}

impl Drop for TreePrecopy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The destination's side: every member's pre-copied pages, until the final restore writes
/// those its image names into each member.
#[derive(Debug, Default)]
pub(super) struct Staging {
    members: HashMap<i32, Received>,
}

impl Staging {
    /// Whether nothing was staged.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Keeps one decoded message of member `d.member` (a later one for the same page
    /// replaces it).
    pub(super) fn insert(&mut self, d: Decoded) {
        self.members.entry(d.member).or_default().insert(d);
    }

    /// The pages of member `image_pid` (a tree of one restores as a single process does,
    /// with these).
    pub(super) fn take(&mut self, image_pid: i32) -> Option<Received> {
        self.members.remove(&image_pid)
    }

    /// Writes the pre-copied pages of member `image_pid` that its final image names
    /// (`precopied` runs of `vmas`) into its task `pid`, whose areas are mapped and writable.
    pub(super) fn write(&self, image_pid: i32, pid: Pid, vmas: &[VmaState]) -> Result<(), String> {
        if vmas.iter().all(|v| v.precopied.is_empty()) {
            return Ok(());
        }
        let none = Received::default();
        let got = self.members.get(&image_pid).unwrap_or(&none);
        let t = std::time::Instant::now();
        let n = got
            .write(pid, vmas, &[])
            .map_err(|e| format!("pid {image_pid}: {e}"))?;
        tracing::debug!(member = image_pid, pages = n, elapsed = ?t.elapsed(), "pre-copied pages written into a member");
        Ok(())
    }
}
