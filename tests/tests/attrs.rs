//! Process attributes and timers: interval and POSIX timers keep firing (a POSIX timer keeps
//! its id), and no_new_privs, capabilities, dumpable, child subreaper, nice, CPU affinity and
//! oom_score_adj are as they were.

use ferry_tests::{Victim, field, image_path, setup, status_field};

#[test]
fn attributes_and_timers_survive() {
    let Some(ctx) = setup("attrs") else {
        return;
    };
    let mut v = Victim::c(&ctx, "attrs", &[]);
    std::fs::write(format!("/proc/{}/oom_score_adj", v.pid), "500").expect("oom_score_adj");
    let ok = v.check();
    let before: Vec<String> = [
        "CapBnd",
        "CapEff",
        "CapPrm",
        "NoNewPrivs",
        "Cpus_allowed_list",
    ]
    .iter()
    .map(|k| status_field(v.pid, k).unwrap_or_default())
    .collect();
    let timer = field(&ok, "timer").map(str::to_owned);
    let img = image_path(&ctx, "attrs");
    v.dump(&ctx, &img, &[]);
    v.restore(&ctx, &img, &[]);
    v.assert_running_free();
    let ok = v.check();
    assert_eq!(field(&ok, "timer").map(str::to_owned), timer, "{ok}");
    let after: Vec<String> = [
        "CapBnd",
        "CapEff",
        "CapPrm",
        "NoNewPrivs",
        "Cpus_allowed_list",
    ]
    .iter()
    .map(|k| status_field(v.pid, k).unwrap_or_default())
    .collect();
    assert_eq!(after, before);
    let oom = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", v.pid)).unwrap_or_default();
    assert_eq!(oom.trim(), "500");
    v.assert_ticks_continuous();
}
