use super::*;

fn cfg() -> LeaseConfig {
    LeaseConfig {
        duration_ms: 3000,
        max_drift: 0.05,
        renew_every_ms: 500,
    }
}

/// A grantor past its starting quiet time at `t = 10_000`.
fn grantor(me: &str) -> Grantor {
    Grantor::new(cfg(), me, 0)
}

const T: u64 = 10_000;

#[test]
fn majority_of_groups() {
    assert_eq!(majority(1), 1);
    assert_eq!(majority(2), 2);
    assert_eq!(majority(3), 2);
    assert_eq!(majority(4), 3);
    assert_eq!(majority(5), 3);
    assert!(!may_take_over(1, 3));
    assert!(may_take_over(2, 3));
    assert!(!may_take_over(2, 4));
    assert!(may_take_over(3, 4));
    assert!(!may_take_over(0, 0));
}

#[test]
fn config_validation_names_the_value() {
    cfg().validate().unwrap();
    let e = LeaseConfig {
        max_drift: 0.5,
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("max_drift 0.5"), "{e}");
    let e = LeaseConfig {
        renew_every_ms: 2000,
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("renew_every_ms 2000"), "{e}");
    let e = LeaseConfig {
        duration_ms: 5,
        ..cfg()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("duration_ms 5"), "{e}");
    assert_eq!(cfg().holder_span(), 2849);
    assert_eq!(cfg().grantor_span(), 3151);
}

#[test]
fn holder_runs_only_with_a_majority() {
    let mut h = Holder::new(cfg(), "h1");
    h.set_epoch("p", 0);
    let mut g1 = grantor("h1");
    let mut g2 = grantor("h2");
    assert!(!h.may_run("p", 3, T));
    let a = g1.grant("p", "h1", 0, T).unwrap();
    h.record("h1", &a, T);
    assert!(
        !h.may_run("p", 3, T + 1),
        "one grant of three is not a majority"
    );
    let b = g2.grant("p", "h1", 0, T).unwrap();
    h.record("h2", &b, T);
    assert!(h.may_run("p", 3, T + 1));
    // A group of 4 needs 3.
    assert!(!h.may_run("p", 4, T + 1));
    // A grant recorded under another member's name, or for another holder, does not count.
    let mut h2 = Holder::new(cfg(), "h1");
    h2.set_epoch("p", 0);
    h2.record("h3", &a, T);
    h2.record("h1", &a, T);
    assert_eq!(h2.granted_by("p", T), 1);
    let other = Grant {
        holder: "h9".into(),
        ..b.clone()
    };
    h2.record("h2", &other, T);
    assert_eq!(h2.granted_by("p", T), 1);
}

#[test]
fn expiry_has_the_drift_margin_on_both_sides() {
    let mut h = Holder::new(cfg(), "h1");
    h.set_epoch("p", 0);
    let mut g2 = grantor("h2");
    let mut g3 = grantor("h3");
    for g in [&mut g2, &mut g3] {
        let x = g.grant("p", "h1", 0, T).unwrap();
        h.record(&x.member, &x, T);
    }
    // Holder side: earlier than the duration by the drift.
    assert!(h.may_run("p", 3, T + 2848));
    assert!(!h.may_run("p", 3, T + 2849));
    assert_eq!(h.runs_until("p", 3), Some(T + 2849));
    // Grantor side: later than the duration by the drift.
    assert!(!g2.expired("p", T + 3150));
    assert!(g2.expired("p", T + 3151));
    // A take-over at the next epoch is refused until then, granted after.
    let e = g2.grant("p", "h3", 1, T + 3000).unwrap_err();
    assert!(
        matches!(
            e,
            Refused::Held {
                remaining_ms: 151,
                ..
            }
        ),
        "{e:?}"
    );
    g2.grant("p", "h3", 1, T + 3151).unwrap();
}

