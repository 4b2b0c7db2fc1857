//! What the engine does not support yet is refused before anything is written, naming it, and
//! the process carries on unharmed and unfrozen.

use std::time::Duration;

use ferry_tests::{Victim, alive, field, image_path, proc_state, setup, status_field};

/// Starts `refuse MODE`, tries to dump it, and checks the refusal names all of `must_name`.
fn refused(mode: &str, must_name: &[&str]) {
    let Some(ctx) = setup(&format!("refuse-{mode}")) else {
        return;
    };
    let v = Victim::c(&ctx, "refuse", &[mode]);
    let fd = v
        .status_lines()
        .iter()
        .find_map(|l| field(l, "fd").map(str::to_owned));
    let tick = v.wait_tick_beyond(2);
    let img = image_path(&ctx, mode);
    let pid = v.pid.to_string();
    let out = ctx.ferry(&[
        "dump".as_ref(),
        pid.as_ref(),
        "-o".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_failed();
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("not supported"),
        "refusal should say `not supported`: {}",
        out.stderr
    );
    for word in must_name {
        assert!(
            err.contains(word),
            "refusal should name {word:?}: {}",
            out.stderr
        );
    }
    if let Some(fd) = fd {
        assert!(
            err.contains(&format!("fd {fd}")),
            "refusal should name fd {fd}: {}",
            out.stderr
        );
    }
    assert!(!img.exists(), "a refused dump left an image behind");
    assert!(alive(v.pid), "a refused dump ended the process");
    // Not left stopped or traced, and still counting.
    for _ in 0..20 {
        let state = proc_state(v.pid);
        assert!(
            !matches!(state, Some('t' | 'T')),
            "the process was left stopped: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    v.assert_running_free();
    assert_eq!(status_field(v.pid, "TracerPid").as_deref(), Some("0"));
    v.wait_tick_beyond(tick + 3);
    v.check();
    v.assert_ticks_continuous();
}

#[test]
fn refuses_packet_socket() {
    refused("packet", &["packet socket"]);
}

/// A dnotify watch (`F_NOTIFY`) is not shown by the kernel anywhere (not in fdinfo): the
/// directory descriptor's I/O signal owner, which `F_NOTIFY` sets, gives it away, and the dump
/// refuses it by name (it was silently dropped).
#[test]
fn refuses_a_dnotify_watch() {
    refused("dnotify", &["dnotify", "f_notify"]);
}

/// A Linux AIO context (`io_setup`) is carried, but not the requests in flight on it, which the
/// kernel shows nowhere: the dump sees completions land in the ring while the process is
/// frozen (polls on timerfds expiring every 5 ms) and refuses, naming the context.
#[test]
fn refuses_an_aio_context_with_requests_in_flight() {
    refused("aio", &["aio context", "io_setup", "requests in flight"]);
}

/// A sealed VMA (`mseal`) cannot be mapped again as it was (nor unmapped by the restore):
/// refused at dump, naming the VMA and the flag.
#[test]
fn refuses_a_sealed_mapping() {
    refused("mseal", &["vma 0x", "sealed", "vmflags sl"]);
}

/// An image path that exists and is not a regular file (a directory, a FIFO, a device node) is
/// refused before anything is frozen, naming the path and what is there; it is left as it was
/// (`ferry dump PID -o /dev/null` once renamed the image over the device node).
#[test]
fn refuses_an_image_path_that_is_not_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let Some(ctx) = setup("refuse-output") else {
        return;
    };
    let v = Victim::c(&ctx, "counter", &[]);
    let tick = v.wait_tick_beyond(1);
    let dir = ctx.path("a-directory");
    std::fs::create_dir(&dir).expect("mkdir");
    let fifo = ctx.path("a-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // A node of the null device in the test's own directory: harmless if it were replaced.
    let null = ctx.path("a-null-device");
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    let link = ctx.path("a-link-to-the-device");
    std::os::unix::fs::symlink(&null, &link).expect("symlink");
    let pid = v.pid.to_string();
    for (path, kind) in [
        (&dir, "a directory"),
        (&fifo, "a FIFO"),
        (&null, "a character device"),
        (&link, "a character device"),
    ] {
        let out = ctx.ferry(&[
            "dump".as_ref(),
            pid.as_ref(),
            "-o".as_ref(),
            path.as_os_str(),
        ]);
        out.assert_failed();
        assert!(
            out.stderr.contains(&path.display().to_string()) && out.stderr.contains(kind),
            "the refusal should name {} and say it is {kind}: {}",
            path.display(),
            out.stderr
        );
        assert!(alive(v.pid), "a refused dump ended the process");
    }
    assert!(std::fs::metadata(&dir).unwrap().is_dir());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(
        std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(status_field(v.pid, "TracerPid").as_deref(), Some("0"));
    v.wait_tick_beyond(tick + 3);
    v.check();
    v.assert_ticks_continuous();
}

/// The init of a PID namespace, dumped by its outer PID without `--tree`, is refused: its end
/// would make the kernel kill every process of the namespace. It and its children run on.
#[test]
fn refuses_the_init_of_a_pid_namespace_without_tree() {
    let Some(ctx) = setup("refuse-ns-init") else {
        return;
    };
    // unshare forks the namespace's init (bash, pid 1 inside), which starts two children.
    let unshare = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "bash",
            "-c",
            "sleep 1000 & sleep 1000 & wait",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start unshare");
    let unshare_pid = i32::try_from(unshare.id()).expect("pid");
    // Reaped by PID in the guard.
    drop(unshare);
    struct Guard(Vec<i32>);
    impl Drop for Guard {
        fn drop(&mut self) {
            for &pid in self.0.iter().rev() {
                ferry_tests::kill_and_reap(pid);
            }
        }
    }
    let mut guard = Guard(vec![unshare_pid]);
    let children_of = |pid: i32| -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    let init = ferry_tests::wait_until(Duration::from_secs(10), "the namespace's init", || {
        children_of(unshare_pid).first().copied()
    });
    guard.0.push(init);
    let sleepers =
        ferry_tests::wait_until(Duration::from_secs(10), "the init's two children", || {
            let c = children_of(init);
            (c.len() == 2).then_some(c)
        });
    assert_eq!(
        status_field(init, "NSpid")
            .and_then(|s| s.split_whitespace().last().map(str::to_owned))
            .as_deref(),
        Some("1")
    );
    let img = image_path(&ctx, "ns-init");
    let pid = init.to_string();
    let out = ctx.ferry(&[
        "dump".as_ref(),
        pid.as_ref(),
        "-o".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_failed();
    assert!(
        out.stderr.contains("init of a PID namespace") && out.stderr.contains("--tree"),
        "the refusal should say why and point to --tree: {}",
        out.stderr
    );
    assert!(!img.exists(), "a refused dump left an image behind");
    for p in std::iter::once(init).chain(sleepers) {
        assert!(alive(p), "pid {p} of the namespace ended");
        assert!(
            !matches!(proc_state(p), Some('t' | 'T' | 'Z')),
            "pid {p} was left stopped or ended"
        );
        assert_eq!(status_field(p, "TracerPid").as_deref(), Some("0"));
    }
}

/// A process another tracer holds (a debugger, strace) cannot be seized: the refusal names the
/// tracer instead of a bare `EPERM`.
#[test]
fn a_traced_process_names_its_tracer() {
    let Some(ctx) = setup("refuse-traced") else {
        return;
    };
    let v = Victim::c(&ctx, "nanosleep", &[]);
    let pid = nix::unistd::Pid::from_raw(v.pid);
    // This thread becomes its tracer (it stays running: nothing interrupts it).
    nix::sys::ptrace::seize(pid, nix::sys::ptrace::Options::empty()).expect("seize the victim");
    let me = nix::unistd::gettid();
    let img = image_path(&ctx, "traced");
    let out = ctx.ferry(&[
        "dump".as_ref(),
        v.pid.to_string().as_ref(),
        "-o".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_failed();
    assert!(
        out.stderr.contains(&format!("traced by pid {me}")),
        "the refusal should name the tracer {me}: {}",
        out.stderr
    );
    assert!(alive(v.pid), "the victim died");
}

/// ferry's log lines carry no colour codes when stderr is not a terminal.
#[test]
fn no_colour_codes_off_a_terminal() {
    let Some(ctx) = setup("refuse-colour") else {
        return;
    };
    let v = Victim::c(&ctx, "nanosleep", &[]);
    let img = image_path(&ctx, "colour");
    let out = std::process::Command::new(ferry_tests::ferry_bin())
        .args(["dump", &v.pid.to_string(), "--leave-running", "-o"])
        .arg(&img)
        .env("FERRY_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ferry dump");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry dump failed: {stderr}");
    assert!(stderr.contains("DEBUG"), "no debug log at all: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a piped stderr: {stderr:?}"
    );
}

/// A process killed while it is dumped: the error says it died, not which read failed.
#[test]
fn a_process_killed_mid_dump_is_said_to_have_died() {
    let Some(ctx) = setup("refuse-died") else {
        return;
    };
    // Big enough that the dump takes a while after the freeze.
    let v = Victim::c(&ctx, "migrate", &["256"]);
    let img = image_path(&ctx, "died");
    let ferry = std::process::Command::new(ferry_tests::ferry_bin())
        .args(["dump", &v.pid.to_string(), "-o"])
        .arg(&img)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ferry dump");
    // Frozen: the victim is in a tracing stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = proc_state(v.pid);
        if state == Some('t') {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the victim was never frozen ({state:?})"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(v.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the victim");
    let out = ferry.wait_with_output().expect("wait for ferry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the dump succeeded: {stderr}");
    assert!(
        stderr.contains(&format!(
            "pid {} died during the dump (killed by SIGKILL)",
            v.pid
        )),
        "the error should say the process died: {stderr}"
    );
    assert!(
        !stderr.contains("fill whole buffer") && !stderr.contains("registers back"),
        "{stderr}"
    );
    assert!(!img.exists(), "an image was left behind");
}

/// A process in its own IPC namespace (`unshare(CLONE_NEWIPC)`) holding SysV objects and a
/// POSIX message queue that no descriptor holds: the namespace is carried, its POSIX queues
/// are not, so the dump refuses, naming the queue.
#[test]
fn refuses_a_posix_message_queue_of_a_private_ipc_namespace() {
    refused(
        "ipc-ns",
        &[
            "posix message queue /ferry-ipcns-",
            "in the private ipc namespace of pid",
        ],
    );
}

/// A POSIX message queue descriptor (its name unlinked) is refused, naming it, instead of
/// failing on a read of its contents (or, with its name still there, being opened again as a
/// file of that name at `/`).
#[test]
fn refuses_a_posix_message_queue() {
    refused("mqueue", &["a posix message queue (/ferry-refuse-"]);
}

/// Removes a SysV semaphore set of the host's namespace when dropped.
struct SemSet(i32);

impl Drop for SemSet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ipcrm")
            .args(["-s", &self.0.to_string()])
            .status();
    }
}

/// A `SEM_UNDO` adjustment on a semaphore set of the host's IPC namespace stays with the set
/// on this host: refused by name, and the process runs on. A process whose adjustments went
/// back to 0 (and which has an undo list only because it has a second thread) is dumped and
/// restored.
#[test]
fn refuses_a_sem_undo_adjustment_in_the_host_namespace_but_not_an_empty_one() {
    let Some(ctx) = setup("refuse-sem-undo-host") else {
        return;
    };
    for mode in ["sem-undo-host", "sem-undo-host-zero"] {
        let mut v = Victim::c(&ctx, "refuse", &[mode]);
        let id: i32 = v
            .status_lines()
            .iter()
            .find_map(|l| field(l, "semid").map(str::to_owned))
            .expect("semid reported")
            .parse()
            .expect("semid");
        let _set = SemSet(id);
        v.wait_tick_beyond(2);
        let img = image_path(&ctx, mode);
        if mode == "sem-undo-host" {
            let pid = v.pid.to_string();
            let out = ctx.ferry(&["dump", &pid, "-o", img.to_str().unwrap()]);
            out.assert_failed();
            assert!(
                out.stderr.contains(&format!(
                    "semaphore undo adjustments (semop with SEM_UNDO) on semaphore set {id}"
                )) && out.stderr.contains("[0, -1]"),
                "{}",
                out.stderr
            );
            assert!(alive(v.pid), "a refused dump ended the process");
            v.check();
        } else {
            v.dump(&ctx, &img, &[]);
            v.restore(&ctx, &img, &[]);
            v.check();
        }
    }
}
