//! A live migration's final stop, what only tests use: the fault `origin-madvise-at-freeze`
//! changes an area's flags under the freeze after the origin read `smaps` for it (as a
//! process's own `madvise` between that read and the freeze would), so that the check of the
//! flags again under the freeze ([`crate::dump::mm::flags_still`]) has something to refuse.

use crate::dump::DumpError;
use crate::dump::freeze::Frozen;
use crate::ptrace::Entry;

/// Test fault `origin-madvise-at-freeze` (`FERRY_FAULT`): `MADV_DONTDUMP` on the largest
/// private anonymous area without it, injected into the frozen process (no-op otherwise).
pub fn madvise_fault(frozen: &Frozen) -> Result<(), DumpError> {
    if !super::fault("origin-madvise-at-freeze") {
        return Ok(());
    }
    let leader = frozen.leader();
    let pid = leader.tracee.pid();
    let bad = |why: String| DumpError::BadTarget {
        pid: pid.as_raw(),
        why,
    };
    let maps = crate::proc::parse_maps(&crate::proc::read(pid.as_raw(), "maps")?)?;
    let flags = crate::proc::parse_smaps_vmflags(&crate::proc::read(pid.as_raw(), "smaps")?);
    let vdso = maps
        .iter()
        .find(|e| e.name == "[vdso]")
        .ok_or_else(|| bad("no [vdso]".into()))?;
    let mut code = vec![0u8; (vdso.end - vdso.start) as usize];
    leader.tracee.read_mem(vdso.start, &mut code)?;
    let at = code
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .ok_or_else(|| bad("no syscall instruction in its [vdso]".into()))?;
    let Some(area) = maps
        .iter()
        .filter(|e| !e.shared && e.name.is_empty())
        .filter(|e| {
            !flags
                .iter()
                .any(|(s, f)| *s == e.start && f.iter().any(|x| x == "dd"))
        })
        .max_by_key(|e| e.end - e.start)
    else {
        return Ok(());
    };
    tracing::warn!(
        start = area.start,
        end = area.end,
        "FERRY_FAULT origin-madvise-at-freeze: MADV_DONTDUMP"
    );
    leader.tracee.inject(
        Entry::SingleStep(vdso.start + at as u64),
        &leader.regs,
        "madvise",
        libc::SYS_madvise,
        [
            area.start,
            area.end - area.start,
            libc::MADV_DONTDUMP as u64,
            0,
            0,
            0,
        ],
    )?;
    Ok(())
}
