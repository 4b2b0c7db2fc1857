//! A live or post-copy migration's final stop, what only tests use: the fault
//! `origin-madvise-in-window` has the process call `madvise` after the origin read `smaps`
//! for it and before the freeze, so that the watch of its system calls has a call to see
//! (and the dump then reads the flags again under the freeze).

use crate::dump::SmapsAhead;

/// Test fault `origin-madvise-in-window` (`FERRY_FAULT`): `MADV_DONTDUMP` on the largest
/// private anonymous area without it, made by the process's main thread in place of its next
/// return from a system call (see [`crate::dump::watch::Watch::call_in_window`]). No-op
/// otherwise.
pub fn madvise_fault(mut ahead: SmapsAhead) -> SmapsAhead {
    if !super::fault("origin-madvise-in-window") {
        return ahead;
    }
    let flags = crate::proc::parse_smaps_areas(ahead.text());
    let area = flags
        .iter()
        .filter(|(_, _, f)| !f.iter().any(|x| x == "dd"))
        .filter(|(s, _, _)| {
            ahead
                .text()
                .lines()
                .find(|l| l.starts_with(&format!("{s:x}-")))
                .is_some_and(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() == 5 && cols[1].ends_with('p') && cols[4] == "0"
                })
        })
        .max_by_key(|(s, e, _)| e - s)
        .map(|(s, e, _)| (*s, *e));
    let Some((start, end)) = area else {
        tracing::warn!("FERRY_FAULT origin-madvise-in-window: no private anonymous area");
        return ahead;
    };
    tracing::warn!(
        start,
        end,
        "FERRY_FAULT origin-madvise-in-window: MADV_DONTDUMP"
    );
    let args = [start, end - start, libc::MADV_DONTDUMP as u64, 0, 0, 0];
    if let Err(e) = ahead.watch().call_in_window(libc::SYS_madvise, args) {
        tracing::warn!(error = %e, "FERRY_FAULT origin-madvise-in-window");
    }
    ahead
}
