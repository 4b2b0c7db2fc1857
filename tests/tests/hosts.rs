//! The test hosts themselves (`xtask hosts up/down` through `Hosts`): namespaces, addresses,
//! reachability, private mounts, cutting a link, and that nothing is left after teardown.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ferry_tests::hosts::{BRIDGE, Hosts, ROOT, xtask_bin};
use ferry_tests::{alive, require_root, skip, status_field, target_dir};

/// A TCP server inside a host: answers `hi` to every connection.
const SERVER: &str = "import socket,sys\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n\
print('ready', flush=True)\n\
while True:\n    c,_=s.accept(); c.sendall(b'hi'); c.close()\n";

/// A TCP client: prints what the server sent; fails if it cannot connect within 2 s.
const CLIENT: &str = "import socket,sys\n\
c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n\
print(c.recv(16).decode())\n";

/// Whether host `from` gets `hi` from the server at `addr:port`.
fn connects(hosts: &Hosts, from: u32, addr: &str, port: u16) -> bool {
    let out = hosts
        .run(from, &["python3", "-c", CLIENT, addr, &port.to_string()])
        .expect("run the client");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "hi"
}

/// The network namespace of PID, as `net:[INODE]`.
fn netns(pid: i32) -> String {
    fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/net: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// PIDs of the processes in any of the network namespaces `nss`.
fn processes_in(nss: &[String]) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net"))
            && nss.contains(&ns.to_string_lossy().into_owned())
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn hosts_are_separate_machines_on_one_link() {
    if !require_root() {
        return;
    }
    let hosts = Hosts::up_without_agents(2).expect("bring up 2 hosts");
    let inits = [hosts.init_pid(1), hosts.init_pid(2)];
    let nss: Vec<String> = inits.iter().map(|&pid| netns(pid)).collect();
    assert_ne!(nss[0], nss[1], "the hosts share a network namespace");
    assert_ne!(
        nss[0],
        netns(i32::try_from(std::process::id()).unwrap()),
        "h1 is in our network namespace"
    );

    // A second `up` while hosts are up is refused, and changes nothing.
    let again = Command::new(xtask_bin())
        .args(["hosts", "up", "1", "--no-agents", "--no-build"])
        .output()
        .expect("run xtask");
    assert!(!again.status.success(), "a second `hosts up` succeeded");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));

    for n in 1..=2 {
        let name = hosts.run_ok(n, &["hostname"]).unwrap();
        assert_eq!(name.trim(), format!("h{n}"));
        let addrs = hosts
            .run_ok(n, &["ip", "-4", "-o", "addr", "show"])
            .unwrap();
        assert!(
            addrs.contains(&format!("inet {}/24", Hosts::addr(n))),
            "h{n} lacks its address: {addrs}"
        );
        assert!(addrs.contains("inet 127.0.0.1/8"), "h{n}'s lo: {addrs}");
        // The host's PID namespace is new: its PID 1 is the init, and PIDs start small.
        let pid: u32 = hosts
            .run_ok(n, &["sh", "-c", "echo $$"])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(pid < 100, "a shell in h{n} got pid {pid}");
        let init = hosts.run_ok(n, &["cat", "/proc/1/cmdline"]).unwrap();
        assert!(init.contains("host-init"), "h{n}'s PID 1 is {init:?}");
        assert_eq!(
            status_field(inits[n as usize - 1], "NSpid").as_deref(),
            Some(format!("{}\t1", inits[n as usize - 1]).as_str())
        );
        // The default socket path leads to the host's own socket.
        let link = hosts
            .run_ok(n, &["readlink", "/run/ferry/ferryd.sock"])
            .unwrap();
        assert_eq!(Path::new(link.trim()), hosts.socket(n));
    }

    // Private directories: a file only h1 has.
    hosts
        .run_ok(1, &["sh", "-c", "echo one > /srv/ferry-host/only-h1"])
        .unwrap();
    hosts
        .run_ok(1, &["sh", "-c", "echo rec > /var/lib/ferry/only-h1"])
        .unwrap();
    assert_eq!(
        hosts
            .run_ok(1, &["cat", "/srv/ferry-host/only-h1"])
            .unwrap()
            .trim(),
        "one"
    );
    for path in ["/srv/ferry-host/only-h1", "/var/lib/ferry/only-h1"] {
        assert!(
            !hosts
                .run(2, &["test", "-e", path])
                .unwrap()
                .status
                .success(),
            "h2 sees h1's {path}"
        );
        assert!(!Path::new(path).exists(), "the machine sees h1's {path}");
    }
    assert!(hosts.state_dir(1).join("only-h1").is_file());
    // The rest of the file system is shared.
    let ours = fs::read_to_string("/etc/os-release").unwrap();
    assert_eq!(hosts.run_ok(2, &["cat", "/etc/os-release"]).unwrap(), ours);

    // Host 1 reaches a server inside host 2.
    let port = 9000;
    let addr2 = Hosts::addr(2).to_string();
    let mut server = hosts
        .spawn(2, &["python3", "-c", SERVER, &addr2, &port.to_string()])
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "ready");
    let server_pid = Hosts::inner_pid(&server).unwrap();
    assert_eq!(netns(server_pid), nss[1]);
    assert!(connects(&hosts, 1, &addr2, port), "h1 cannot reach h2");
    // The machine itself has no address on the bridge: only the hosts reach each other.
    let bridge = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", BRIDGE])
        .output()
        .unwrap();
    assert!(bridge.status.success());
    assert!(
        !String::from_utf8_lossy(&bridge.stdout).contains("inet "),
        "the bridge has an address: {}",
        String::from_utf8_lossy(&bridge.stdout)
    );

    // Cutting h2's link cuts the connection; bringing it back restores it.
    hosts.link_down(2).unwrap();
    assert!(
        !connects(&hosts, 1, &addr2, port),
        "h1 reaches h2 with h2's link down"
    );
    hosts.link_up(2).unwrap();
    let start = Instant::now();
    while !connects(&hosts, 1, &addr2, port) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "h1 does not reach h2 again after link_up"
        );
        sleep(Duration::from_millis(100));
    }

    drop(hosts);
    // The server died with its host; its nsenter ends with it.
    let status = server.wait().unwrap();
    assert!(!status.success(), "the server ended well: {status}");
    for pid in inits.iter().chain([&server_pid]) {
        assert!(!alive(*pid), "pid {pid} outlived the hosts");
    }
    let left = processes_in(&nss);
    assert!(
        left.is_empty(),
        "processes left in the hosts' namespaces: {left:?}"
    );
    for link in [Hosts::veth(1), Hosts::veth(2), BRIDGE.to_owned()] {
        assert!(
            !Path::new("/sys/class/net").join(&link).exists(),
            "{link} is left"
        );
    }
    assert!(!Path::new(ROOT).exists(), "{ROOT} is left");
}

