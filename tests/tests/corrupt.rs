//! A damaged image — a flipped byte anywhere, a truncation anywhere, a newer version — makes
//! `ferry restore` fail with an error naming the section, and leaves no process behind.

use std::fs;
use std::path::Path;

use ferry_tests::{TestCtx, Victim, alive, image_path, kill_and_reap, my_children, setup};

/// Runs `ferry restore BAD` expecting a clean failure; returns a description of what went wrong
/// instead, if anything.
fn restore_must_fail(ctx: &TestCtx, bad: &Path, orig_pid: i32, what: &str) -> Option<String> {
    let before = my_children();
    let out = ctx.ferry(&["restore".as_ref(), bad.as_os_str()]);
    let leftovers: Vec<i32> = my_children().difference(&before).copied().collect();
    let restored = ferry_tests::parse_restored_pid(&out.stdout);
    for &pid in leftovers.iter().chain(restored.iter()) {
        kill_and_reap(pid);
    }
    let stayed = alive(orig_pid);
    if stayed {
        kill_and_reap(orig_pid);
    }
    let err = out.stderr.to_lowercase();
    if out.status.code().is_none_or(|c| c == 0) {
        return Some(format!(
            "{what}: restore ended with {} (stdout {:?})",
            out.status, out.stdout
        ));
    }
    if !["section", "header", "manifest"]
        .iter()
        .any(|w| err.contains(w))
    {
        return Some(format!(
            "{what}: the error names no section: {}",
            out.stderr.trim()
        ));
    }
    if !leftovers.is_empty() {
        return Some(format!("{what}: processes left behind: {leftovers:?}"));
    }
    if stayed {
        return Some(format!("{what}: a process runs as PID {orig_pid}"));
    }
    if err.contains("panicked") {
        return Some(format!("{what}: ferry panicked: {}", out.stderr.trim()));
    }
    None
}

/// A small victim dumped into an image; returns (victim with its PID free, image bytes).
fn small_image(ctx: &TestCtx) -> (Victim, Vec<u8>) {
    let mut v = Victim::c(ctx, "nanosleep", &[]);
    v.wait_tick_beyond(1);
    let img = image_path(ctx, "good");
    v.dump(ctx, &img, &[]);
    let bytes = fs::read(&img).unwrap();
    assert!(
        bytes.starts_with(b"FERRYIMG"),
        "the image does not start with its magic"
    );
    (v, bytes)
}

/// Offsets to damage: every byte of the first 96, the last 16, and 64 spread over the rest.
fn offsets(len: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..96.min(len)).collect();
    out.extend(len.saturating_sub(16)..len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let spread = len * i / 64;
        let jitter = usize::try_from(x % 4096).unwrap();
        out.push((spread + jitter).min(len - 1));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Restores the intact image at the end: the failures above were the damage's doing.
fn intact_restores(ctx: &TestCtx, v: &mut Victim, good: &[u8]) {
    let img = image_path(ctx, "intact");
    fs::write(&img, good).unwrap();
    v.restore(ctx, &img, &[]);
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 2);
    v.check();
}

#[test]
fn flipped_bytes_are_refused() {
    let Some(ctx) = setup("corrupt_flip") else {
        return;
    };
    let (mut v, good) = small_image(&ctx);
    let bad = image_path(&ctx, "bad");
    let mut problems = Vec::new();
    for off in offsets(good.len()) {
        let mut bytes = good.clone();
        bytes[off] ^= 0xff;
        fs::write(&bad, &bytes).unwrap();
        problems.extend(restore_must_fail(
            &ctx,
            &bad,
            v.pid,
            &format!("byte {off} flipped"),
        ));
    }
    assert!(
        problems.is_empty(),
        "{} damaged images were mishandled:\n{}",
        problems.len(),
        problems.join("\n")
    );
    intact_restores(&ctx, &mut v, &good);
}

