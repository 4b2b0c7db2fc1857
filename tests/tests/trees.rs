//! Process trees (`ferry dump --tree`): every process comes back with its PID, parent, process
//! group and session; a zombie child can still be reaped with its status; a pipe between
//! processes keeps its queued bytes; a shared open file description keeps one offset; a bash
//! pipeline keeps flowing; members keep their threads, timers, attributes and seccomp filters.
//!
//! The test process is a child subreaper: once a dumped tree is killed, its processes come to
//! it. They are reaped by PID before the restore, so that their PIDs are free and the tree is
//! restored with the same PIDs (not into a new PID namespace).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::{
    FerryOutput, TestCtx, VICTIM_TIMEOUT, alive, field, kill_and_reap, my_children, read_lines,
    setup, status_field, wait_until, workload,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The processes of a tree under test, parents first. Dropping it kills and reaps them all,
/// parents first: a child whose parent is gone comes to the test process, which reaps it.
#[derive(Debug, Default)]
struct Tree {
    pids: Vec<i32>,
}

impl Drop for Tree {
    fn drop(&mut self) {
        for &p in &self.pids {
            kill_and_reap(p);
        }
    }
}

impl Tree {
    /// Starts `cmd` (its Child handle is dropped: it is reaped by PID). Its output goes to
    /// files: a process left behind must not hold the test runner's pipes open.
    /// [`Tree::spawn`], then waits until the victim has made `DIR/ready` (`what` names
    /// that moment) and takes in every process it started.
    fn spawn_ready(ctx: &TestCtx, cmd: Command, dir: &Path, what: &str) -> Tree {
        let mut tree = Tree::spawn(ctx, cmd);
        wait_until(Duration::from_secs(10), what, || {
            dir.join("ready").exists().then_some(())
        });
        tree.rescan();
        tree
    }

