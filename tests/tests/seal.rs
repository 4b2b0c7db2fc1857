//! Sealed images (`ferry dump --seal KEYFILE`, docs/image-format.md "Sealed images"): the
//! general C victim goes through a sealed image and checks itself; without its key, with
//! another key, damaged or cut short, the image is refused by name and nothing is restored.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ferry_tests::{TestCtx, Victim, alive, field, image_path, kill_and_reap, my_children, setup};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `ferry restore IMAGE ARGS…` must fail with `want` in its error, leave no process behind
/// and none at `pid`.
fn refused(ctx: &TestCtx, image: &Path, args: &[&str], pid: i32, want: &str) {
    let before = my_children();
    let mut all: Vec<&OsStr> = vec![OsStr::new("restore"), image.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let out = ctx.ferry(&all);
    let left: Vec<i32> = my_children().difference(&before).copied().collect();
    for &p in &left {
        kill_and_reap(p);
    }
    assert!(
        !out.status.success(),
        "restore {args:?} succeeded: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains(want),
        "restore {args:?}: the error does not say {want:?}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(left.is_empty(), "restore {args:?} left {left:?} behind");
    assert!(!alive(pid), "restore {args:?}: a process runs as {pid}");
}

#[test]
fn a_sealed_image_restores_with_its_key_and_only_with_it() {
    let Some(ctx) = setup("a_sealed_image_restores_with_its_key_and_only_with_it") else {
        return;
    };
    let key = ctx.path("image.key");
    let other = ctx.path("other.key");
    for k in [&key, &other] {
        ctx.ferry(&["key".as_ref(), "new".as_ref(), k.as_os_str()])
            .assert_ok();
        assert_eq!(
            fs::metadata(k).unwrap().permissions().mode() & 0o777,
            0o600,
            "a key file is its owner's alone"
        );
    }
    // An existing key file is never replaced.
    let again = ctx.ferry(&["key".as_ref(), "new".as_ref(), key.as_os_str()]);
    assert!(!again.status.success() && again.stderr.contains("image.key"));

    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let before = v.check();
    let pid = v.pid;
    let img = image_path(&ctx, "sealed");
    let dump = v.dump(&ctx, &img, &["--seal", key.to_str().unwrap()]);
    assert!(dump.stdout.contains("sealed"), "{}", dump.stdout);
    let bytes = fs::read(&img).unwrap();
    // The victim's data segment and its executable's path are in every plain image.
    assert!(!contains(&bytes, b"the data segment is restored as it was"));
    let exe = ferry_tests::workload("counter");
    assert!(!contains(&bytes, exe.as_os_str().as_encoded_bytes()));

    // Without a key, `inspect` tells only that it is sealed.
    let inspect = ctx.ferry(&["image".as_ref(), "inspect".as_ref(), img.as_os_str()]);
    inspect.assert_ok();
    assert!(
        inspect.stdout.contains("sealed") && !inspect.stdout.contains("process"),
        "{}",
        inspect.stdout
    );

    refused(&ctx, &img, &[], pid, "image is sealed: no key given");
    refused(
        &ctx,
        &img,
        &["--key", other.to_str().unwrap()],
        pid,
        "the key does not open it",
    );
    // A flipped byte in the middle (a page block): refused naming the block.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    let damaged = ctx.path("damaged.ferry");
    fs::write(&damaged, &bad).unwrap();
    refused(
        &ctx,
        &damaged,
        &["--key", key.to_str().unwrap()],
        pid,
        "pages block",
    );
    // Cut short: refused.
    let cut = ctx.path("cut.ferry");
    fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    refused(
        &ctx,
        &cut,
        &["--key", key.to_str().unwrap()],
        pid,
        "truncated",
    );
    assert_eq!(fs::read(&img).unwrap(), bytes, "the image was changed");

    // With its key: inspect shows the process, restore brings it back as it was.
    let inspect = ctx.ferry(&[
        "image".as_ref(),
        "inspect".as_ref(),
        img.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    inspect.assert_ok();
    assert!(
        inspect.stdout.contains(&format!("pid {pid}")),
        "{}",
        inspect.stdout
    );
    v.restore(&ctx, &img, &["--key", key.to_str().unwrap()]);
    assert_eq!(v.pid, pid);
    let after = v.check();
    let n = |l: &str| field(l, "counter").and_then(|c| c.parse::<u64>().ok());
    assert!(
        n(&after) >= n(&before),
        "the counter went back: {before} → {after}"
    );
    assert_eq!(field(&after, "sum"), field(&before, "sum"));
    let t = v.last_tick();
    v.wait_tick_beyond(t + 2);
}
