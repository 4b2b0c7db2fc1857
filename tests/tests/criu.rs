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

/// What the CRIU round trip of a victim must give.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Export without a warning (but the common one, see [`COMMON_LOSS`]), `crit decode` of
    /// every table, import without a warning, restore (checker on), and the victim checks ok.
    RoundTrip,
    /// CRIU's tables cannot hold its state: the export warns with this text and `--strict`
    /// refuses (crit still decodes what was written).
    Lost(&'static str),
}

/// One victim: `tests/workloads/NAME.c`, or `compat/NAME` for `tests/compat/NAME.c` (run with
/// no arguments but the state directory; dumped with `--tree` when it has children: see
/// [`all_cases`]), and what its round trip must give.
struct Case {
    name: &'static str,
    expect: Expect,
}

const fn rt(name: &'static str) -> Case {
    Case {
        name,
        expect: Expect::RoundTrip,
    }
}

const fn lost(name: &'static str, why: &'static str) -> Case {
    Case {
        name,
        expect: Expect::Lost(why),
    }
}

/// Every victim writes its status and log files (open for writing under /tmp), which Ferry
/// carries whole and CRIU keeps no contents of; the files stay where they are, so the round
/// trip does not need them. Any other warning makes a victim lossy.
const COMMON_LOSS: &str = "files carried whole";

/// The victims of the round-trip test: every workload that answers the SIGUSR1 check (the
/// `proc_*` trees with `--tree`) and a set of conformance victims, one or more per kind of
/// table. `FERRY_CRIU_VICTIMS=all` (or a comma list of names) runs others, for exploring.
const CASES: &[Case] = &[
    // Workloads: single processes.
    rt("counter"),
    rt("fdkinds_eventfd"),
    rt("fdkinds_signalfd"),
    rt("fdkinds_timerfd"),
    rt("files_private"),
    rt("fsids"),
    rt("nanosleep"),
    rt("pdeathsig_restored"),
    rt("pgrp_leader"),
    rt("pipes_pipe"),
    rt("select"),
    rt("signals"),
    rt("sockets_unix"),
    rt("sockets_inet"),
    rt("threads"),
    rt("uid"),
    // Workloads: trees (`--tree`).
    rt("proc_clone_files"),
    rt("proc_membarrier"),
    rt("proc_no_vdso"),
    rt("proc_stopped_child"),
    rt("proc_timer_thread"),
    rt("proc_zombie_handler"),
    rt("proc_cow"),
    // Conformance victims, by kind of table.
    rt("compat/fd_cloexec"),
    rt("compat/fd_dup_shared_offset"),
    rt("compat/file_offset_read"),
    rt("compat/file_append"),
    rt("compat/file_dir_position"),
    rt("compat/file_dev_nodes"),
    rt("compat/file_pipe_size"),
    rt("compat/fd_proc_self_files"),
    rt("compat/mem_anon_private"),
    rt("compat/mem_growsdown"),
    rt("compat/mem_madv_dontfork"),
    rt("compat/mem_mprotect_pattern"),
    rt("compat/mem_vdso"),
    rt("compat/proc_rlimits"),
    rt("compat/proc_personality"),
    rt("compat/proc_caps_dropped"),
    rt("compat/proc_dumpable"),
    rt("compat/proc_setsid"),
    rt("compat/proc_child"),
    rt("compat/proc_child_own_session"),
    rt("compat/proc_stopped_child"),
    rt("compat/ipc_cow_child"),
    rt("compat/sig_pending_rt_values"),
    rt("compat/sig_altstack_autodisarm"),
    rt("compat/thr_robust_list"),
    rt("compat/thr_names"),
    rt("compat/tmr_itimer_real"),
    rt("compat/ipc_eventfd_sema"),
    rt("compat/fd_epoll_level"),
    rt("compat/fd_epoll_nested"),
    rt("compat/fd_signalfd_pending"),
    rt("compat/fd_timerfd_absolute"),
    rt("compat/tmr_timerfd_cancel_on_set"),
    rt("compat/sock_udp_connected"),
    rt("compat/sock_unix_abstract"),
    rt("compat/sock_unix_listener_unlinked"),
    rt("compat/sock_tcp_listener"),
    rt("compat/sock_buffer_opts"),
    rt("compat/sock_bindtodevice"),
    rt("compat/sock_reuseport_group"),
    rt("compat/sock_ipv6_v6only"),
    // What CRIU's tables cannot hold (or the bridge does not write yet), named.
    lost("attrs", "CPU affinity"),
    lost("compat/proc_ioprio", "I/O priority"),
    lost("compat/proc_coredump_filter", "coredump_filter"),
    lost("compat/mem_mlockall_future", "mlockall(MCL_FUTURE)"),
    lost("seccomp", "seccomp filters"),
    lost("fdkinds_epoll", "edge-triggered event"),
    lost(
        "compat/fd_epoll_closed_target",
        "CRIU names a watch by its descriptor only",
    ),
    lost("fdkinds_memfd", "memfd"),
    lost("fdkinds_inotify", "an inotify instance"),
    lost("fdkinds_paths", "a file deleted while open"),
    lost("compat/file_fifo_read_end", "a FIFO"),
    lost("compat/cwd_removed", "a removed working directory"),
    lost("mmap", "shared anonymous memory"),
    lost("compat/ipc_shm_keyed", "SysV"),
    lost("pipes_files", "file locks"),
    lost("compat/misc_pidfd_self", "a pidfd"),
    lost("compat/misc_aio_context", "AIO"),
    lost("compat/tty_pty_termios", "pseudo-terminal"),
    lost("compat/sock_packet", "a netlink or packet socket"),
    lost("compat/sock_unix_dgram_connected", "sk-queues"),
    lost("compat/sock_unix_listener_pending", "not accepted yet"),
    lost("compat/sock_socket_filter", "level 1 name 44"),
    lost("compat/sock_udplite", "level 136"),
];

