//! Process trees (`ferry dump --tree`): every process comes back with its PID, parent, process
//! group and session; a zombie child can still be reaped with its status; a pipe between
//! processes keeps its queued bytes; a shared open file description keeps one offset; a bash
//! pipeline keeps flowing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::{TestCtx, alive, kill_and_reap, setup, wait_until, workload};

/// PIDs of `pid` and its descendants, parents first.
fn tree_of(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
        i += 1;
    }
    out
}

/// (ppid, pgid, sid) of a process from /proc/PID/stat.
fn ids(pid: i32) -> Option<(i32, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some((f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?))
}

fn dump_and_restore(ctx: &TestCtx, root: i32, extra: &[&str]) -> String {
    let img = ctx.path("tree.img");
    let img = img.to_str().expect("utf-8 path");
    let mut args = vec!["dump", "--tree", "-o", img];
    let root_s = root.to_string();
    args.push(&root_s);
    ctx.ferry(&args).assert_ok();
    let mut args = vec!["restore", img];
    args.extend_from_slice(extra);
    let out = ctx.ferry(&args);
    out.assert_ok();
    out.stdout.clone()
}

#[test]
fn family_comes_back_whole() {
    let Some(ctx) = setup("trees-family") else {
        return;
    };
    let dir = ctx.path("family");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let child = Command::new(workload("trees_family"))
        .arg(&dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the family");
    let root = child.id() as i32;
    wait_until(Duration::from_secs(10), "the family is ready", || {
        dir.join("ready").exists().then_some(())
    });
    let before: BTreeMap<i32, (i32, i32, i32)> = tree_of(root)
        .into_iter()
        .filter_map(|p| Some((p, ids(p)?)))
        .collect();
    assert_eq!(before.len(), 6, "root, zombie, A, B, G, C: {before:?}");

    let out = dump_and_restore(&ctx, root, &[]);
    assert!(
        out.starts_with(&format!("restored pid {root} and its descendants")),
        "{out}"
    );
    let after = tree_of(root);
    assert_eq!(after.len(), 6, "{after:?}");
    for (pid, (ppid, pgid, sid)) in &before {
        let now = ids(*pid).unwrap_or_else(|| panic!("pid {pid} is not back"));
        assert_eq!(now.0, *ppid, "pid {pid}: parent");
        // The root leads a new session and group; who was in its group or session follows it.
        let map = |x: i32, of_root: i32| if x == of_root { root } else { x };
        assert_eq!(now.1, map(*pgid, before[&root].1), "pid {pid}: group");
        assert_eq!(now.2, map(*sid, before[&root].2), "pid {pid}: session");
    }
    for p in tree_of(root) {
        if ids(p).is_some_and(|_| alive(p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGUSR1,
            );
        }
    }
    let report = wait_until(Duration::from_secs(10), "every report", || {
        let r = std::fs::read_to_string(dir.join("report")).unwrap_or_default();
        (r.lines().count() == 5).then_some(r)
    });
    let line = |name: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no report from {name}: {report}"))
            .to_string()
    };
    assert!(line("P").ends_with("zombie=1:7"), "{report}");
    assert!(line("A").ends_with("read=12:queued-bytes"), "{report}");
    assert!(line("B").ends_with("reaped=1:3"), "{report}");
    let shared = std::fs::read(dir.join("shared")).expect("read the shared file");
    assert_eq!(shared, b"CP", "one offset for the root and C");
    kill_and_reap(root);
}

#[test]
fn bash_pipeline_keeps_flowing() {
    let Some(ctx) = setup("trees-pipeline") else {
        return;
    };
    let out_file = ctx.path("out");
    // The producer counts; the filter passes lines on; the file must hold every number once.
    let script = format!(
        "i=0; while :; do echo $i; i=$((i+1)); sleep 0.001; done | cat > {}",
        out_file.display()
    );
    let child = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn bash");
    let root = child.id() as i32;
    wait_until(Duration::from_secs(10), "the pipeline runs", || {
        (tree_of(root).len() == 3 && std::fs::metadata(&out_file).is_ok_and(|m| m.len() > 100))
            .then_some(())
    });
    let out = dump_and_restore(&ctx, root, &[]);
    assert!(out.contains("and its descendants"), "{out}");
    let size = std::fs::metadata(&out_file).map(|m| m.len()).unwrap_or(0);
    wait_until(Duration::from_secs(10), "the pipeline flows on", || {
        (std::fs::metadata(&out_file).map(|m| m.len()).unwrap_or(0) > size + 200).then_some(())
    });
    for p in tree_of(root).into_iter().rev() {
        kill_and_reap(p);
    }
    let text = std::fs::read_to_string(&out_file).expect("read the output");
    let mut lines: Vec<&str> = text.lines().collect();
    // The last line may be cut short by the kill.
    lines.pop();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, i.to_string(), "line {i}: lost or duplicated bytes");
    }
}
