//! Live migration's write tracking (agent/src/dump/track.rs) on a local process: written pages
//! are seen (user-mode stores, the kernel's writes for the process, another process's
//! `process_vm_writev`), re-protected by the scan, and nothing of the tracking stays in the
//! process once it ends.

use std::io::IoSlice;

use ferry_agent::dump::track::Tracker;
use ferry_tests::{Victim, field, setup};
use nix::sys::uio::{RemoteIoVec, process_vm_writev};
use nix::unistd::Pid;

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn uw_areas(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
        .count()
}

/// The pages of `[area, area + 256 pages)` inside `ranges`, by index.
fn pages_in(ranges: &[(u64, u64)], area: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for &(s, e) in ranges {
        let mut a = s;
        while a < e {
            if a >= area && a < area + 256 * 4096 {
                out.push((a - area) / 4096);
            }
            a += 4096;
        }
    }
    out.sort_unstable();
    out
}

#[test]
fn tracker_sees_every_write_and_leaves_nothing() {
    let Some(ctx) = setup("live-track") else {
        return;
    };
    let v = Victim::c(&ctx, "live_track", &[]);
    let line = v.wait_status("area", |l| l.starts_with("area"));
    let area = u64::from_str_radix(
        field(&line, "addr").expect("addr").trim_start_matches("0x"),
        16,
    )
    .expect("hex address");
    let fds = fd_count(v.pid);
    assert_eq!(uw_areas(v.pid), 0, "tracked before the start");

    let t = Tracker::start(Pid::from_raw(v.pid)).expect("start tracking");
    assert_eq!(
        fd_count(v.pid),
        fds,
        "the process kept a descriptor of the tracking"
    );
    assert!(uw_areas(v.pid) > 0, "no area registered (no `uw` in smaps)");
    assert!(
        t.areas()
            .iter()
            .any(|&(s, e)| s <= area && area + 256 * 4096 <= e),
        "the victim's area is not tracked: {:x?}",
        t.areas()
    );
    let present = t.present().expect("present");
    assert_eq!(
        pages_in(&present, area).len(),
        256,
        "all 256 pages are present"
    );
    let first = t.written().expect("scan");
    assert!(
        pages_in(&first, area).is_empty(),
        "nothing written yet, but {:?}",
        pages_in(&first, area)
    );

    // The victim writes page 5 itself and has the kernel write page 9 (read from /dev/zero);
    // this test writes page 20 from outside.
    let ok = v.check();
    assert!(ok.starts_with("ok wrote"), "{ok}");
    let data = [0xabu8; 16];
    let n = process_vm_writev(
        Pid::from_raw(v.pid),
        &[IoSlice::new(&data)],
        &[RemoteIoVec {
            base: (area + 20 * 4096 + 32) as usize,
            len: data.len(),
        }],
    )
    .expect("process_vm_writev");
    assert_eq!(n, data.len());
    let written = pages_in(&t.written().expect("scan"), area);
    assert_eq!(written, vec![5, 9, 20], "written pages");
    // Re-protected by the scan: seen once.
    let again = pages_in(&t.written().expect("scan"), area);
    assert!(again.is_empty(), "written again without a write: {again:?}");
    // The page frames are known (root reads them).
    let pfns = t.pfns(area, 256).expect("pfns");
    assert!(pfns.iter().all(|p| p.is_some_and(|f| f != 0)), "{pfns:?}");

    t.close();
    assert_eq!(
        uw_areas(v.pid),
        0,
        "`uw` left in the process after the tracker closed"
    );
    assert_eq!(fd_count(v.pid), fds);
    // It goes on as before: the writes still work (no fault left unresolved).
    assert!(v.check().starts_with("ok wrote"));
}
