//! The CRIU bridge (`ferry image export-criu`, `import-criu`, `inspect DIR`), checked against
//! CRIU's own tool: `crit` (Debian package `criu`) must decode every exported image file and
//! show the process that was dumped (its PID, memory areas, descriptors); images `crit
//! encode`s from JSON the test edits import and restore; dump → export → import → restore
//! gives the process back, which carries on and checks its own memory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::{TestCtx, Victim, field, image_path, setup, skip, status_field};
use serde_json::Value;

/// Whether `crit` is installed; prints SKIPPED (fails under CI=true) when not.
fn have_crit() -> bool {
    match Command::new("crit").arg("-h").output() {
        Ok(o) if o.status.success() => true,
        _ => skip("crit is not installed (Debian package criu)"),
    }
}

/// `crit decode -i FILE --pretty`, which must succeed, as JSON.
fn decode(file: &Path) -> Value {
    let out = Command::new("crit")
        .args(["decode", "--pretty", "-i"])
        .arg(file)
        .output()
        .expect("run crit");
    assert!(
        out.status.success(),
        "crit decode {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("crit decode {}: not JSON: {e}", file.display()))
}

/// `crit encode -i JSON -o IMG`, which must succeed.
fn encode(json: &Value, img: &Path) {
    let src = img.with_extension("json");
    std::fs::write(&src, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    let out = Command::new("crit")
        .args(["encode", "-i"])
        .arg(&src)
        .arg("-o")
        .arg(img)
        .output()
        .expect("run crit");
    assert!(
        out.status.success(),
        "crit encode {} failed: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&src).unwrap();
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn is_pages(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("pages-"))
}

/// Memory areas of /proc/PID/maps as (start, end).
fn proc_areas(pid: i32) -> BTreeSet<(u64, u64)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(|l| {
            let range = l.split(' ').next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            )
        })
        .collect()
}

fn proc_fds(pid: i32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect()
}

fn hex_or_num(v: &Value) -> u64 {
    match v {
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("not a hex number: {s}")),
        v => v.as_u64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

fn export(ctx: &TestCtx, img: &Path, dir: &Path) -> String {
    let out = ctx.ferry(&[
        "image".as_ref(),
        "export-criu".as_ref(),
        img.as_os_str(),
        "-o".as_ref(),
        dir.as_os_str(),
    ]);
    out.assert_ok();
    out.stderr.clone()
}

fn import(ctx: &TestCtx, dir: &Path, img: &Path) -> String {
    let out = ctx.ferry(&[
        "image".as_ref(),
        "import-criu".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_ok();
    out.stderr.clone()
}

/// After a restore, the counter victim goes on: its memory checksum is the same, its counter
/// went on, its ticks have no gap.
fn assert_goes_on(v: &Victim, before: &str) {
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 3);
    let after = v.check();
    assert_eq!(
        field(&after, "sum"),
        field(before, "sum"),
        "memory checksum"
    );
    let n = |l: &str| field(l, "counter").unwrap().parse::<u64>().unwrap();
    assert!(
        n(&after) > n(before),
        "counter went back: {before} → {after}"
    );
    v.assert_ticks_continuous();
    v.assert_no_bad();
}

#[test]
fn criu_export_decodes_and_round_trips() {
    let Some(ctx) = setup("criu_export_decodes_and_round_trips") else {
        return;
    };
    if !have_crit() {
        return;
    }
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let before = v.check();
    let pid = v.pid;
    let areas = proc_areas(pid);
    let fds = proc_fds(pid);
    let img = image_path(&ctx, "counter");
    v.dump(&ctx, &img, &[]);
    let dir = ctx.path("criu");
    let warnings = export(&ctx, &img, &dir);
    // What CRIU's tables cannot hold is named, not dropped silently: the counter's status
    // and log files under /tmp are carried whole by Ferry.
    assert!(
        warnings.contains("files carried whole"),
        "export should name what it does not carry: {warnings}"
    );

    // crit reads every image file (the pages files are raw data, without framing).
    let mut decoded = std::collections::BTreeMap::new();
    for f in files_of(&dir) {
        if is_pages(&f) {
            continue;
        }
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        decoded.insert(name, decode(&f));
    }
    for must in ["inventory.img", "pstree.img", "files.img"] {
        assert!(decoded.contains_key(must), "no {must} exported");
    }
    // The same process: PID, memory areas, descriptors.
    let pstree = &decoded["pstree.img"]["entries"];
    assert_eq!(pstree.as_array().unwrap().len(), 1);
    assert_eq!(pstree[0]["pid"].as_i64(), Some(i64::from(pid)));
    let core = &decoded[&format!("core-{pid}.img")]["entries"][0];
    assert_eq!(core["tc"]["comm"].as_str(), Some("counter"));
    let mm = &decoded[&format!("mm-{pid}.img")]["entries"][0];
    let vmas: BTreeSet<(u64, u64)> = mm["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (hex_or_num(&v["start"]), hex_or_num(&v["end"])))
        .collect();
    assert_eq!(vmas, areas, "memory areas in mm-{pid}.img");
    let ids = &decoded[&format!("ids-{pid}.img")]["entries"][0];
    let files_id = ids["files_id"].as_u64().unwrap();
    let fdinfo = &decoded[&format!("fdinfo-{files_id}.img")]["entries"];
    let got: BTreeSet<u64> = fdinfo
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fd"].as_u64().unwrap())
        .collect();
    assert_eq!(got, fds, "descriptors in fdinfo-{files_id}.img");
    // The data file the counter reads, with its offset.
    let files = decoded["files.img"]["entries"].as_array().unwrap();
    let data = v.state.join("data");
    let data_entry = files
        .iter()
        .find(|f| f["reg"]["name"].as_str() == data.to_str())
        .unwrap_or_else(|| panic!("no {} in files.img", data.display()));
    let off: u64 = field(&before, "off").unwrap().parse().unwrap();
    assert_eq!(
        data_entry["reg"]["pos"].as_u64(),
        Some(off),
        "data file offset"
    );
    // The pages: one per present page of the pagemap.
    let pagemap = &decoded[&format!("pagemap-{pid}.img")]["entries"];
    let pages_id = pagemap[0]["pages_id"].as_u64().unwrap();
    let npages: u64 = pagemap.as_array().unwrap()[1..]
        .iter()
        .map(|e| e["nr_pages"].as_u64().unwrap())
        .sum();
    let len = std::fs::metadata(dir.join(format!("pages-{pages_id}.img")))
        .unwrap()
        .len();
    assert_eq!(
        len,
        npages * 4096,
        "pages-{pages_id}.img against its pagemap"
    );
    assert!(npages >= 8192, "the 32 MiB buffer's pages: {npages}");

    // `ferry image inspect` reads the directory.
    let out = ctx.ferry(&["image".as_ref(), "inspect".as_ref(), dir.as_os_str()]);
    out.assert_ok();
    assert!(
        out.stdout.contains(&format!("pid {pid} (counter)")),
        "inspect of the CRIU directory: {}",
        out.stdout
    );

    // Back to Ferry, and restored: the process goes on (the restore checker agrees, or the
    // restore fails).
    let img2 = image_path(&ctx, "counter-from-criu");
    import(&ctx, &dir, &img2);
    v.restore(&ctx, &img2, &[]);
    assert_eq!(v.pid, pid);
    assert_goes_on(&v, &before);
}

#[test]
fn criu_encoded_json_imports_and_restores() {
    let Some(ctx) = setup("criu_encoded_json_imports_and_restores") else {
        return;
    };
    if !have_crit() {
        return;
    }
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let before = v.check();
    let pid = v.pid;
    assert_eq!(status_field(pid, "Umask").as_deref(), Some("0027"));
    let img = image_path(&ctx, "counter");
    v.dump(&ctx, &img, &[]);
    let dir = ctx.path("criu");
    export(&ctx, &img, &dir);

    // Every table goes through JSON and `crit encode`; the test changes the umask (fs) and
    // the soft RLIMIT_NOFILE (core) on the way, which the restored process must show.
    let enc = ctx.path("encoded");
    std::fs::create_dir(&enc).unwrap();
    for f in files_of(&dir) {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        if is_pages(&f) {
            std::fs::copy(&f, enc.join(&name)).unwrap();
            continue;
        }
        let mut json = decode(&f);
        if name == format!("fs-{pid}.img") {
            json["entries"][0]["umask"] = Value::from(0o077);
        }
        if name == format!("core-{pid}.img") {
            let rl = &mut json["entries"][0]["tc"]["rlimits"]["rlimits"][7];
            assert_eq!(rl["cur"].as_u64(), Some(777), "RLIMIT_NOFILE of the victim");
            rl["cur"] = Value::from(555);
        }
        encode(&json, &enc.join(&name));
    }
    let img2 = image_path(&ctx, "counter-encoded");
    import(&ctx, &enc, &img2);
    v.restore(&ctx, &img2, &[]);
    assert_eq!(v.pid, pid);
    assert_eq!(status_field(pid, "Umask").as_deref(), Some("0077"));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        nofile.split_whitespace().nth(3) == Some("555"),
        "soft RLIMIT_NOFILE after the restore: {nofile}"
    );
    assert_goes_on(&v, &before);
}

#[test]
fn criu_strict_refuses_what_criu_cannot_hold() {
    let Some(ctx) = setup("criu_strict_refuses_what_criu_cannot_hold") else {
        return;
    };
    let mut v = Victim::c(&ctx, "counter", &[]);
    v.wait_tick_beyond(3);
    let img = image_path(&ctx, "counter");
    v.dump(&ctx, &img, &[]);
    let dir = ctx.path("criu");
    let out = ctx.ferry(&[
        "image".as_ref(),
        "export-criu".as_ref(),
        img.as_os_str(),
        "-o".as_ref(),
        dir.as_os_str(),
        "--strict".as_ref(),
    ]);
    out.assert_failed();
    assert!(
        out.stderr.contains("--strict") && out.stderr.contains("files carried whole"),
        "the refusal names what CRIU cannot hold: {}",
        out.stderr
    );
    assert!(!dir.exists(), "a refused export writes nothing");
    // A directory that is not a CRIU image is refused with its name.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("inventory.img"), b"not an image").unwrap();
    let out = ctx.ferry(&[
        "image".as_ref(),
        "import-criu".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        ctx.path("x.ferry").as_os_str(),
    ]);
    out.assert_failed();
    assert!(
        out.stderr.contains("inventory.img"),
        "the error names the file: {}",
        out.stderr
    );
}

#[test]
fn criu_tree_round_trip() {
    let Some(ctx) = setup("criu_tree_round_trip") else {
        return;
    };
    if !have_crit() {
        return;
    }
    // A parent and a child sharing 8 MiB copy-on-write, each checking its own copy.
    let mut v = Victim::c(&ctx, "proc_cow", &[]);
    let pid = v.pid;
    let child: i32 = ferry_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the child of proc_cow",
        || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        },
    );
    v.track(child);
    v.signal(nix::sys::signal::Signal::SIGUSR1);
    v.wait_status("the parent's check", |l| l.starts_with("ok cow="));
    let img = image_path(&ctx, "tree");
    v.dump(&ctx, &img, &["--tree"]);
    ferry_tests::reap(child, std::time::Duration::from_secs(10));
    let dir = ctx.path("criu");
    export(&ctx, &img, &dir);
    for f in files_of(&dir) {
        if !is_pages(&f) {
            decode(&f);
        }
    }
    let pstree = decode(&dir.join("pstree.img"));
    let pids: Vec<i64> = pstree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids, [i64::from(pid), i64::from(child)], "pstree.img");
    assert_eq!(
        pstree["entries"][1]["ppid"].as_i64(),
        Some(i64::from(pid)),
        "the child's parent in pstree.img"
    );
    let img2 = image_path(&ctx, "tree-from-criu");
    import(&ctx, &dir, &img2);
    // `Victim::restore` expects one process: the tree's line names the descendants too.
    let out = ctx.ferry(&["restore".as_ref(), img2.as_os_str()]);
    out.assert_ok();
    v.restored_as(pid);
    assert!(
        out.stdout.contains(&format!("descendants {child}")),
        "restore of the tree: {}",
        out.stdout
    );
    v.track(child);
    // `wait_nth` counts from 0: the next line after the ones already there.
    let n = v.count("ok child");
    let m = v.count("ok cow=");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    v.signal(nix::sys::signal::Signal::SIGUSR1);
    v.wait_nth("ok child", n);
    v.wait_nth("ok cow=", m);
    v.assert_no_bad();
}