/// The victims `FERRY_CRIU_VICTIMS=all` adds: every conformance victim that needs no extra
/// libraries and whose dump is not expected to refuse, and every workload answering SIGUSR1.
fn all_cases() -> Vec<(String, Vec<String>, bool)> {
    let root = ferry_tests::workspace_root().join("tests");
    let mut out = Vec::new();
    for (dir, prefix) in [("workloads", ""), ("compat", "compat/")] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "c"))
            .collect();
        names.sort();
        for p in names {
            let text = std::fs::read_to_string(&p).unwrap();
            let head: String = text.lines().take(25).collect::<Vec<_>>().join("\n");
            // Conformance victims all answer SIGUSR1 (some through a shared header).
            let answers =
                !prefix.is_empty() || text.contains("fr_usr1_pending") && text.contains("fr_ready");
            if !answers || head.contains("compat-refuse") || head.contains("compat-libs") {
                continue;
            }
            let stem = p.file_stem().unwrap().to_str().unwrap();
            let tree = stem.starts_with("proc_") && prefix.is_empty()
                || head.contains("compat-dump-args: --tree");
            let args = head
                .lines()
                .find_map(|l| l.split_once("compat-args:").map(|(_, a)| a))
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            out.push((format!("{prefix}{stem}"), args, tree));
        }
    }
    out
}

/// Every process below `pid`, from `/proc/P/task/T/children`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

