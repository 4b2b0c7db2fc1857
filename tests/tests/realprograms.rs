//! Real multi-threaded programs: CPython with threads, a JVM, and `redis-server` with a client
//! whose connection survives (`--tcp-established`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::{Spawn, Victim, field, image_path, setup, skip, wait_until, workload_file};

#[test]
fn cpython_with_threads() {
    let Some(ctx) = setup("pythreads") else {
        return;
    };
    let state = Victim::new_state_dir(&ctx, "pythreads");
    let mut cmd = Command::new("python3");
    cmd.arg(workload_file("pythreads.py")).arg(&state);
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    v.wait_ready();
    let ok = v.check();
    let threads = field(&ok, "threads").map(str::to_owned);
    assert!(
        threads
            .as_deref()
            .is_some_and(|t| t.parse::<u32>().unwrap_or(0) >= 5),
        "{ok}"
    );
    let img = image_path(&ctx, "pythreads");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = v.check();
    assert_eq!(field(&ok, "threads").map(str::to_owned), threads, "{ok}");
    assert_eq!(field(&ok, "pid"), Some(v.orig_pid.to_string().as_str()));
    v.assert_ticks_continuous();
}

/// Asks the JVM victim to check itself through its check file; returns its answer.
fn java_check(v: &Victim) -> String {
    let before = v.status_lines().len();
    std::fs::write(v.state.join("check"), b"").expect("check file");
    wait_until(Duration::from_secs(20), "the JVM to answer", || {
        v.status_lines().get(before).cloned()
    })
}

/// Builds the JVM victim and starts it; `None` (after saying why) without a JDK.
fn start_java(ctx: &ferry_tests::TestCtx) -> Option<Victim> {
    if Command::new("javac").arg("-version").output().is_err() {
        skip("no JDK (javac) on this machine");
        return None;
    }
    let classes = ctx.path("classes");
    let src = workload_file("java/Workers.java");
    let built = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(&src)
        .status()
        .expect("javac");
    assert!(built.success(), "javac failed");
    let state = Victim::new_state_dir(ctx, "java");
    let mut cmd = Command::new("java");
    cmd.args(["-Xmx64m", "-XX:+UseSerialGC", "-cp"])
        .arg(&classes)
        .arg("Workers")
        .arg(&state);
    let v = Victim::spawn(cmd, state, Spawn::default());
    v.wait_ready();
    Some(v)
}

#[test]
fn java_with_threads() {
    let Some(ctx) = setup("java") else {
        return;
    };
    let Some(mut v) = start_java(&ctx) else {
        return;
    };
    let ok = java_check(&v);
    assert!(ok.starts_with("ok"), "{ok}");
    let tasks = std::fs::read_dir(format!("/proc/{}/task", v.pid))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(tasks > 5, "a JVM has many threads, found {tasks}");
    let img = image_path(&ctx, "java");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = java_check(&v);
    assert!(ok.starts_with("ok"), "after restore: {ok}");
    let after = std::fs::read_dir(format!("/proc/{}/task", v.pid))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(after, tasks, "thread count changed");
    v.assert_ticks_continuous();
}

/// Another JVM started between the dump and the restore (`java -version`) removes the dumped
/// JVM's perf-data file (`/tmp/hsperfdata_USER/PID`, mapped shared), its process being gone:
/// the file travels in the image and is made again, so the restore does not fail.
#[test]
fn java_version_between_dump_and_restore() {
    let Some(ctx) = setup("java_version") else {
        return;
    };
    let Some(mut v) = start_java(&ctx) else {
        return;
    };
    let ok = java_check(&v);
    assert!(ok.starts_with("ok"), "{ok}");
    let perf = std::fs::read_to_string(format!("/proc/{}/maps", v.pid))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .nth(5)
                .filter(|p| p.contains("/hsperfdata_"))
                .map(str::to_owned)
        })
        .expect("the JVM maps its perf-data file");
    let img = image_path(&ctx, "java_version");
    v.dump(&ctx, &img, &[]);
    let out = Command::new("java")
        .arg("-version")
        .output()
        .expect("java -version");
    assert!(out.status.success(), "java -version failed");
    assert!(
        !Path::new(&perf).exists(),
        "java -version was expected to clean {perf}"
    );
    v.restore(&ctx, &img, &[]);
    assert!(Path::new(&perf).exists(), "{perf} was not made again");
    let ok = java_check(&v);
    assert!(ok.starts_with("ok"), "after restore: {ok}");
    v.assert_ticks_continuous();
    // The restored JVM's perf data is live again: jstat-like readers see it change.
    let a = std::fs::read(&perf).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let b = std::fs::read(&perf).unwrap();
    assert_ne!(a, b, "the JVM no longer writes {perf}");
}