#[test]
fn epochs_fence_the_stale_holder() {
    let mut g = grantor("h2");
    g.grant_as("p", "h1", 0, true, T).unwrap();
    g.grant("p", "h3", 1, T + 4000).unwrap();
    // The take-over's grant is tentative: the old holder is only held off, not stale.
    let e = g.grant_as("p", "h1", 0, true, T + 4001).unwrap_err();
    assert!(matches!(e, Refused::Held { .. }), "{e:?}");
    assert_eq!(e.stale_epoch(), None);
    // The new holder ran with a majority: its renewal commits epoch 1.
    g.grant_as("p", "h3", 1, true, T + 4300).unwrap();
    // The old holder renewing at its epoch learns the new one, now and after the lease.
    let e = g.grant_as("p", "h1", 0, true, T + 4301).unwrap_err();
    assert_eq!(e.stale_epoch(), Some(1));
    assert!(e.to_string().contains("h3 holds epoch 1"), "{e}");
    let e = g.grant_as("p", "h1", 0, true, T + 20_000).unwrap_err();
    assert_eq!(e.stale_epoch(), Some(1));
    // The same epoch for another holder is stale too: two holders never share an epoch.
    let e = g.grant("p", "h1", 1, T + 9000).unwrap_err();
    assert_eq!(e.stale_epoch(), Some(1));
    // The new holder renews.
    g.grant_as("p", "h3", 1, true, T + 4600).unwrap();
    // A holder's grant at an epoch it does not run at does not count.
    let mut h = Holder::new(cfg(), "h1");
    h.set_epoch("p", 0);
    let x = Grant {
        id: "p".into(),
        holder: "h1".into(),
        epoch: 1,
        member: "h2".into(),
    };
    h.record("h2", &x, T);
    assert_eq!(h.granted_by("p", T), 0);
    // Learning a committed epoch from a peer refuses lower ones without granting.
    let mut g4 = grantor("h4");
    g4.learn("p", "h3", 2);
    assert_eq!(g4.epoch("p"), 2);
    assert!(g4.grant("p", "h1", 1, T).unwrap_err().stale_epoch() == Some(2));
    g4.learn("p", "h1", 1);
    assert_eq!(g4.epoch("p"), 2);
    g4.grant("p", "h3", 2, T).unwrap();
}

#[test]
fn a_candidate_may_not_reuse_an_epoch_given_to_another() {
    let mut g = grantor("h2");
    g.grant_as("p", "h1", 0, true, T).unwrap();
    // h3 tries epoch 1 and fails elsewhere; its grant here expires uncommitted.
    g.grant("p", "h3", 1, T + 4000).unwrap();
    assert_eq!(g.top("p").map(|t| t.holder.as_str()), Some("h3"));
    // h4 may not take epoch 1 too, nor a lower one: it must ask for 2.
    let e = g.grant("p", "h4", 1, T + 8000).unwrap_err();
    assert!(matches!(e, Refused::Superseded { epoch: 1, .. }), "{e:?}");
    assert_eq!(e.stale_epoch(), None);
    assert_eq!(next_epoch(1, "h3", "h4"), 2);
    assert_eq!(next_epoch(1, "h3", "h3"), 1);
    g.grant("p", "h4", 2, T + 8000).unwrap();
    // h3 asking its own epoch again is superseded now, and held while h4's grant lasts.
    let e = g.grant("p", "h3", 1, T + 8001).unwrap_err();
    assert!(matches!(e, Refused::Superseded { .. }), "{e:?}");
}