/// `crit decode` of every table of `dir` (not the raw `pages-N.img`), each into
/// `out/NAME.json`: crit's own command line (pycriu's `cli.main`), run once per file inside one
/// Python process, since starting crit for each of a few hundred files would take most of the
/// test's time. Returns the decoded tables by file name.
fn crit_decode_all(
    dir: &Path,
    out: &Path,
) -> Result<std::collections::BTreeMap<String, Value>, String> {
    std::fs::create_dir_all(out).unwrap();
    let files: Vec<PathBuf> = files_of(dir).into_iter().filter(|f| !is_pages(f)).collect();
    let script = "import os, sys\n\
        from pycriu import cli\n\
        out = sys.argv[1]\n\
        for f in sys.argv[2:]:\n\
        \x20   sys.argv = ['crit', 'decode', '--pretty', '-i', f, '-o', os.path.join(out, os.path.basename(f) + '.json')]\n\
        \x20   try:\n\
        \x20       cli.main()\n\
        \x20   except BaseException as e:\n\
        \x20       sys.stderr.write('crit decode %s: %r\\n' % (f, e))\n\
        \x20       sys.exit(1)\n";
    let crit = std::fs::read_to_string("/usr/bin/crit").unwrap_or_default();
    let python = crit
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .unwrap_or("/usr/bin/python3")
        .trim()
        .to_owned();
    let o = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(out)
        .args(&files)
        .output()
        .map_err(|e| format!("run {python}: {e}"))?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
    }
    let mut decoded = std::collections::BTreeMap::new();
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        let json = std::fs::read(out.join(format!("{name}.json")))
            .map_err(|e| format!("{name}.json: {e}"))?;
        let v: Value =
            serde_json::from_slice(&json).map_err(|e| format!("{name}: not JSON: {e}"))?;
        decoded.insert(name, v);
    }
    Ok(decoded)
}

/// The `not carried` warnings of a conversion but the common one.
fn losses(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .filter(|l| !l.contains(COMMON_LOSS))
        .map(str::to_owned)
        .collect()
}

/// What happened to one victim.
#[derive(Debug)]
enum Outcome {
    RoundTrip,
    Lost(Vec<String>),
}

/// Runs one victim through dump → export → crit decode → import → restore → check; a lossy
/// export stops after `--strict` is checked to refuse.
fn run_case(ctx: &TestCtx, name: &str, args: &[String], tree: bool) -> Result<Outcome, String> {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_case_inner(ctx, name, args, tree)
    }));
    match caught {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".to_owned())),
    }
}

fn run_case_inner(
    ctx: &TestCtx,
    name: &str,
    args: &[String],
    tree: bool,
) -> Result<Outcome, String> {
    let tag = name.replace('/', "-");
    let mut v = Victim::c_with(
        ctx,
        name,
        ferry_tests::Spawn {
            args: args.to_vec(),
            ..Default::default()
        },
    );
    v.check();
    let members = descendants(v.pid);
    for &m in &members {
        v.track(m);
    }
    let img = image_path(ctx, &tag);
    let mut dump_args = Vec::new();
    if tree {
        dump_args.push("--tree");
    }
    v.dump(ctx, &img, &dump_args);
    for &m in &members {
        ferry_tests::kill_and_reap(m);
    }
    let dir = ctx.path(&format!("{tag}.criu"));
    let out = ctx.ferry(&[
        "image".as_ref(),
        "export-criu".as_ref(),
        img.as_os_str(),
        "-o".as_ref(),
        dir.as_os_str(),
    ]);
    if !out.status.success() {
        return Err(format!("export-criu failed: {}", out.stderr.trim()));
    }
    let lost = losses(&out.stderr);
    let decoded = crit_decode_all(&dir, &ctx.path(&format!("{tag}.json")))?;
    let pstree = decoded.get("pstree.img").ok_or("no pstree.img")?["entries"]
        .as_array()
        .map_or(0, Vec::len);
    if pstree != 1 + if tree { members.len() } else { 0 } {
        return Err(format!(
            "pstree.img has {pstree} processes, the victim {} and {} descendants",
            v.orig_pid,
            members.len()
        ));
    }
    if !lost.is_empty() {
        let strict = ctx.path(&format!("{tag}.strict"));
        let out = ctx.ferry(&[
            "image".as_ref(),
            "export-criu".as_ref(),
            img.as_os_str(),
            "-o".as_ref(),
            strict.as_os_str(),
            "--strict".as_ref(),
        ]);
        if out.status.success() || strict.exists() {
            return Err(format!("export-criu --strict did not refuse: {lost:?}"));
        }
        return Ok(Outcome::Lost(lost));
    }
    let img2 = image_path(ctx, &format!("{tag}-from-criu"));
    let out = ctx.ferry(&[
        "image".as_ref(),
        "import-criu".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        img2.as_os_str(),
    ]);
    if !out.status.success() {
        return Err(format!("import-criu failed: {}", out.stderr.trim()));
    }
    let lost_in = losses(&out.stderr);
    if !lost_in.is_empty() {
        return Err(format!("import-criu warned: {lost_in:?}"));
    }
    let before = ferry_tests::my_children();
    let out = ctx.ferry(&["restore".as_ref(), img2.as_os_str()]);
    for pid in ferry_tests::my_children().difference(&before) {
        v.track(*pid);
    }
    if !out.status.success() {
        return Err(format!("restore failed: {}", out.stderr.trim()));
    }
    // `restored pid N`, for a tree followed by ` and its descendants …`.
    let pid = out
        .stdout
        .strip_prefix("restored pid ")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<i32>().ok())
        .ok_or_else(|| format!("restore printed {:?}", out.stdout))?;
    v.restored_as(pid);
    for d in descendants(pid) {
        v.track(d);
    }
    let tick = v.last_tick();
    v.check();
    if tick > 0 {
        v.wait_tick_beyond(tick);
    }
    v.assert_no_bad();
    Ok(Outcome::RoundTrip)
}

