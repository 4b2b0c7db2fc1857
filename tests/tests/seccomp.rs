//! seccomp survives: a filter keeps filtering (a denied call still fails with EPERM) and a
//! process in strict mode goes on counting with only read, write and sigreturn.

use ferry_tests::{Victim, field, image_path, setup, status_field};

fn round_trip(mode: &str) {
    let Some(ctx) = setup(&format!("seccomp-{mode}")) else {
        return;
    };
    let mut v = Victim::c(&ctx, "seccomp", &[mode]);
    let ok = v.check();
    let before = ["Seccomp", "Seccomp_filters", "NoNewPrivs"].map(|k| status_field(v.pid, k));
    let img = image_path(&ctx, mode);
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.assert_running_free();
    let after = ["Seccomp", "Seccomp_filters", "NoNewPrivs"].map(|k| status_field(v.pid, k));
    assert_eq!(after, before);
    let again = v.check();
    assert_eq!(field(&again, "filtered"), field(&ok, "filtered"), "{again}");
    let tick = v.last_tick();
    v.wait_tick_beyond(tick + 2);
    v.assert_ticks_continuous();
}

#[test]
fn seccomp_filter_still_filters() {
    round_trip("filter");
}

#[test]
fn seccomp_strict_mode_goes_on() {
    round_trip("strict");
}