/// The flaw the 1,000-member simulation found: a take-over that gathers grants at epoch 1
/// from a minority made those members refuse the old holder as stale, and the old holder
/// discarded the only copy. Now the minority's grants are tentative: the old holder keeps
/// its copy (frozen while it lacks a majority), gets the lease back when the tentative grants
/// expire, and runs again; the failed candidate never runs.
#[test]
fn a_failed_takeover_leaves_the_old_holder_its_copy() {
    let mut g1 = grantor("h1");
    let mut g2 = grantor("h2");
    let mut g3 = grantor("h3");
    let mut h1 = Holder::new(cfg(), "h1");
    h1.set_epoch("p", 0);
    // h1 runs at epoch 0 with all three; its renewals commit epoch 0.
    let mut t = T;
    for _ in 0..3 {
        let committed = h1.committed("p", 3, t);
        for g in [&mut g1, &mut g2, &mut g3] {
            let x = g.grant_as("p", "h1", 0, committed, t).unwrap();
            h1.record(&x.member, &x, t);
        }
        t += 500;
    }
    assert!(h1.committed("p", 3, t));
    // h1 is cut from h2 and h3; h2 and h3 are cut from each other too. h3 sees h1 down and,
    // once its own grant expired, grants itself epoch 1; h2 never answers: no majority.
    let cut = t;
    let late = cut + cfg().grantor_span();
    g3.grant("p", "h3", 1, late).unwrap();
    let mut h3 = Holder::new(cfg(), "h3");
    h3.set_epoch("p", 1);
    let x = g3.grant("p", "h3", 1, late).unwrap();
    h3.record("h3", &x, late);
    assert!(!may_take_over(1, 3));
    assert!(!h3.may_run("p", 3, late));
    // Meanwhile h1 renews with itself only: frozen (not a majority), not discarded.
    assert!(!h1.may_run("p", 3, late));
    // The links return. h1 asks h3: held off by the tentative grant, not stale.
    let e = g3.grant_as("p", "h1", 0, true, late + 100).unwrap_err();
    assert!(matches!(e, Refused::Held { epoch: 1, .. }), "{e:?}");
    assert_eq!(e.stale_epoch(), None, "the old copy would be discarded");
    // h2 grants h1 (it never saw epoch 1): h1 has a majority again and thaws.
    let t2 = late + 100;
    for g in [&mut g1, &mut g2] {
        let x = g.grant_as("p", "h1", 0, true, t2).unwrap();
        h1.record(&x.member, &x, t2);
    }
    assert!(h1.may_run("p", 3, t2 + 1));
    // h3's tentative grant expires uncommitted: h3 grants h1 at epoch 0 again.
    let t3 = late + cfg().grantor_span();
    for g in [&mut g1, &mut g2, &mut g3] {
        let x = g.grant_as("p", "h1", 0, true, t3).unwrap();
        h1.record(&x.member, &x, t3);
    }
    assert_eq!(h1.granted_by("p", t3), 3);
    // And h3's candidate can no longer gather epoch 1: h1's grants are unexpired everywhere.
    assert!(matches!(
        g2.grant("p", "h3", 1, t3 + 1).unwrap_err(),
        Refused::Held { .. }
    ));
}