/// After `jcmd` attached, the JVM listens on `/tmp/.java_pidPID`, bound as
/// `/tmp/.java_pidPID.tmp` and renamed: the socket file is found under its new name at dump
/// and put back there at restore, and `jcmd` attaches to the restored JVM.
#[test]
fn java_after_jcmd_keeps_its_attach_socket() {
    let Some(ctx) = setup("java_jcmd") else {
        return;
    };
    let Some(mut v) = start_java(&ctx) else {
        return;
    };
    let jcmd = |pid: i32| {
        Command::new("jcmd")
            .args([&pid.to_string(), "VM.version"])
            .output()
            .expect("jcmd")
    };
    assert!(jcmd(v.pid).status.success(), "jcmd before the dump");
    let img = image_path(&ctx, "java_jcmd");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    let ok = java_check(&v);
    assert!(ok.starts_with("ok"), "after restore: {ok}");
    let out = jcmd(v.pid);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("JDK"),
        "jcmd after the restore: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !Path::new(&format!("/tmp/.java_pid{}.tmp", v.pid)).exists(),
        "the bound name was left behind"
    );
    v.assert_ticks_continuous();
    // A JVM killed leaves its attach socket file behind.
    v.kill();
    let _ = std::fs::remove_file(format!("/tmp/.java_pid{}", v.pid));
}

/// One RESP command on `conn`; returns the reply's first line.
fn redis(conn: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut()
        .write_all(req.as_bytes())
        .expect("send to redis");
    read_reply(conn)
}

/// One RESP reply: simple lines as they are, bulk strings as their contents, arrays as `*N`
/// after reading their elements.
fn read_reply(conn: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    conn.read_line(&mut line).expect("read from redis");
    if let Some(n) = line
        .strip_prefix('*')
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        for _ in 0..n {
            read_reply(conn);
        }
        return line.trim_end().to_owned();
    }
    if let Some(len) = line
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; len + 2];
        conn.read_exact(&mut body).expect("read bulk");
        return String::from_utf8_lossy(&body[..len]).into_owned();
    }
    line.trim_end().to_owned()
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                return BufReader::new(s);
            }
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect to redis on {port}: {e}"),
        }
    }
}

#[test]
fn redis_keeps_its_data_and_its_client() {
    let Some(ctx) = setup("redis") else {
        return;
    };
    if !Path::new("/usr/bin/redis-server").exists() {
        skip("redis-server is not installed (apt-get install redis-server)");
        return;
    }
    let port = 20000 + (std::process::id() % 20000) as u16;
    let state = Victim::new_state_dir(&ctx, "redis");
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--daemonize", "no", "--protected-mode", "no", "--dir"])
    .arg(&state);
    let mut v = Victim::spawn(cmd, state, Spawn::default());
    let mut client = connect(port);
    assert_eq!(redis(&mut client, &["PING"]), "+PONG");
    for i in 0..2000 {
        assert_eq!(
            redis(
                &mut client,
                &["SET", &format!("key:{i}"), &format!("value-{i}")]
            ),
            "+OK"
        );
    }
    assert_eq!(redis(&mut client, &["RPUSH", "list", "a", "b", "c"]), ":3");

    let img = image_path(&ctx, "redis");
    let pid = v.pid.to_string();
    // Without the flag the established connection is refused by name.
    let out = ctx.ferry(&[
        "dump".as_ref(),
        pid.as_ref(),
        "-o".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_failed();
    assert!(
        out.stderr.contains("established TCP connection"),
        "{}",
        out.stderr
    );
    assert_eq!(redis(&mut client, &["GET", "key:7"]), "value-7");

    v.dump(&ctx, &img, &["--tcp-established"]);
    v.restore(&ctx, &img, &[]);
    // The same connection goes on, and the data set is all there.
    assert_eq!(redis(&mut client, &["GET", "key:1999"]), "value-1999");
    assert_eq!(
        redis(&mut client, &["LRANGE", "list", "0", "-1"]).as_str(),
        "*3"
    );
    assert_eq!(redis(&mut client, &["DBSIZE"]), ":2001");
    assert_eq!(redis(&mut client, &["INCR", "counter"]), ":1");
    // And new clients are accepted.
    let mut second = connect(port);
    assert_eq!(redis(&mut second, &["INCR", "counter"]), ":2");
    assert_eq!(redis(&mut second, &["GET", "key:0"]), "value-0");
    assert_eq!(v.pid, v.orig_pid);
}
