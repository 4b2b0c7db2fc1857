//! The simulation, small: the invariants hold, a failure becomes known, and the two-copies
//! check catches a take-over that ignores the leases.

use super::{SimConfig, SimError, run};

fn small(seed: u64) -> SimConfig {
    SimConfig {
        members: 20,
        seconds: 160,
        seed,
        kills: 3,
        ..SimConfig::default()
    }
}

#[test]
fn small_cluster_keeps_the_invariants_and_learns_of_failures() {
    let cfg = small(7);
    let report = match run(&cfg) {
        Ok(r) => r,
        Err(e) => panic!("simulation failed: {e}"),
    };
    println!("{report}");
    assert_eq!(report.kills, 3);
    let known = report.failure_known.expect("no kill became known by all");
    assert_eq!(report.failures_unknown, 0, "{report}");
    // Probe period 1 s, suspect timeout 3 s: known by all well within 20 s.
    assert!(known.max < 20.0 && known.min >= 3.0, "{report}");
    assert!(report.joined_s.is_some(), "never joined: {report}");
    assert!(report.healed_s.is_some(), "never healed: {report}");
    assert!(report.gossip_bytes_per_member_s > 0.0);
    assert!(report.migrations > 0, "the policy moved nothing: {report}");
    assert!(report.takeovers > 0, "no take-over: {report}");
    // No copy is discarded unless a copy of a higher epoch ran (a failed take-over's
    // tentative grants never make the old holder's copy stale).
    assert_eq!(report.lost_by_fencing, 0, "{report}");
    assert_eq!(report.oscillated, 0, "{report}");
    assert!(report.checks >= 1600);
}

#[test]
fn same_seed_same_run() {
    let a = run(&small(3)).expect("run a").to_string();
    let b = run(&small(3)).expect("run b").to_string();
    assert_eq!(a, b);
}

#[test]
fn takeover_without_leases_is_caught() {
    let cfg = SimConfig {
        unsafe_takeover: true,
        ..small(7)
    };
    match run(&cfg) {
        Err(SimError::Violation(v)) => {
            let msg = v.to_string();
            assert!(msg.starts_with("two live copies of p"), "{msg}");
            assert!(v.copies.len() >= 2);
        }
        Ok(r) => panic!("two copies not caught:\n{r}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn bad_knobs_are_refused_by_name() {
    let e = run(&SimConfig {
        members: 2,
        ..SimConfig::default()
    })
    .expect_err("2 members");
    assert!(e.to_string().contains("--members 2"), "{e}");
    let e = run(&SimConfig {
        seconds: 10,
        ..SimConfig::default()
    })
    .expect_err("10 s");
    assert!(e.to_string().contains("--seconds 10"), "{e}");
}