/// After a take-over that committed at epoch 1 (h3 with h2) and was then cut off before h2
/// heard the commit, h2's grant lapses and the old holder h1 runs again at epoch 0 with h2.
/// On heal the higher committed epoch wins: h3's own grantor says h1 is stale (h1 discards),
/// and h3 gets h2 back once h1's grant there expired. At no time do both run.
#[test]
fn after_a_revert_the_higher_committed_epoch_wins_on_heal() {
    let c = cfg();
    let mut g1 = grantor("h1");
    let mut g2 = grantor("h2");
    let mut g3 = grantor("h3");
    let mut h1 = Holder::new(c, "h1");
    let mut h3 = Holder::new(c, "h3");
    h1.set_epoch("p", 0);
    let t = T;
    for g in [&mut g1, &mut g2, &mut g3] {
        let x = g.grant_as("p", "h1", 0, true, t).unwrap();
        h1.record(&x.member, &x, t);
    }
    // h1 | h2 h3: h3 takes over at epoch 1 with h2 and itself.
    let t1 = t + c.grantor_span();
    assert!(!h1.may_run("p", 3, t1));
    h3.set_epoch("p", 1);
    for g in [&mut g2, &mut g3] {
        let x = g.grant("p", "h3", 1, t1).unwrap();
        h3.record(&x.member, &x, t1);
    }
    assert!(h3.may_run("p", 3, t1 + 1));
    // Its first renewal commits at its own grantor only: then h3 is cut from h2 as well, and
    // h2 joins h1.
    let t2 = t1 + 500;
    assert!(h3.committed("p", 3, t2));
    let x = g3.grant_as("p", "h3", 1, true, t2).unwrap();
    h3.record("h3", &x, t2);
    // h3 loses its majority; h2's tentative grant lapses and h1 (committed at 0) gets it.
    let t3 = t1 + c.grantor_span();
    assert!(!h3.may_run("p", 3, t3));
    for g in [&mut g1, &mut g2] {
        let x = g.grant_as("p", "h1", 0, true, t3).unwrap();
        h1.record(&x.member, &x, t3);
    }
    assert!(h1.may_run("p", 3, t3 + 1));
    assert!(!h3.may_run("p", 3, t3 + 1), "two copies");
    // Heal: h1 asks h3, which saw epoch 1 committed: stale, h1 discards.
    let t4 = t3 + 400;
    let e = g3.grant_as("p", "h1", 0, true, t4).unwrap_err();
    assert_eq!(e.stale_epoch(), Some(1));
    h1.forget("p");
    // h3 asks h2: held by h1's grant until it expires there, then granted and committed.
    let e = g2.grant_as("p", "h3", 1, true, t4).unwrap_err();
    assert!(matches!(e, Refused::Held { .. }), "{e:?}");
    let t5 = t3 + c.grantor_span();
    for g in [&mut g2, &mut g3] {
        let x = g.grant_as("p", "h3", 1, true, t5).unwrap();
        h3.record(&x.member, &x, t5);
    }
    assert!(h3.may_run("p", 3, t5 + 1));
    // From now on h2 refuses epoch 0 as stale too.
    assert_eq!(
        g2.grant_as("p", "h1", 0, true, t5 + 10_000)
            .unwrap_err()
            .stale_epoch(),
        Some(1)
    );
}

#[test]
fn a_starting_grantor_grants_nothing_for_its_span() {
    let mut g = Grantor::new(cfg(), "h2", 1000);
    let e = g.grant("p", "h1", 0, 1000 + 3150).unwrap_err();
    assert!(matches!(e, Refused::Starting { .. }), "{e:?}");
    assert!(!g.expired("p", 1000 + 3150));
    assert!(g.expired("p", 1000 + 3151));
    g.grant("p", "h1", 0, 1000 + 3151).unwrap();
}

/// A clock: reads `offset + floor(rate · t)` at real time `t` (ms).
#[derive(Clone, Copy, Debug)]
struct Clock {
    rate: f64,
    offset: u64,
}

impl Clock {
    fn at(self, t: u64) -> u64 {
        self.offset + (self.rate * t as f64).floor() as u64
    }
}