    fn spawn(ctx: &TestCtx, mut cmd: Command) -> Tree {
        let file = |name: &str| File::create(ctx.path(name)).expect("create an output file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file("tree.stdout"))
            .stderr(file("tree.stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        drop(child);
        Tree { pids: vec![pid] }
    }

    fn root(&self) -> i32 {
        self.pids[0]
    }

    /// Takes the current tree (parents first) as the processes to clean up.
    fn rescan(&mut self) {
        let mut now = tree_of(self.root());
        for p in &self.pids {
            if !now.contains(p) {
                now.push(*p);
            }
        }
        self.pids = now;
    }

    /// `ferry dump --tree ROOT -o IMAGE`, then reaps every process of the tree (the dump
    /// killed them all) so that their PIDs are free again.
    fn dump(&mut self, ctx: &TestCtx, image: &Path) -> FerryOutput {
        self.rescan();
        let root = self.root().to_string();
        let out = ctx.ferry(&[
            "dump",
            "--tree",
            &root,
            "-o",
            image.to_str().expect("utf-8 path"),
        ]);
        out.assert_ok();
        reap_all(&self.pids);
        // Their PIDs may belong to someone else from now on.
        self.pids.clear();
        out
    }

    /// `ferry restore IMAGE`, which must print `restored pid ROOT and its descendants ...`
    /// with the PIDs the tree had: every process is tracked for cleanup.
    fn restore(&mut self, ctx: &TestCtx, image: &Path, root: i32) -> FerryOutput {
        let before = my_children();
        let out = ctx.ferry(&["restore", image.to_str().expect("utf-8 path")]);
        // Whatever it printed, what runs now is to be cleaned up: the new children of the
        // test (the root, or the init of a new PID namespace) and every PID printed.
        self.pids = my_children().difference(&before).copied().collect();
        for p in out
            .stdout
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
        {
            if p > 1 && !self.pids.contains(&p) {
                self.pids.push(p);
            }
        }
        out.assert_ok();
        let line = out.stdout.trim_end();
        let rest = line
            .strip_prefix(&format!("restored pid {root} and its descendants "))
            .unwrap_or_else(|| {
                panic!(
                    "restore printed {:?}, not `restored pid {root} and its descendants ...` \
                     (the same PID); stderr: {}",
                    out.stdout, out.stderr
                )
            });
        for p in rest.split_whitespace() {
            let p: i32 = p.parse().unwrap_or_else(|_| panic!("bad pid in {line:?}"));
            if !self.pids.contains(&p) {
                self.pids.push(p);
            }
        }
        out
    }
}

/// Waits (bounded) until every PID in `pids` is gone, reaping those that are the test
/// process's children. The root is the test's child; the others come to the test (a child
/// subreaper) as their parents die.
fn reap_all(pids: &[i32]) {
    let start = Instant::now();
    let mut left: Vec<i32> = pids.to_vec();
    while !left.is_empty() {
        left.retain(|&p| {
            match waitpid(
                Pid::from_raw(p),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => false,
                // Not (yet) ours: its parent may still be exiting.
                Err(Errno::ECHILD) => Path::new(&format!("/proc/{p}")).exists(),
                Err(e) => panic!("waitpid({p}): {e}"),
            }
        });
        assert!(
            start.elapsed() < VICTIM_TIMEOUT,
            "the dumped processes {left:?} did not go away"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

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
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok())
            {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
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

#[test]
fn family_comes_back_whole() {
    let Some(ctx) = setup("trees-family") else {
        return;
    };
    let dir = ctx.path("family");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("trees_family"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn_ready(&ctx, cmd, &dir, "the family is ready");
    let root = tree.root();
    let before: BTreeMap<i32, (i32, i32, i32)> = tree_of(root)
        .into_iter()
        .filter_map(|p| Some((p, ids(p)?)))
        .collect();
    assert_eq!(before.len(), 6, "root, zombie, A, B, G, C: {before:?}");

    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
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
        if alive(p) {
            let _ = kill(Pid::from_raw(p), Signal::SIGUSR1);
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
    // Each reports the PID, parent, group and session it sees itself.
    for (name, l) in report
        .lines()
        .map(|l| (l.split(' ').next().unwrap_or(""), l))
    {
        let f: Vec<i32> = l
            .split(' ')
            .skip(1)
            .take(4)
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(f.len(), 4, "{l}");
        assert!(
            before.contains_key(&f[0]),
            "{name}: pid {} is new: {report}",
            f[0]
        );
    }
    let shared = std::fs::read(dir.join("shared")).expect("read the shared file");
    assert_eq!(shared, b"CP", "one offset for the root and C");
    // The root reaps everybody and exits 0.
    let status = wait_until(VICTIM_TIMEOUT, "the root to exit", || {
        match waitpid(Pid::from_raw(root), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(s) => Some(s),
            Err(e) => panic!("waitpid({root}): {e}"),
        }
    });
    tree.pids.clear();
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "the root ended with {status:?}"
    );
}

#[test]
fn bash_pipeline_keeps_flowing() {
    let Some(ctx) = setup("trees-pipeline") else {
        return;
    };
    let out_file = ctx.path("out");
    let fifo = ctx.path("tick");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // The producer counts, pacing itself with `read -t` on a FIFO nobody writes (a builtin:
    // no process comes and goes); `cat` passes the lines on; the file must hold every number
    // once, in order.
    let script = format!(
        "exec 3<>{}; i=0; while :; do echo $i; i=$((i+1)); read -t 0.002 -u 3; done | cat > {}",
        fifo.display(),
        out_file.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let mut tree = Tree::spawn(&ctx, cmd);
    let root = tree.root();
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    wait_until(Duration::from_secs(10), "the pipeline runs", || {
        (tree_of(root).len() == 3 && len(&out_file) > 100).then_some(())
    });
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    let size = len(&out_file);
    tree.restore(&ctx, &image, root);
    assert_eq!(
        tree.pids.len(),
        3,
        "bash and its two children: {:?}",
        tree.pids
    );
    wait_until(Duration::from_secs(10), "the pipeline flows on", || {
        (len(&out_file) > size + 200).then_some(())
    });
    drop(tree);
    let text = std::fs::read_to_string(&out_file).expect("read the output");
    let mut lines: Vec<&str> = text.lines().collect();
    // The last line may be cut short by the kill.
    lines.pop();
    assert!(lines.len() > 100, "{} lines", lines.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, i.to_string(), "line {i}: lost or duplicated bytes");
    }
}

/// The `ok ...` answer of the workload with state directory `dir` and PID `pid` to SIGUSR1.
fn check(dir: &Path, pid: i32) -> String {
    let answers = |d: &Path| -> Vec<String> {
        read_lines(&d.join("status"))
            .into_iter()
            .filter(|l| l.starts_with("ok") || l.starts_with("BAD"))
            .collect()
    };
    let before = answers(dir).len();
    kill(Pid::from_raw(pid), Signal::SIGUSR1).expect("signal the member");
    let line = wait_until(VICTIM_TIMEOUT, "an answer to SIGUSR1", || {
        answers(dir).get(before).cloned()
    });
    assert!(
        line.starts_with("ok"),
        "pid {pid}: {line}; status: {:?}",
        read_lines(&dir.join("status"))
    );
    line
}

/// Thread IDs of `pid`, sorted.
fn tids(pid: i32) -> Vec<i32> {
    let mut t: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    t.sort_unstable();
    t
}

#[test]
fn members_keep_threads_timers_and_seccomp() {
    let Some(ctx) = setup("trees-members") else {
        return;
    };
    let names = ["threads", "attrs", "seccomp"];
    let dirs: Vec<_> = names.iter().map(|n| ctx.path(n)).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    // bash waits for three children: 4 threads; timers and attributes; seccomp filters.
    let script = format!(
        "{} {} 4 & {} {} & {} {} filter & wait",
        workload("threads").display(),
        dirs[0].display(),
        workload("attrs").display(),
        dirs[1].display(),
        workload("seccomp").display(),
        dirs[2].display(),
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let mut tree = Tree::spawn(&ctx, cmd);
    let root = tree.root();
    let pids: Vec<i32> = dirs
        .iter()
        .map(|d| {
            wait_until(VICTIM_TIMEOUT, "a member to be ready", || {
                read_lines(&d.join("status"))
                    .iter()
                    .find_map(|l| l.strip_prefix("ready pid=")?.parse().ok())
            })
        })
        .collect();
    let before: Vec<String> = dirs.iter().zip(&pids).map(|(d, p)| check(d, *p)).collect();
    let threads = tids(pids[0]);
    assert_eq!(threads.len(), 5, "{threads:?}");
    let seccomp = |p: i32| ["Seccomp", "Seccomp_filters", "NoNewPrivs"].map(|k| status_field(p, k));
    let filters = seccomp(pids[2]);

    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    for p in &pids {
        assert!(
            tree.pids.contains(p),
            "pid {p} is not back: {:?}",
            tree.pids
        );
    }
    for ((d, p), was) in dirs.iter().zip(&pids).zip(&before) {
        let now = check(d, *p);
        assert_eq!(field(&now, "pid"), field(was, "pid"), "{now}");
    }
    assert_eq!(tids(pids[0]), threads, "thread ids changed");
    let ok = check(&dirs[0], pids[0]);
    assert_eq!(field(&ok, "tasks"), Some("5"), "{ok}");
    let ok = check(&dirs[1], pids[1]);
    assert_eq!(field(&ok, "timer"), field(&before[1], "timer"), "{ok}");
    assert_eq!(seccomp(pids[2]), filters);
    let ok = check(&dirs[2], pids[2]);
    assert!(ok.starts_with("ok filtered=1"), "{ok}");
}

/// The report lines of `names`, once each has written `n` of them.
fn reports(dir: &Path, names: &[&str], n: usize) -> Vec<String> {
    wait_until(Duration::from_secs(10), "every report", || {
        let r = read_lines(&dir.join("report"));
        if let Some(bad) = r.iter().find(|l| l.contains(" BAD ")) {
            panic!("{bad}");
        }
        names
            .iter()
            .all(|name| {
                r.iter()
                    .filter(|l| l.starts_with(&format!("{name} ")))
                    .count()
                    >= n
            })
            .then_some(r)
    })
}

/// Counter `what` of the `n`-th report of `name`.
fn counter(lines: &[String], name: &str, n: usize, what: &str) -> u64 {
    let l = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{name} ")))
        .nth(n)
        .unwrap_or_else(|| panic!("no report {n} from {name}: {lines:?}"));
    field(l, what)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {what} in {l}"))
}

/// Removes a SysV segment by key and a POSIX shm object by name when dropped.
struct ShmCleanup {
    key: i32,
    posix: PathBuf,
}

impl Drop for ShmCleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.posix);
        // SAFETY: shmget and shmctl take plain integers and a null buffer for IPC_RMID.
        unsafe {
            let id = libc::shmget(self.key, 0, 0);
            if id >= 0 {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

#[test]
fn shared_memory_stays_shared() {
    let Some(ctx) = setup("trees-shm") else {
        return;
    };
    let dir = ctx.path("shm");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let key = 0x4645_0000 | (std::process::id() as i32 & 0xffff);
    let name = format!("/ferry-trees-shm-{}", std::process::id());
    let _cleanup = ShmCleanup {
        key,
        posix: PathBuf::from(format!("/dev/shm{name}")),
    };
    let mut cmd = Command::new(workload("trees_shm"));
    cmd.arg(&dir).arg(&name).arg(key.to_string());
    let mut tree = Tree::spawn_ready(&ctx, cmd, &dir, "the pair is ready");
    let root = tree.root();
    let pids = tree_of(root);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let usr1 = |pids: &[i32]| {
        for p in pids {
            kill(Pid::from_raw(*p), Signal::SIGUSR1).expect("signal a member");
        }
    };
    usr1(&pids);
    let before = reports(&dir, &["P", "C"], 1);

    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    assert_eq!(tree_of(root), pids, "both back with their PIDs");
    usr1(&pids);
    let after = reports(&dir, &["P", "C"], 2);
    for name in ["P", "C"] {
        for what in ["anon", "sysv", "sysvk", "memfd", "posix"] {
            let (was, now) = (
                counter(&before, name, 0, what),
                counter(&after, name, 1, what),
            );
            assert!(
                now > was,
                "{name} {what}: {now} after the restore, {was} before: contents lost"
            );
        }
    }
    // Each area is one mapping of one object in each process, as before.
    for p in &pids {
        let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).expect("maps");
        assert!(maps.contains("/dev/zero (deleted)"), "{maps}");
        assert!(maps.contains("/memfd:trees-shm (deleted)"), "{maps}");
        assert_eq!(maps.matches("/SYSV").count(), 2, "{maps}");
    }
}

/// `/proc/PID/stat` fields 7 and 8: controlling terminal and its foreground group.
fn tty_of(pid: i32) -> (u64, i32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = s[s.rfind(')').expect("stat") + 1..]
        .split_whitespace()
        .collect();
    (f[4].parse().expect("tty_nr"), f[5].parse().expect("tpgid"))
}

#[test]
fn session_keeps_its_controlling_terminal() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let Some(ctx) = setup("trees-tty") else {
        return;
    };
    let dir = ctx.path("tty");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The test holds the master (a pty master is not something ferry dumps).
    let pty = nix::pty::openpty(None, None).expect("openpty");
    for fd in [pty.master.as_fd(), pty.slave.as_fd()] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .expect("cloexec");
    }
    nix::fcntl::fcntl(
        pty.master.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .expect("nonblock");
    let slave = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
    ))
    .expect("slave path");
    drop(pty.slave);
    let mut master = File::from(pty.master);
    let mut cmd = Command::new(workload("trees_tty"));
    cmd.arg(&dir).arg(&slave);
    let mut tree = Tree::spawn_ready(&ctx, cmd, &dir, "the session is set up");
    let root = tree.root();
    let pids = tree_of(root);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let g = pids[1];
    let before = tty_of(root);
    assert_ne!(before.0, 0, "the root has a controlling terminal");
    assert_eq!(before.1, g, "G's group is in the foreground");

    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    assert_eq!(tree_of(root), pids);
    assert_eq!(
        tty_of(root),
        before,
        "the root's terminal and foreground group"
    );
    assert_eq!(tty_of(g), before, "G's terminal and foreground group");
    kill(Pid::from_raw(g), Signal::SIGUSR1).expect("signal G");
    let want = format!("G {g} says hello");
    let mut got = String::new();
    wait_until(Duration::from_secs(10), "G's line at the master", || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = master.read(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        got.contains(&want).then_some(())
    });
}

#[test]
fn socketpairs_between_members_keep_their_queues() {
    let Some(ctx) = setup("trees-sockpair") else {
        return;
    };
    let dir = ctx.path("sockpair");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("trees_sockpair"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn_ready(&ctx, cmd, &dir, "the pair is ready");
    let root = tree.root();
    let pids = tree_of(root);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    assert_eq!(tree_of(root), pids);
    for p in &pids {
        kill(Pid::from_raw(*p), Signal::SIGUSR1).expect("signal a member");
    }
    let lines = wait_until(Duration::from_secs(10), "both reports and the ping", || {
        let r = read_lines(&dir.join("report"));
        (r.len() == 3).then_some(r)
    });
    // Both ways: the stream's bytes and each datagram, the empty one included, in order.
    assert!(
        lines.contains(&"P got=from-C|dg1-C|0|dg2-C n=6,5,5".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"C got=from-P|dg1-P|0|dg2-P n=6,5,5".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"C ping".to_string()), "{lines:?}");
}

#[test]
fn tree_goes_into_one_new_pid_namespace_when_a_pid_is_taken() {
    let Some(ctx) = setup("trees-pidns") else {
        return;
    };
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "sleep 1000 & sleep 1000 & wait"]);
    let mut tree = Tree::spawn(&ctx, cmd);
    let root = tree.root();
    wait_until(Duration::from_secs(10), "bash and two sleeps", || {
        (tree_of(root).len() == 3).then_some(())
    });
    tree.rescan();
    let originals = tree_of(root);
    let image = ctx.path("tree.img");
    // The originals run on: every PID of the tree is taken.
    ctx.ferry(&[
        "dump",
        "--tree",
        "--leave-running",
        &root.to_string(),
        "-o",
        image.to_str().expect("utf-8 path"),
    ])
    .assert_ok();
    let before = my_children();
    let out = ctx.ferry(&["restore", image.to_str().expect("utf-8 path")]);
    // Cleanup: the namespace's init (our new child) takes everything in it along.
    let mut copies = Tree {
        pids: my_children().difference(&before).copied().collect(),
    };
    out.assert_ok();
    assert!(out.stderr.contains("namespace"), "{}", out.stderr);
    let printed: Vec<i32> = out
        .stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    copies.pids.extend(printed.iter().copied());
    assert_eq!(printed.len(), 3, "{}", out.stdout);
    // Inside one new namespace each has its original PID, and the same parent.
    let inner = |p: i32| -> Vec<i32> {
        status_field(p, "NSpid")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).expect("pid ns");
    for (copy, orig) in printed.iter().zip(&originals) {
        let nspid = inner(*copy);
        assert_eq!(nspid.len(), 2, "pid {copy}: NSpid {nspid:?}");
        assert_eq!(nspid[1], *orig, "pid {copy}: its PID inside the namespace");
        assert_eq!(ns(*copy), ns(printed[0]), "one namespace for the tree");
        assert_ne!(ns(*copy), ns(*orig), "a new namespace");
    }
    for copy in &printed[1..] {
        assert_eq!(
            ids(*copy).map(|i| i.0),
            Some(printed[0]),
            "pid {copy}: its parent is the restored bash"
        );
    }
    assert!(alive(printed[0]));
}

/// A refusal about a member of the tree names that member, not the root: a child holding an
/// object the engine refuses (a packet socket with a receive ring) makes `dump --tree` fail with the child's PID
/// and the descriptor; the tree runs on untouched.
#[test]
fn a_refused_member_is_named_by_its_own_pid() {
    let Some(ctx) = setup("trees-refused-member") else {
        return;
    };
    let dir = ctx.path("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = r#"
import os, socket, struct, sys, time
d = sys.argv[1]
if os.fork() == 0:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    s.setsockopt(263, 5, struct.pack("IIII", 4096, 1, 2048, 2))  # PACKET_RX_RING
    with open(d + "/fd.tmp", "w") as f:
        f.write(str(s.fileno()))
    os.rename(d + "/fd.tmp", d + "/ready")
time.sleep(1000)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).arg(&dir);
    let tree = Tree::spawn_ready(&ctx, cmd, &dir, "the child holds its packet socket");
    assert_eq!(tree.pids.len(), 2, "python and its child: {:?}", tree.pids);
    let (root, child) = (tree.pids[0], tree.pids[1]);
    let fd = std::fs::read_to_string(dir.join("ready")).expect("read the child's fd");
    let image = ctx.path("tree.img");
    let root_arg = root.to_string();
    let out = ctx.ferry(&[
        "dump",
        "--tree",
        &root_arg,
        "-o",
        image.to_str().expect("utf-8 path"),
    ]);
    out.assert_failed();
    assert!(
        out.stderr
            .contains(&format!("pid {child} (a member of the tree): fd {fd}")),
        "the refusal should name member {child} and its fd {fd}: {}",
        out.stderr
    );
    assert!(!image.exists());
    for p in [root, child] {
        assert!(alive(p), "pid {p} ended");
        assert_eq!(status_field(p, "TracerPid").as_deref(), Some("0"));
    }
}

/// A child's parent-death signal comes back when its parent is restored with it, and fires
/// when that parent dies; a pipe the child shares with its parent keeps the parent as the
/// owner of its I/O signals (another member of the tree).
#[test]
fn parent_death_signal_of_a_member_survives_and_fires() {
    let Some(ctx) = setup("trees-pdeathsig") else {
        return;
    };
    let dir = ctx.path("pdeathsig");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("trees_pdeathsig"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn_ready(&ctx, cmd, &dir, "the child set its parent-death signal");
    let root = tree.root();
    let child: i32 = read_lines(&dir.join("status"))
        .iter()
        .find_map(|l| field(l, "pid")?.parse().ok())
        .expect("the child's ready line");
    let ok = check(&dir, child);
    assert_eq!(field(&ok, "pdeathsig"), Some("12"), "{ok}");

    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    let ok = check(&dir, child);
    assert_eq!(field(&ok, "pdeathsig"), Some("12"), "{ok}");
    assert_eq!(field(&ok, "ppid"), Some(root.to_string().as_str()), "{ok}");
    // The parent dies: the child gets SIGUSR2 from the kernel.
    kill(Pid::from_raw(root), Signal::SIGKILL).expect("kill the root");
    let fired = wait_until(VICTIM_TIMEOUT, "the parent-death signal", || {
        read_lines(&dir.join("status"))
            .into_iter()
            .find(|l| l.starts_with("fired"))
    });
    assert_eq!(field(&fired, "sig"), Some("12"), "{fired}");
}

/// A child its parent stopped (SIGSTOP, stop report taken with WUNTRACED) comes back stopped:
/// state T, writing nothing, and the parent can still continue and stop it again, seeing each
/// through waitpid and its SIGCHLD handler. Before, it came back running.
#[test]
fn a_stopped_member_comes_back_stopped() {
    let Some(ctx) = setup("trees-stopped") else {
        return;
    };
    let dir = ctx.path("stopped");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("proc_stopped_child"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn(&ctx, cmd);
    wait_until(VICTIM_TIMEOUT, "the child stopped", || {
        read_lines(&dir.join("status"))
            .iter()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    tree.rescan();
    let root = tree.root();
    let ok = check(&dir, root);
    let child: i32 = field(&ok, "child").unwrap().parse().unwrap();
    assert_eq!(ferry_tests::proc_state(child), Some('T'));

    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    assert_eq!(ferry_tests::proc_state(child), Some('T'), "the child runs");
    let ok = check(&dir, root);
    assert_eq!(
        field(&ok, "child"),
        Some(child.to_string().as_str()),
        "{ok}"
    );
}

/// Zombies whose parent has a SIGCHLD handler: still zombies with their exit code or signal
/// (waitid WNOWAIT), and the handler does not run again after the restore.
#[test]
fn zombies_of_a_parent_with_a_sigchld_handler() {
    zombies_with_handler("trees-zombie-handler", &[]);
}

/// The same with SIGCHLD blocked: it stays pending (the restore takes back only the SIGCHLD
/// it causes itself).
#[test]
fn zombies_of_a_parent_with_sigchld_blocked() {
    zombies_with_handler("trees-zombie-blocked", &["blocked"]);
}

fn zombies_with_handler(name: &str, args: &[&str]) {
    let Some(ctx) = setup(name) else {
        return;
    };
    let dir = ctx.path("zombies");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("proc_zombie_handler"));
    cmd.arg(&dir).args(args);
    let mut tree = Tree::spawn(&ctx, cmd);
    wait_until(VICTIM_TIMEOUT, "the zombies", || {
        read_lines(&dir.join("status"))
            .iter()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    tree.rescan();
    let root = tree.root();
    let before = check(&dir, root);
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    std::thread::sleep(Duration::from_millis(100));
    let after = check(&dir, root);
    assert_eq!(after, before);
}

/// pidfds of the process itself, of a live child and of a zombie child come back naming the
/// same processes (fdinfo, signal 0, poll, waitid P_PIDFD). Before, the dump refused "pidfd".
#[test]
fn pidfds_of_itself_a_child_and_a_zombie_survive() {
    let Some(ctx) = setup("trees-pidfd") else {
        return;
    };
    let dir = ctx.path("pidfd");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("proc_pidfd"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn(&ctx, cmd);
    wait_until(VICTIM_TIMEOUT, "the pidfds", || {
        read_lines(&dir.join("status"))
            .iter()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    tree.rescan();
    let root = tree.root();
    let before = check(&dir, root);
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    assert_eq!(check(&dir, root), before);
}

/// KiB of `pid`'s mapping at `addr` shared with other processes (smaps Shared_Clean +
/// Shared_Dirty).
fn shared_kb(pid: i32, addr: u64) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut inside = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((s, _)) = first.split_once('-')
            && !first.ends_with(':')
        {
            inside = u64::from_str_radix(s, 16).ok() == Some(addr);
        } else if inside && (line.starts_with("Shared_Clean:") || line.starts_with("Shared_Dirty:"))
        {
            kb += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kb
}

/// Page frame numbers of the `n` pages of `pid` from `addr` (`/proc/PID/pagemap`, as root;
/// 0 for a page not present).
fn pfns(pid: i32, addr: u64, n: usize) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(format!("/proc/{pid}/pagemap")).expect("open pagemap");
    let mut raw = vec![0u8; n * 8];
    f.read_exact_at(&mut raw, addr / 4096 * 8)
        .expect("read pagemap");
    raw.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .map(|e| {
            if e & (1 << 63) != 0 {
                e & ((1 << 55) - 1)
            } else {
                0
            }
        })
        .collect()
}

/// Memory shared copy-on-write between a parent and its child after fork is shared again after
/// the restore (the same page frames in both, smaps Shared_* of both), and copy-on-write still
/// works: the parent's write after the restore is not seen by the child. Before, each came
/// back with its own copy (the restore warned, nothing was shared).
#[test]
fn copy_on_write_sharing_survives_the_restore() {
    let Some(ctx) = setup("trees-cow") else {
        return;
    };
    let dir = ctx.path("cow");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("proc_cow"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn(&ctx, cmd);
    wait_until(VICTIM_TIMEOUT, "the child", || {
        read_lines(&dir.join("status"))
            .iter()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    tree.rescan();
    let root = tree.root();
    let child = *tree.pids.get(1).expect("the child");
    let ok = check(&dir, root);
    let addr = u64::from_str_radix(field(&ok, "cow").unwrap(), 16).unwrap();
    const PAGES: usize = 2048;
    const KB: u64 = 8 << 10;
    assert!(shared_kb(root, addr) >= KB, "not shared before the dump");
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    let out = tree.restore(&ctx, &image, root);
    assert!(
        !out.stderr.contains("comes back as private copies"),
        "{}",
        out.stderr
    );
    assert_eq!(check(&dir, root), ok);
    let child_ok = check(&dir, child);
    assert!(child_ok.starts_with("ok child"), "{child_ok}");
    for pid in [root, child] {
        assert!(
            shared_kb(pid, addr) >= KB,
            "pid {pid}: {} KiB of the {KB} KiB area shared after the restore",
            shared_kb(pid, addr)
        );
    }
    let (a, b) = (pfns(root, addr, PAGES), pfns(child, addr, PAGES));
    let same = a.iter().zip(&b).filter(|(x, y)| **x != 0 && x == y).count();
    assert_eq!(same, PAGES, "pages with the same frame in parent and child");

    // Copy-on-write still: the parent writes its first page, the child keeps the old one.
    let before = read_lines(&dir.join("status")).len();
    kill(Pid::from_raw(root), Signal::SIGUSR2).expect("signal the parent");
    let wrote = wait_until(VICTIM_TIMEOUT, "the parent's write", || {
        read_lines(&dir.join("status"))
            .into_iter()
            .skip(before)
            .find(|l| l.starts_with("ok wrote"))
    });
    assert_ne!(field(&wrote, "sum"), field(&ok, "sum"), "{wrote}");
    assert_eq!(
        check(&dir, child),
        child_ok,
        "the child saw the parent's write"
    );
    let (a, b) = (pfns(root, addr, 1), pfns(child, addr, 1));
    assert_ne!(a, b, "the written page is still one frame");
    assert_eq!(shared_kb(child, addr), KB - 4);
}

/// A child's descriptors shared with its parent come back with their close-on-exec flag when
/// the copy lands at its own number (its stdout and stderr one description, as after `2>&1`):
/// pidfd_getfd sets the flag, which the restore must clear. Before, the checker refused the
/// restore (fds[3].cloexec: image false, restored true).
#[test]
fn shared_descriptors_keep_their_close_on_exec_flag() {
    let Some(ctx) = setup("trees-cloexec") else {
        return;
    };
    let dir = ctx.path("cloexec");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = File::create(ctx.path("tree.out")).expect("create the output file");
    let err = out.try_clone().expect("dup the output file");
    let child = Command::new(workload("proc_cow"))
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the victim");
    let mut tree = Tree {
        pids: vec![i32::try_from(child.id()).expect("pid fits i32")],
    };
    drop(child);
    wait_until(VICTIM_TIMEOUT, "the child", || {
        read_lines(&dir.join("status"))
            .iter()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    tree.rescan();
    let root = tree.root();
    let ok = check(&dir, root);
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    assert_eq!(check(&dir, root), ok);
}

/// A memfd whose only descriptor a child holds, mapped shared by its parent: one object
/// after the restore (the child's pwrite shows in the parent's mapping).
#[test]
fn memfd_held_by_a_child_stays_one_object() {
    let Some(ctx) = setup("trees-memfd-child") else {
        return;
    };
    let dir = ctx.path("memfd");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut cmd = Command::new(workload("proc_memfd_child"));
    cmd.arg(&dir);
    let mut tree = Tree::spawn(&ctx, cmd);
    wait_until(VICTIM_TIMEOUT, "the child", || {
        read_lines(&dir.join("status"))
            .iter()
            .any(|l| l.starts_with("ready"))
            .then_some(())
    });
    tree.rescan();
    let root = tree.root();
    check(&dir, root);
    let image = ctx.path("tree.img");
    tree.dump(&ctx, &image);
    tree.restore(&ctx, &image, root);
    let ok = check(&dir, root);
    assert_eq!(field(&ok, "round"), Some("2"), "{ok}");
}

/// A child made with clone(CLONE_FILES) or clone(CLONE_FS) (not a thread) shares its
/// descriptor table or its working directory and umask with its parent again after a tree
/// restore: the child's open() shows in the parent's table, its chdir() and umask() in the
/// parent's. Before, the dump refused the tree ("shares its file descriptor table with its
/// child").
#[test]
fn descriptor_table_and_fs_context_shared_with_a_child_stay_shared() {
    let Some(ctx) = setup("trees-clone-shared") else {
        return;
    };
    for kind in ["files", "fs"] {
        let dir = ctx.path(&format!("clone-{kind}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut cmd = Command::new(workload("proc_clone_files"));
        cmd.arg(&dir).arg(kind);
        let mut tree = Tree::spawn(&ctx, cmd);
        wait_until(VICTIM_TIMEOUT, "the child", || {
            read_lines(&dir.join("status"))
                .iter()
                .any(|l| l.starts_with("ready"))
                .then_some(())
        });
        tree.rescan();
        let root = tree.root();
        assert_eq!(tree.pids.len(), 2, "{kind}: {:?}", tree.pids);
        let ok = check(&dir, root);
        let image = ctx.path(&format!("clone-{kind}.img"));
        tree.dump(&ctx, &image);
        tree.restore(&ctx, &image, root);
        // Twice: the child changes directory and umask one way, then back.
        assert_eq!(check(&dir, root), ok, "{kind}");
        assert_eq!(check(&dir, root), ok, "{kind}");
    }
}
