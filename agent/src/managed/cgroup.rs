//! Limits of managed processes, with cgroups: for each of the `cpu` and `memory` controllers,
//! the cgroup v1 hierarchy that has it, else the cgroup v2 hierarchy when it offers it. Each
//! process gets `ferry/ID@HOST` under the hierarchy's root (the host's name in it: hosts that
//! share a kernel, as the test hosts do, keep apart the stub's cgroup and the copy's).
//!
//! | limit | v1 | v2 |
//! |---|---|---|
//! | `--cpu N` | `cpu.cfs_quota_us` = N × `cpu.cfs_period_us` (100 ms) | `cpu.max` = "N×100000 100000" |
//! | `--mem SIZE` | `memory.limit_in_bytes` | `memory.max` |

use std::fs;
use std::path::PathBuf;

use ferry_proto::v1::Limits;

/// The CFS period the CPU limit is expressed in (µs).
const PERIOD_US: u64 = 100_000;

/// The cgroup name of managed process `id` on host `host`.
pub fn name(id: &str, host: &str) -> String {
    format!("{id}@{host}")
}

/// One controller's place: the hierarchy's mount point and whether it is cgroup v2.
#[derive(Debug, Clone)]
struct Place {
    mount: PathBuf,
    v2: bool,
}

/// Where the `cpu` and `memory` controllers are (from `/proc/self/mountinfo`).
fn places() -> [(&'static str, Option<Place>); 2] {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut v2: Option<PathBuf> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split_whitespace().nth(4).unwrap_or_default();
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or_default();
        let _source = r.next();
        let opts = r.next().unwrap_or_default();
        match fstype {
            "cgroup" => v1.push((
                PathBuf::from(mount),
                opts.split(',').map(str::to_string).collect(),
            )),
            "cgroup2" if v2.is_none() => v2 = Some(PathBuf::from(mount)),
            _ => {}
        }
    }
    let v2_has = |c: &str| {
        v2.as_ref().is_some_and(|m| {
            fs::read_to_string(m.join("cgroup.controllers"))
                .is_ok_and(|s| s.split_whitespace().any(|x| x == c))
        })
    };
    ["cpu", "memory"].map(|c| {
        let place = v1
            .iter()
            .find(|(_, opts)| opts.iter().any(|o| o == c))
            .map(|(m, _)| Place {
                mount: m.clone(),
                v2: false,
            })
            .or_else(|| {
                v2_has(c).then(|| Place {
                    mount: v2.clone().unwrap_or_default(),
                    v2: true,
                })
            });
        (c, place)
    })
}

fn write(path: PathBuf, value: &str) -> Result<(), String> {
    fs::write(&path, value).map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

/// Puts process `pid` into cgroup `name` of each controller (made when missing) with
/// `limits` (0: no limit). Fails naming the file that could not be written, or when no
/// hierarchy offers a controller that a limit needs.
pub fn apply(name: &str, pid: i32, limits: &Limits) -> Result<(), String> {
    for (controller, place) in places() {
        let wanted = match controller {
            "cpu" => limits.cpu_millis,
            _ => limits.mem_bytes,
        };
        let Some(place) = place else {
            if wanted != 0 {
                return Err(format!(
                    "this host has no cgroup hierarchy with the {controller} controller"
                ));
            }
            continue;
        };
        let parent = place.mount.join("ferry");
        let dir = parent.join(name);
        // Another agent of this kernel may remove `ferry/` (empty) meanwhile: made again.
        let mut tries = 0;
        loop {
            tries += 1;
            match make(&place, &parent, &dir, controller) {
                Ok(()) => break,
                Err(_) if tries < 3 => continue,
                Err(e) => return Err(e),
            }
        }
        match (controller, place.v2) {
            ("cpu", false) => {
                write(dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                let quota = if wanted == 0 {
                    "-1".to_string()
                } else {
                    (wanted * PERIOD_US / 1000).to_string()
                };
                write(dir.join("cpu.cfs_quota_us"), &quota)?;
            }
            ("cpu", true) => {
                let quota = if wanted == 0 {
                    "max".to_string()
                } else {
                    (wanted * PERIOD_US / 1000).to_string()
                };
                write(dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            }
            (_, false) => {
                let v = if wanted == 0 {
                    "-1".to_string()
                } else {
                    wanted.to_string()
                };
                write(dir.join("memory.limit_in_bytes"), &v)?;
            }
            (_, true) => {
                let v = if wanted == 0 {
                    "max".to_string()
                } else {
                    wanted.to_string()
                };
                write(dir.join("memory.max"), &v)?;
            }
        }
        write(dir.join("cgroup.procs"), &pid.to_string())?;
        // A restore makes the cgroups the process was in on its origin again where they are
        // missing (`ferry/ID@ORIGIN`): now that it left them, they go when empty.
        let id = name.split('@').next().unwrap_or(name);
        if let Ok(dir) = fs::read_dir(&parent) {
            for other in dir.flatten() {
                let n = other.file_name();
                let n = n.to_string_lossy();
                if n != name && n.split('@').next() == Some(id) {
                    let _ = fs::remove_dir(other.path());
                }
            }
        }
    }
    Ok(())
}

/// Makes `ferry/` (with `controller` handed down to its children on v2) and `dir` in it.
fn make(
    place: &Place,
    parent: &std::path::Path,
    dir: &std::path::Path,
    controller: &str,
) -> Result<(), String> {
    if place.v2 {
        fs::create_dir_all(parent).map_err(|e| format!("make {}: {e}", parent.display()))?;
        // The controller must be handed down to the children of the root and of ferry/.
        let _ = write(
            place.mount.join("cgroup.subtree_control"),
            &format!("+{controller}"),
        );
        write(
            parent.join("cgroup.subtree_control"),
            &format!("+{controller}"),
        )?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("make {}: {e}", dir.display()))
}

/// Removes `ferry/` of a hierarchy once it holds no cgroup (it fails, harmlessly, while one
/// is left).
fn remove_parent(place: &Place) {
    let _ = fs::remove_dir(place.mount.join("ferry"));
}

/// Removes cgroup `name` from each hierarchy, and `ferry/` when it is left empty; true when
/// none is left (a cgroup that still holds a process stays).
pub fn remove(name: &str) -> bool {
    let mut all = true;
    for (_, place) in places() {
        let Some(place) = place else { continue };
        let dir = place.mount.join("ferry").join(name);
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => all = false,
        }
        remove_parent(&place);
    }
    all
}

/// Removes the empty cgroups of this host (`ferry/*@HOST`) whose id `known` does not name:
/// left by an agent that stopped before its process ended; then `ferry/` itself when empty.
/// A cgroup that holds a process cannot be removed and stays.
pub fn sweep(host: &str, known: &dyn Fn(&str) -> bool) {
    let suffix = format!("@{host}");
    for (_, place) in places() {
        let Some(place) = place else { continue };
        let Ok(dir) = fs::read_dir(place.mount.join("ferry")) else {
            continue;
        };
        for d in dir.flatten() {
            let n = d.file_name();
            let n = n.to_string_lossy();
            if let Some(id) = n.strip_suffix(&suffix)
                && !known(id)
                && d.path().is_dir()
            {
                let _ = fs::remove_dir(d.path());
            }
        }
        remove_parent(&place);
    }
}