/// Holder h1 renews with h1, h2, h3 every `renew_every` (requests taking `delay` ms each way)
/// until the link is cut at real time `cut`; then h2 and h3 try a take-over every ms. At no
/// real time may h1 run while h2 and h3 have granted the take-over.
fn partition_run(clocks: [Clock; 3], delay: u64, cut: u64) -> (u64, u64) {
    let c = cfg();
    let names = ["h1", "h2", "h3"];
    let mut grantors: Vec<Grantor> = (0..3)
        .map(|i| Grantor::new(c, names[i], clocks[i].at(0)))
        .collect();
    let mut holder = Holder::new(c, "h1");
    holder.set_epoch("p", 0);
    // Events by real time.
    let start = 4000;
    let mut last_run = 0;
    let mut taken_at = None;
    let mut t = start;
    let end = cut + 10_000;
    let mut pending: Vec<(u64, usize, u64, Result<Grant, Refused>)> = Vec::new();
    while t < end {
        // Renewals: sent at t from h1; granted at t + delay; answered at t + 2·delay.
        if (t - start) % c.renew_every_ms == 0 {
            let sent = clocks[0].at(t);
            for (i, g) in grantors.iter_mut().enumerate() {
                let reachable = i == 0 || t + delay < cut;
                if reachable {
                    let r = g.grant(
                        "p",
                        "h1",
                        0,
                        clocks[i].at(t + if i == 0 { 0 } else { delay }),
                    );
                    let back = if i == 0 { t } else { t + 2 * delay };
                    if i == 0 || back < cut {
                        pending.push((back, i, sent, r));
                    }
                }
            }
        }
        pending.retain(|(at, i, sent, r)| {
            if *at <= t {
                if let Ok(g) = r {
                    holder.record(names[*i], g, *sent);
                }
                false
            } else {
                true
            }
        });
        if holder.may_run("p", 3, clocks[0].at(t)) {
            last_run = t;
        }
        // The other side tries to take over (h2 asks itself and h3 at the same real time).
        if t >= cut && taken_at.is_none() {
            let ok = (1..3)
                .filter(|&i| grantors[i].grant("p", "h2", 1, clocks[i].at(t)).is_ok())
                .count();
            if may_take_over(ok, 3) {
                taken_at = Some(t);
            }
        }
        if let Some(tk) = taken_at {
            assert!(
                !holder.may_run("p", 3, clocks[0].at(t)),
                "two copies at real time {t}: taken over at {tk}, clocks {clocks:?}, delay {delay}"
            );
        }
        t += 1;
    }
    let taken = taken_at.expect("the majority side takes over");
    (last_run, taken)
}

#[test]
fn a_stale_holder_never_runs_while_another_may_take_over_across_drifts() {
    let d = cfg().max_drift;
    let rates = [1.0 - d, 1.0 - d / 2.0, 1.0, 1.0 + d / 2.0, 1.0 + d];
    let mut worst_gap = u64::MAX;
    for &r1 in &rates {
        for &r2 in &rates {
            for &r3 in &[1.0 - d, 1.0 + d] {
                for &delay in &[0, 1, 7, 40] {
                    for cut in [6000, 6250, 6499] {
                        let clocks = [
                            Clock {
                                rate: r1,
                                offset: 123,
                            },
                            Clock {
                                rate: r2,
                                offset: 99_999,
                            },
                            Clock {
                                rate: r3,
                                offset: 7,
                            },
                        ];
                        let (last_run, taken) = partition_run(clocks, delay, cut);
                        assert!(last_run < taken);
                        worst_gap = worst_gap.min(taken - last_run);
                        // And the take-over is not needlessly late: within a lease and a
                        // half of the cut.
                        assert!(taken - cut < 4500, "{clocks:?} {delay} {cut}: {taken}");
                    }
                }
            }
        }
    }
    // At the extremes of the bound the margin shrinks to the rounding slack, never below.
    assert!(worst_gap >= 1, "{worst_gap}");
}

#[test]
fn drift_beyond_the_bound_can_break_it() {
    // The check above can fail: with clocks outside the bound (h1 counting 30 % slow, the
    // others 30 % fast), the old holder still runs when the take-over is granted.
    let clocks = [
        Clock {
            rate: 0.7,
            offset: 0,
        },
        Clock {
            rate: 1.3,
            offset: 0,
        },
        Clock {
            rate: 1.3,
            offset: 0,
        },
    ];
    let r = std::panic::catch_unwind(|| partition_run(clocks, 0, 6000));
    assert!(r.is_err(), "drift beyond the bound went unnoticed");
}

