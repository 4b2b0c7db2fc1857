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
fn refuses_netlink_socket() {
    refused("netlink", &["netlink"]);
}
