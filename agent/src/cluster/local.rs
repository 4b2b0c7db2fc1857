//! `Agent.Hosts` (`ferry hosts`): the view of [`super::Cluster`] as protobuf.

use ferry_proto::v1::{ClusterLoad, ClusterMember, HostsReply};

use super::{MemberLoad, View};
use crate::daemon::NodeRef;

/// The reply of `Agent.Hosts` for `node`.
pub fn hosts(node: &NodeRef) -> HostsReply {
    let (enabled, off_reason) = match node.cluster.status() {
        Ok(()) => (true, String::new()),
        Err(why) => (false, why),
    };
    HostsReply {
        enabled,
        off_reason,
        members: to_proto(&node.cluster.view()),
        bad_datagrams: node.cluster.bad_datagrams(),
    }
}

fn to_proto(view: &View) -> Vec<ClusterMember> {
    view.members
        .iter()
        .map(|m| ClusterMember {
            name: m.name.clone(),
            addr: m.addr.to_string(),
            state: m.state.as_str().to_owned(),
            local: m.local,
            age_seconds: m.age.as_secs_f64(),
            load: m.load.as_ref().map(load_to_proto),
        })
        .collect()
}

/// A [`MemberLoad`] as protobuf.
pub fn load_to_proto(l: &MemberLoad) -> ClusterLoad {
    ClusterLoad {
        seq: l.seq,
        cpus: l.cpus,
        cpu_busy: l.cpu_busy,
        mem_used: l.mem_used,
        mem_total: l.mem_total,
        net_rx_bps: l.net_rx_bps,
        net_tx_bps: l.net_tx_bps,
        managed: l.managed,
        free: l.free,
        xsave_features: l.xsave_features,
        kernel: l.kernel.clone(),
    }
}