/// True when the ferryd binary is the placeholder that exits at once.
fn ferryd_is_placeholder() -> bool {
    let ferryd = match std::env::var_os("FERRYD_BIN") {
        Some(p) if !p.is_empty() => p.into(),
        _ => target_dir().join("debug").join("ferryd"),
    };
    Command::new(ferryd)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("not built yet"))
}

#[test]
fn each_host_runs_a_ferryd_that_can_die_alone() {
    if !require_root() {
        return;
    }
    if ferryd_is_placeholder() {
        skip("ferryd is still a placeholder");
        return;
    }
    let mut hosts = Hosts::up(2).expect("bring up 2 hosts with ferryd");
    for n in 1..=2 {
        UnixStream::connect(hosts.socket(n))
            .unwrap_or_else(|e| panic!("h{n}'s socket: {e}; log:\n{}", hosts.ferryd_log(n)));
        let ferryd = hosts.ferryd_pid(n).unwrap();
        assert_eq!(netns(ferryd), netns(hosts.init_pid(n)));
        let nspid = status_field(ferryd, "NSpid").unwrap();
        let inner: i32 = nspid.split_whitespace().last().unwrap().parse().unwrap();
        assert!(inner > 1, "ferryd is PID {inner} in h{n}");
        for tls in ["ca.pem", &format!("h{n}.pem"), &format!("h{n}.key")] {
            assert!(hosts.tls_dir().join(tls).is_file(), "no {tls}");
        }
    }
    // h1 reaches h2's peer port.
    let out = hosts
        .run(
            1,
            &[
                "python3",
                "-c",
                "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)",
                &Hosts::addr(2).to_string(),
                "7411",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "h1 cannot connect to h2's ferryd: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Killing ferryd leaves the host and its processes.
    let mut sleeper = hosts.spawn(1, &["sleep", "600"]).unwrap();
    let sleeper_pid = Hosts::inner_pid(&sleeper).unwrap();
    let old = hosts.ferryd_pid(1).unwrap();
    hosts.kill_ferryd(1).unwrap();
    assert!(!alive(old));
    assert!(alive(hosts.init_pid(1)));
    assert!(alive(sleeper_pid), "the host's process died with ferryd");
    let refused = UnixStream::connect(hosts.socket(1)).err();
    assert!(
        refused.is_some(),
        "the killed ferryd still accepts on its socket"
    );

    let new = hosts.start_ferryd(1, &[("FERRY_TEST_MARK", "1")]).unwrap();
    assert_ne!(new, old);
    UnixStream::connect(hosts.socket(1)).expect("the restarted ferryd's socket");
    let environ = fs::read(format!("/proc/{new}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|kv| kv == b"FERRY_TEST_MARK=1"),
        "start_ferryd's environment did not reach ferryd"
    );

    drop(hosts);
    let _ = sleeper.wait();
    assert!(!alive(sleeper_pid));
    assert!(!alive(new));
    assert!(!Path::new(ROOT).exists());
}
