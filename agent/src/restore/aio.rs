//! Linux native AIO contexts (`io_setup`). Each is made again inside the task with a ring of
//! the image's size and at the image's index in the process's table of contexts (free indexes
//! below it taken by contexts destroyed again); the kernel's own tail is brought to the
//! image's by writes to `/dev/null` that complete at once (the kernel keeps that position
//! itself and never reads it back from the ring), the events before the image's head reaped;
//! the ring is moved to the image's address (the kernel follows the move: the address is the
//! context id the process holds) and given the image's header and every event slot, so that
//! the completed events not reaped at the dump are there to reap.

use super::RestoreError;
use super::inject::Injector;
use crate::state::{AIO_EVENT_SIZE, AIO_RING_HEADER, AioRingState, MmState, PAGE_SIZE, VmaKind};

/// `IOCB_CMD_PWRITE`.
const IOCB_CMD_PWRITE: u16 = 1;
/// Requests submitted, and events reaped, per call.
const BATCH: u64 = 256;
/// Where the calls' arguments go in the scratch area (`put_path` uses 4096).
const AT_CTX: u64 = 8192;
const AT_TIMEOUT: u64 = AT_CTX + 16;
const AT_BYTE: u64 = AT_CTX + 32;
const AT_IOCB: u64 = AT_CTX + 64;
const AT_PTRS: u64 = AT_IOCB + 64;
const AT_EVENTS: u64 = AT_PTRS + BATCH * 8;

fn fail(start: u64, what: impl Into<String>) -> RestoreError {
    RestoreError::AioRing {
        start,
        what: what.into(),
    }
}

/// The smallest `io_setup` request whose ring has `len` bytes: the kernel makes room for
/// `2 * max(n, 4 * possible CPUs) + 2` events after the 32-byte header, rounded up to whole
/// pages, and gives the ring as many events as those pages hold. Asking for the least keeps
/// the system-wide count (`fs.aio-nr`) low.
fn nr_req_for(len: u64) -> u64 {
    let pages = len / PAGE_SIZE;
    if pages <= 1 {
        return 1;
    }
    // 32 + (2n + 2) * 32 > (pages - 1) * 4096
    ((pages - 1) * PAGE_SIZE - 3 * AIO_EVENT_SIZE) / (2 * AIO_EVENT_SIZE) + 1
}

/// `io_setup(nr)`: the new context's id (its ring's address).
fn setup(inj: &Injector<'_>, start: u64, nr: u64) -> Result<u64, RestoreError> {
    let at = inj.put(AT_CTX, &[0u8; 8])?;
    inj.call_raw(libc::SYS_io_setup, [nr, at, 0, 0, 0, 0])?
        .map_err(|e| fail(start, format!("io_setup({nr}): {e}")))?;
    let mut id = [0u8; 8];
    inj.tracee().read_mem(at, &mut id)?;
    Ok(u64::from_le_bytes(id))
}

/// The ring header's `id` and `nr` at `ctx`.
fn header(inj: &Injector<'_>, ctx: u64) -> Result<(u32, u32), RestoreError> {
    let mut h = [0u8; 8];
    inj.tracee().read_mem(ctx, &mut h)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    Ok((word(0), word(4)))
}

/// Submits `count` writes of one byte to `/dev/null` (the iocb at `AT_IOCB`), which complete
/// inside `io_submit`; reaps them as they go when `reap`.
fn complete(
    inj: &Injector<'_>,
    r: &AioRingState,
    ctx: u64,
    count: u64,
    reap: bool,
) -> Result<(), RestoreError> {
    let mut done = 0;
    while done < count {
        let n = (count - done).min(BATCH);
        let got = inj
            .call_raw(libc::SYS_io_submit, [ctx, n, inj.area + AT_PTRS, 0, 0, 0])?
            .map_err(|e| {
                fail(
                    r.start,
                    format!(
                        "io_submit to bring the ring's tail to {} ({done} of {count} done): {e}",
                        r.tail
                    ),
                )
            })?;
        if got == 0 {
            return Err(fail(r.start, "io_submit took no request"));
        }
        if reap {
            let reaped = inj
                .call_raw(
                    libc::SYS_io_getevents,
                    [
                        ctx,
                        got,
                        got,
                        inj.area + AT_EVENTS,
                        inj.area + AT_TIMEOUT,
                        0,
                    ],
                )?
                .map_err(|e| fail(r.start, format!("io_getevents: {e}")))?;
            if reaped != got {
                return Err(fail(
                    r.start,
                    format!("io_getevents reaped {reaped} of {got} completed writes"),
                ));
            }
        }
        done += got;
    }
    Ok(())
}

