//! `ferry ps` and the client-away freeze (issue 12, item 4; docs/relay.md, "When the client
//! goes away"): the status of a copy its host froze because its client is away, and the
//! processes a host runs for a home that does not answer (shown by `ps` on the host where
//! they run while their home is unreachable: the home's registry is out of reach).

use ferry_proto::v1::ManagedProcess;

use crate::node::NodeRef;

/// The status `ps` shows for a live process: `frozen (client away)` when it is stopped and
/// its host's relay stopped it, `frozen` when it is stopped otherwise, else `running` (also
/// when someone continued a copy the relay had stopped).
pub fn status(frozen: bool, away: bool) -> &'static str {
    match (frozen, away) {
        (true, true) => "frozen (client away)",
        (true, false) => "frozen",
        (false, _) => "running",
    }
}

/// The processes this host runs for the homes in `homes` (peers that did not answer) that
/// `uid` may see (root: all), as `ps` shows them from here.
pub fn hosted_for(node: &NodeRef, uid: u32, root: bool, homes: &[String]) -> Vec<ManagedProcess> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    node.managed
        .hosted_list()
        .into_iter()
        .filter(|h| homes.contains(&h.home) && (root || h.owner_uid == uid))
        .filter(|h| super::alive(h.pid, h.start_time))
        .map(|h| {
            let s = super::load::proc_stat(&node.managed, h.pid);
            let command = std::fs::read(format!("/proc/{}/cmdline", h.pid))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            ManagedProcess {
                id: h.id.clone(),
                pid: h.pid,
                host: node.config.name.clone(),
                status: status(s.frozen, node.relays.frozen_away(h.pid)).into(),
                limits: Some(h.limits),
                curr_cpu: s.cpu,
                curr_mem: s.mem,
                uptime_s: (uptime - h.start_time as f64 / hz).max(0.0) as u64,
                command,
                owner_uid: h.owner_uid,
                home: h.home.clone(),
                detached: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::status;

    #[test]
    fn a_copy_frozen_for_its_client_says_so() {
        assert_eq!(status(true, true), "frozen (client away)");
        assert_eq!(status(true, false), "frozen");
        assert_eq!(status(false, false), "running");
        assert_eq!(status(false, true), "running");
    }
}