#[test]
fn truncated_images_are_refused() {
    let Some(ctx) = setup("corrupt_truncate") else {
        return;
    };
    let (mut v, good) = small_image(&ctx);
    let bad = image_path(&ctx, "bad");
    let mut problems = Vec::new();
    let mut lengths = offsets(good.len());
    lengths.retain(|&l| l < good.len());
    for len in lengths {
        fs::write(&bad, &good[..len]).unwrap();
        problems.extend(restore_must_fail(
            &ctx,
            &bad,
            v.pid,
            &format!("truncated to {len} bytes"),
        ));
    }
    assert!(
        problems.is_empty(),
        "{} truncated images were mishandled:\n{}",
        problems.len(),
        problems.join("\n")
    );
    intact_restores(&ctx, &mut v, &good);
}

#[test]
fn newer_versions_are_refused() {
    let Some(ctx) = setup("corrupt_version") else {
        return;
    };
    let (mut v, good) = small_image(&ctx);
    let bad = image_path(&ctx, "bad");
    let major = u16::from_le_bytes([good[8], good[9]]);
    let minor = u16::from_le_bytes([good[10], good[11]]);
    let cases = [
        (
            "major + 1",
            major.wrapping_add(1),
            minor,
            major.wrapping_add(1),
        ),
        (
            "minor + 1",
            major,
            minor.wrapping_add(1),
            minor.wrapping_add(1),
        ),
        ("major 0xffff", 0xffff, minor, 0xffff),
    ];
    for (what, maj, min, named) in cases {
        let mut bytes = good.clone();
        bytes[8..10].copy_from_slice(&maj.to_le_bytes());
        bytes[10..12].copy_from_slice(&min.to_le_bytes());
        fs::write(&bad, &bytes).unwrap();
        let before = my_children();
        let out = ctx.ferry(&["restore".as_ref(), bad.as_os_str()]);
        for pid in my_children().difference(&before) {
            kill_and_reap(*pid);
        }
        out.assert_failed();
        let err = out.stderr.to_lowercase();
        assert!(
            err.contains("version") && err.contains(&named.to_string()),
            "{what}: the error should name the unsupported version {maj}.{min}: {}",
            out.stderr
        );
        assert!(!alive(v.pid), "{what}: a process was restored");
        // inspect refuses it too.
        let out = ctx.ferry(&["image".as_ref(), "inspect".as_ref(), bad.as_os_str()]);
        out.assert_failed();
        assert!(
            out.stderr.to_lowercase().contains("version"),
            "{what}: {}",
            out.stderr
        );
    }
    let mut bytes = good.clone();
    bytes[0] = b'X';
    fs::write(&bad, &bytes).unwrap();
    let out = ctx.ferry(&["restore".as_ref(), bad.as_os_str()]);
    out.assert_failed();
    assert!(
        out.stderr.to_lowercase().contains("magic") || out.stderr.to_lowercase().contains("header"),
        "{}",
        out.stderr
    );
    intact_restores(&ctx, &mut v, &good);
}

#[test]
fn trailing_bytes_are_refused() {
    let Some(ctx) = setup("corrupt_trailing") else {
        return;
    };
    let (mut v, good) = small_image(&ctx);
    let bad = image_path(&ctx, "bad");
    let mut problems = Vec::new();
    for tail in [&b"\0"[..], b"garbage after the end", &good[..]] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(tail);
        fs::write(&bad, &bytes).unwrap();
        let out = ctx.ferry(&["image".as_ref(), "inspect".as_ref(), bad.as_os_str()]);
        assert!(
            !out.status.success(),
            "inspect accepted {} trailing bytes",
            tail.len()
        );
        let what = format!("{} bytes after the end section", tail.len());
        problems.extend(restore_must_fail(&ctx, &bad, v.pid, &what));
    }
    assert!(
        problems.is_empty(),
        "{} images with trailing bytes were mishandled:\n{}",
        problems.len(),
        problems.join("\n")
    );
    intact_restores(&ctx, &mut v, &good);
}
