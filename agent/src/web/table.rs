//! The columns of `ferry ps`, shared by the command and the web page.

use ferry_proto::v1::ManagedProcess;

/// The column names, in order.
pub const HEAD: [&str; 10] = [
    "ID", "PID", "HOST", "STATUS", "MAX_CPU", "CURR_CPU", "MAX_MEM", "CURR_MEM", "UPTIME",
    "COMMAND",
];

/// A byte count with a binary unit: `512`, `1.5K`, `64M`, `12G`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, n) in UNITS {
        if b >= n {
            let v = b as f64 / n as f64;
            return if v >= 10.0 || b.is_multiple_of(n) {
                format!("{}{u}", v.round())
            } else {
                format!("{v:.1}{u}")
            };
        }
    }
    format!("{b}")
}

/// A duration in seconds: `42s`, `3m07s`, `2h05m`, `1d03h`.
pub fn human_time(s: u64) -> String {
    match s {
        s if s >= 86400 => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Whether `p` is still there (its current CPU and memory mean something).
pub fn is_running(p: &ManagedProcess) -> bool {
    p.status == "running" || p.status.starts_with("frozen")
}

/// One row of `ps`, in the order of [`HEAD`].
pub fn row(p: &ManagedProcess) -> [String; 10] {
    let l = p.limits.unwrap_or_default();
    let running = is_running(p);
    [
        p.id.clone(),
        if p.pid > 0 {
            p.pid.to_string()
        } else {
            "-".into()
        },
        p.host.clone(),
        p.status.clone(),
        if l.cpu_millis > 0 {
            format!("{}", l.cpu_millis as f64 / 1000.0)
        } else {
            "-".into()
        },
        if running {
            format!("{:.0}%", p.curr_cpu)
        } else {
            "-".into()
        },
        if l.mem_bytes > 0 {
            human_bytes(l.mem_bytes)
        } else {
            "-".into()
        },
        if running {
            human_bytes(p.curr_mem)
        } else {
            "-".into()
        },
        human_time(p.uptime_s),
        p.command.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(512), "512");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(64 << 20), "64M");
        assert_eq!(human_time(59), "59s");
        assert_eq!(human_time(187), "3m07s");
        assert_eq!(human_time(7500), "2h05m");
        assert_eq!(human_time(97200), "1d03h");
    }

    #[test]
    fn a_row() {
        let p = ManagedProcess {
            id: "k3f9".into(),
            pid: 42,
            host: "h2".into(),
            status: "running".into(),
            limits: Some(ferry_proto::v1::Limits {
                cpu_millis: 500,
                mem_bytes: 64 << 20,
            }),
            curr_cpu: 12.4,
            curr_mem: 3 << 20,
            uptime_s: 65,
            command: "sleep 100".into(),
            ..Default::default()
        };
        assert_eq!(
            row(&p),
            [
                "k3f9",
                "42",
                "h2",
                "running",
                "0.5",
                "12%",
                "64M",
                "3M",
                "1m05s",
                "sleep 100"
            ]
            .map(String::from)
        );
        let ended = ManagedProcess {
            status: "finished 0".into(),
            pid: 0,
            ..p
        };
        let r = row(&ended);
        assert_eq!((&r[1][..], &r[5][..], &r[7][..]), ("-", "-", "-"));
    }
}