/// Random runs of a group of 3 or 5 with clocks within the drift bound, lossy links and
/// partitions that come and go, the holder renewing every 500 ms (committing its epoch once
/// it held a majority) and any other member trying a take-over at random moments. Checked at
/// every ms: no two copies may run, and a copy is discarded (refused as stale) only when a
/// copy of a higher epoch has run.
#[test]
#[allow(clippy::needless_range_loop)] // members are indices into several tables
fn random_takeovers_never_run_two_copies_nor_discard_for_nothing() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let c = cfg();
    let mut takeovers = 0;
    let mut discards = 0;
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = if seed % 2 == 0 { 3 } else { 5 };
        let names: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
        let clocks: Vec<Clock> = (0..n)
            .map(|_| Clock {
                rate: 1.0 + rng.random_range(-c.max_drift..c.max_drift),
                offset: rng.random_range(0..100_000),
            })
            .collect();
        let mut grantors: Vec<Grantor> = (0..n)
            .map(|i| Grantor::new(c, &names[i], clocks[i].at(0)))
            .collect();
        let mut holders: Vec<Holder> = (0..n).map(|i| Holder::new(c, &names[i])).collect();
        // Copies: (host, epoch). h0 runs epoch 0 from the start.
        let mut copies: Vec<(usize, u64)> = vec![(0, 0)];
        holders[0].set_epoch("p", 0);
        let mut highest_ran = 0u64;
        // Which side of a partition each member is on (all on side 0: no partition).
        let mut side = vec![0u8; n];
        let loss = 0.1;
        for t in 4000u64..60_000 {
            if t % 3000 == 0 {
                for s in side.iter_mut() {
                    *s = if rng.random::<f64>() < 0.3 { 1 } else { 0 };
                }
            }
            let reach = |a: usize, b: usize, rng: &mut StdRng| {
                a == b || (side[a] == side[b] && rng.random::<f64>() >= loss)
            };
            // Renewals of every copy, every 500 ms.
            if t % c.renew_every_ms == 0 {
                let mut stale = Vec::new();
                for &(h, e) in &copies {
                    let sent = clocks[h].at(t);
                    let committed = holders[h].committed("p", n, sent);
                    for g in 0..n {
                        if !reach(h, g, &mut rng) {
                            continue;
                        }
                        match grantors[g].grant_as("p", &names[h], e, committed, clocks[g].at(t)) {
                            Ok(x) => holders[h].record(&names[g], &x, sent),
                            Err(r) if r.stale_epoch().is_some() => {
                                assert!(
                                    highest_ran > e,
                                    "seed {seed} t {t}: h{h}'s copy at {e} made stale by {r} while nothing above ran"
                                );
                                stale.push((h, e));
                                break;
                            }
                            Err(_) => {}
                        }
                    }
                }
                for (h, e) in stale {
                    copies.retain(|&x| x != (h, e));
                    holders[h].forget("p");
                    discards += 1;
                }
            }
            // A take-over attempt by a member without a copy, now and then.
            if rng.random::<f64>() < 0.002 {
                let r = rng.random_range(0..n);
                if !copies.iter().any(|&(h, _)| h == r) {
                    let mut epoch = highest_ran + 1;
                    let mut asked = Vec::new();
                    for g in 0..n {
                        if reach(r, g, &mut rng) {
                            if let Some(top) = grantors[g].top("p") {
                                epoch = epoch.max(next_epoch(top.epoch, &top.holder, &names[r]));
                            }
                            asked.push(g);
                        }
                    }
                    let sent = clocks[r].at(t);
                    holders[r].set_epoch("p", epoch);
                    let mut votes = 0;
                    for g in asked {
                        if let Ok(x) = grantors[g].grant("p", &names[r], epoch, clocks[g].at(t)) {
                            holders[r].record(&names[g], &x, sent);
                            votes += 1;
                        }
                    }
                    if may_take_over(votes, n) && holders[r].may_run("p", n, sent) {
                        copies.push((r, epoch));
                        highest_ran = highest_ran.max(epoch);
                        takeovers += 1;
                    }
                }
            }
            let running: Vec<_> = copies
                .iter()
                .filter(|&&(h, _)| holders[h].may_run("p", n, clocks[h].at(t)))
                .collect();
            assert!(
                running.len() <= 1,
                "seed {seed} t {t}: two copies run: {running:?}"
            );
            if copies.is_empty() {
                // Every copy was discarded: only possible if the last one died for a newer
                // one, which then would be in `copies`.
                panic!("seed {seed} t {t}: no copy left");
            }
        }
    }
    // The runs did exercise take-overs and discards.
    assert!(takeovers > 20 && discards > 5, "{takeovers} {discards}");
}