#[test]
fn criu_victims_round_trip() {
    let Some(ctx) = setup("criu_victims_round_trip") else {
        return;
    };
    if !have_crit() {
        return;
    }
    let start = std::time::Instant::now();
    let chosen = std::env::var("FERRY_CRIU_VICTIMS").unwrap_or_default();
    let cases: Vec<(String, Vec<String>, bool, Expect)> = if chosen.is_empty() {
        let all = all_cases();
        CASES
            .iter()
            .map(|c| {
                let (_, args, tree) = all
                    .iter()
                    .find(|(n, _, _)| n == c.name)
                    .unwrap_or_else(|| panic!("{}: not a victim answering SIGUSR1", c.name));
                (c.name.to_owned(), args.clone(), *tree, c.expect)
            })
            .collect()
    } else {
        let expect = |n: &str| {
            CASES
                .iter()
                .find(|c| c.name == n)
                .map_or(Expect::RoundTrip, |c| c.expect)
        };
        all_cases()
            .into_iter()
            .filter(|(n, _, _)| chosen == "all" || chosen.split(',').any(|c| c == n))
            .map(|(n, a, t)| {
                let e = expect(&n);
                (n, a, t, e)
            })
            .collect()
    };
    let mut wrong = Vec::new();
    for (name, args, tree, expect) in &cases {
        let t = std::time::Instant::now();
        let got = run_case(&ctx, name, args, *tree);
        let verdict = match (&got, expect) {
            (Ok(Outcome::RoundTrip), Expect::RoundTrip) => None,
            (Ok(Outcome::Lost(l)), Expect::Lost(why)) if l.iter().any(|l| l.contains(why)) => None,
            (Ok(Outcome::Lost(l)), Expect::Lost(why)) => Some(format!("warned {l:?}, not `{why}`")),
            (Ok(Outcome::Lost(l)), Expect::RoundTrip) => Some(format!("export warned: {l:?}")),
            (Ok(Outcome::RoundTrip), Expect::Lost(why)) => Some(format!(
                "round trips now: remove it from the lossy list (`{why}`)"
            )),
            (Err(e), _) => Some(e.clone()),
        };
        println!(
            "{name:<40} {:<60} [{:.1} s]",
            match (&got, &verdict) {
                (_, Some(v)) => format!("WRONG: {}", v.lines().next().unwrap_or("")),
                (Ok(Outcome::RoundTrip), None) => "round trip".to_owned(),
                (Ok(Outcome::Lost(l)), None) => format!("lost: {}", l.join("; ")),
                (Err(_), None) => unreachable!(),
            },
            t.elapsed().as_secs_f64()
        );
        if let Some(v) = verdict {
            wrong.push(format!("{name}: {v}"));
        }
    }
    println!(
        "{} victims in {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        wrong.is_empty(),
        "victims through CRIU:\n{}",
        wrong.join("\n")
    );
}