/// Makes every AIO context of the image (see the module's documentation). The rings' VMAs
/// (kind [`VmaKind::AioRing`]) are not mapped by `map_vmas`; this maps them, with their
/// protection and `madvise` flags. Call once the image's other VMAs are mapped, before
/// [`super::mm::protect`] and [`super::mm::lock`].
pub fn restore_rings(inj: &Injector<'_>, mm: &MmState) -> Result<(), RestoreError> {
    if mm.aio_rings.is_empty() {
        return Ok(());
    }
    // Placeholders at the image's addresses, so that no new ring lands on another's place.
    for r in &mm.aio_rings {
        let got = inj
            .call_raw(
                libc::SYS_mmap,
                [
                    r.start,
                    r.len,
                    libc::PROT_NONE as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                    u64::MAX,
                    0,
                ],
            )?
            .map_err(|e| fail(r.start, format!("reserve its address: {e}")))?;
        if got != r.start {
            return Err(fail(r.start, format!("its address is taken ({got:#x})")));
        }
    }
    // In the order of their index in the table: io_setup takes the lowest free one.
    let mut order: Vec<&AioRingState> = mm.aio_rings.iter().collect();
    order.sort_by_key(|r| r.id);
    let mut made: Vec<(&AioRingState, u64)> = Vec::with_capacity(order.len());
    let mut fillers = Vec::new();
    let mut next = 0u32;
    for r in order {
        while next < r.id {
            fillers.push(setup(inj, r.start, 1)?);
            next += 1;
        }
        let ctx = setup(inj, r.start, nr_req_for(r.len))?;
        let (id, nr) = header(inj, ctx)?;
        if id != r.id {
            return Err(fail(
                r.start,
                format!(
                    "io_setup gave the context index {id}, the image's is {}",
                    r.id
                ),
            ));
        }
        if nr != r.nr {
            return Err(fail(
                r.start,
                format!(
                    "io_setup made a ring of {nr} events, the image's has {} (the kernel gives \
                     a ring at least 8 events per possible CPU: this host has more CPUs)",
                    r.nr
                ),
            ));
        }
        made.push((r, ctx));
        next += 1;
    }
    for f in fillers {
        inj.call("io_destroy", libc::SYS_io_destroy, [f, 0, 0, 0, 0, 0])?;
    }

    // The kernel's tail: `head` writes completed and reaped, then those from head to tail
    // completed and left in the ring.
    if made.iter().any(|(r, _)| r.head != 0 || r.tail != 0) {
        let path = inj.put_path("/dev/null")?;
        let fd = inj.call(
            "openat(/dev/null)",
            libc::SYS_openat,
            [
                libc::AT_FDCWD as u64,
                path,
                (libc::O_WRONLY | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
            ],
        )?;
        let byte = inj.put(AT_BYTE, &[0])?;
        let mut iocb = [0u8; 64];
        iocb[16..18].copy_from_slice(&IOCB_CMD_PWRITE.to_le_bytes());
        iocb[20..24].copy_from_slice(&(fd as u32).to_le_bytes());
        iocb[24..32].copy_from_slice(&byte.to_le_bytes());
        iocb[32..40].copy_from_slice(&1u64.to_le_bytes());
        let iocb_at = inj.put(AT_IOCB, &iocb)?;
        let ptrs: Vec<u8> = (0..BATCH).flat_map(|_| iocb_at.to_le_bytes()).collect();
        inj.put(AT_PTRS, &ptrs)?;
        // timespec { 1 s, 0 }: the writes are complete already.
        let mut ts = [0u8; 16];
        ts[..8].copy_from_slice(&1u64.to_le_bytes());
        inj.put(AT_TIMEOUT, &ts)?;
        let result = made.iter().try_for_each(|&(r, ctx)| {
            complete(inj, r, ctx, u64::from(r.head), true)?;
            let unreaped =
                (u64::from(r.tail) + u64::from(r.nr) - u64::from(r.head)) % u64::from(r.nr);
            complete(inj, r, ctx, unreaped, false)
        });
        inj.call("close", libc::SYS_close, [fd, 0, 0, 0, 0, 0])?;
        result?;
    }

    for (r, ctx) in made {
        let got = inj
            .call_raw(
                libc::SYS_mremap,
                [
                    ctx,
                    r.len,
                    r.len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    r.start,
                    0,
                ],
            )?
            .map_err(|e| fail(r.start, format!("mremap of the new ring {ctx:#x}: {e}")))?;
        if got != r.start {
            return Err(fail(r.start, format!("the ring moved to {got:#x}")));
        }
        // The kernel finds the context by its new address.
        inj.call_raw(libc::SYS_io_submit, [r.start, 0, 0, 0, 0, 0])?
            .map_err(|e| {
                fail(
                    r.start,
                    format!("the kernel did not follow the ring's move (io_submit: {e})"),
                )
            })?;
        let mut ring = Vec::with_capacity(AIO_RING_HEADER as usize + r.events.len());
        for w in [
            r.id,
            r.nr,
            r.head,
            r.tail,
            r.magic,
            r.compat_features,
            r.incompat_features,
            r.header_length,
        ] {
            ring.extend_from_slice(&w.to_le_bytes());
        }
        ring.extend_from_slice(&r.events);
        inj.tracee().write_mem(r.start, &ring)?;
        let Some(v) = mm
            .vmas
            .iter()
            .find(|v| v.kind == VmaKind::AioRing && v.start == r.start)
        else {
            continue;
        };
        let rw = crate::state::prot::READ | crate::state::prot::WRITE;
        if v.prot != rw {
            inj.call(
                "mprotect",
                libc::SYS_mprotect,
                [v.start, v.end - v.start, u64::from(v.prot), 0, 0, 0],
            )?;
        }
        super::mm::advise_vma(inj, v, mm.merge_any)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel makes of a request (`aio_setup_ring`), for a machine with `cpus`.
    fn ring_len(nr: u64, cpus: u64) -> u64 {
        let events = nr.max(4 * cpus) * 2 + 2;
        (AIO_RING_HEADER + events * AIO_EVENT_SIZE).div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    #[test]
    fn the_request_gives_the_ring_back_and_is_the_least_that_does() {
        for pages in 1..200u64 {
            let len = pages * PAGE_SIZE;
            let n = nr_req_for(len);
            assert_eq!(ring_len(n, 2), len, "{pages} pages");
            if n > 1 {
                assert!(
                    ring_len(n - 1, 2) < len,
                    "{pages} pages: {} also does",
                    n - 1
                );
            }
        }
    }
}
