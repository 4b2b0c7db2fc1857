//! Cluster membership and load gossip (issue 13, item 1; docs/cluster.md) on 3 test hosts:
//!
//! - seeds naming one peer each (h1 → h2, h2 → h3, h3 → h2): every agent sees every other
//!   alive, with its load, within a few seconds (h1 learns h3 through h2); `ferry hosts` prints
//!   one line per member beginning with its name, `--json` an array of objects with the fields;
//! - a host killed whole (`xtask hosts kill-host`): the others show it down within
//!   [`DOWN_WITHIN`]; brought back (`start-host`), alive again;
//! - a cut link: h1 shows h2 suspect, then down; restored, alive again (on both sides);
//! - an agent with another cluster key is never a member, and the datagrams it sends are
//!   dropped and counted (`ferry_cluster_bad_datagrams_total` in `/metrics`).

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::hosts::{Hosts, PEER_PORT, WEB_PORT};
use ferry_tests::{ferry_bin, setup};
use serde_json::Value;

/// How long every member may take to see every other alive after the agents start.
const JOIN_WITHIN: Duration = Duration::from_secs(10);
/// How long a dead or cut-off host may take to be shown down (probe period 1 s, suspect
/// timeout 3 s: a few seconds, with margin for a loaded machine).
const DOWN_WITHIN: Duration = Duration::from_secs(12);

/// `ferry hosts --json` of host `n`.
fn members(hosts: &Hosts, n: u32) -> Result<Vec<Value>> {
    let socket = hosts.socket(n);
    let ferry = ferry_bin();
    let out = hosts.run_ok(
        n,
        &[
            ferry.to_str().context("ferry path")?,
            "hosts",
            "--json",
            "--socket",
            socket.to_str().context("socket path")?,
        ],
    )?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("parse {out:?}"))?;
    Ok(v.as_array().context("not an array")?.clone())
}

/// The state of member `name` in host `n`'s view, if it is listed.
fn state_of(hosts: &Hosts, n: u32, name: &str) -> Result<Option<String>> {
    Ok(members(hosts, n)?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["state"].as_str().map(str::to_owned)))
}

/// Polls until `f` holds, or fails after `timeout` naming `what`. Returns the time it took.
fn poll(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// Whether host `n` sees exactly the hosts `alive` as alive members (itself included), each
/// with a load.
fn sees_alive(hosts: &Hosts, n: u32, alive: &[u32]) -> Result<bool> {
    let ms = members(hosts, n)?;
    Ok(alive.iter().all(|&j| {
        ms.iter().any(|m| {
            m["name"] == Hosts::name(j).as_str() && m["state"] == "alive" && m["load"].is_object()
        })
    }))
}

/// Rewrites host `n`'s configuration with `peers` as its seeds and `extra` lines at the top.
fn configure(hosts: &Hosts, n: u32, peers: &[u32], extra: &str) -> Result<()> {
    let path = hosts.config(n);
    let text = fs::read_to_string(&path)?;
    let head = text.split("[peers]").next().unwrap_or_default();
    let mut new = format!("{extra}{head}[peers]\n");
    for &p in peers {
        new.push_str(&format!("h{p} = \"{}\"\n", Hosts::peer_addr(p)));
    }
    fs::write(&path, new)?;
    Ok(())
}

/// The tail of every host's ferryd log, for a failure's message.
fn logs(hosts: &Hosts) -> String {
    let mut out = String::new();
    for n in 1..=hosts.count() {
        let log = hosts.ferryd_log(n);
        let lines: Vec<&str> = log.lines().collect();
        out.push_str(&format!(
            "--- h{n} ferryd.log (tail)\n{}\n",
            lines[lines.len().saturating_sub(25)..].join("\n")
        ));
    }
    out
}

/// Runs `body` on `hosts`; a failure carries the agents' logs.
fn with_logs<H: std::borrow::BorrowMut<Hosts>>(
    mut hosts: H,
    body: impl FnOnce(&mut Hosts) -> Result<()>,
) -> Result<()> {
    let result = body(hosts.borrow_mut());
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", logs(hosts.borrow())))
}

/// `ferry_cluster_bad_datagrams_total` in host `n`'s `/metrics`.
fn bad_datagrams(hosts: &Hosts, n: u32) -> Result<f64> {
    let host = Hosts::name(n);
    let ca = hosts.tls_dir().join("ca.pem");
    let out = hosts.run_ok(
        n,
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            ca.to_str().context("ca path")?,
            "--resolve",
            &format!("{host}:{WEB_PORT}:{}", Hosts::addr(n)),
            &format!("https://{host}:{WEB_PORT}/metrics"),
        ],
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("ferry_cluster_bad_datagrams_total "))
        .context("no ferry_cluster_bad_datagrams_total in /metrics")?
        .trim()
        .parse()
        .context("parse the counter")
}

#[test]
fn members_learned_through_seeds_and_a_killed_host_goes_down_and_comes_back() -> Result<()> {
    let Some(_ctx) = setup("cluster_seeds") else {
        return Ok(());
    };
    with_logs(Hosts::up(3)?, seeds_body)
}

/// Waits until the agents `up` started are fully up (their stores opened: a ferryd killed
/// while it creates its redb files may find them unusable at its next start).
fn settle(hosts: &Hosts) -> Result<()> {
    poll(JOIN_WITHIN, "the first agents see each other", || {
        Ok(sees_alive(hosts, 1, &[1, 2, 3])? && sees_alive(hosts, 3, &[1, 2, 3])?)
    })
    .map(drop)
}

fn seeds_body(hosts: &mut Hosts) -> Result<()> {
    settle(hosts)?;
    // Fresh agents, each seeded with one peer: h1 knows only h2, h3 only h2.
    for n in 1..=3 {
        hosts.kill_ferryd(n)?;
    }
    configure(hosts, 1, &[2], "")?;
    configure(hosts, 2, &[3], "")?;
    configure(hosts, 3, &[2], "")?;
    for n in 1..=3 {
        hosts.start_ferryd(n, &[])?;
    }
    let took = poll(JOIN_WITHIN, "every host sees all three alive", || {
        Ok(sees_alive(hosts, 1, &[1, 2, 3])?
            && sees_alive(hosts, 2, &[1, 2, 3])?
            && sees_alive(hosts, 3, &[1, 2, 3])?)
    })?;
    eprintln!("all three alive everywhere after {took:?}");

    // --json: an array of objects with the fields.
    let ms = members(hosts, 1)?;
    ensure!(ms.len() == 3, "h1 lists {} members: {ms:?}", ms.len());
    ensure!(ms[0]["name"] == "h1" && ms[0]["local"] == true, "{ms:?}");
    for m in &ms {
        for field in [
            "name",
            "addr",
            "state",
            "local",
            "load",
            "processes",
            "age_s",
        ] {
            ensure!(m.get(field).is_some(), "no {field} in {m}");
        }
        let l = &m["load"];
        for field in [
            "cpus",
            "cpu_busy",
            "mem_used",
            "mem_total",
            "net_rx_bps",
            "net_tx_bps",
            "free",
            "xsave_features",
            "kernel",
        ] {
            ensure!(l.get(field).is_some(), "no load.{field} in {m}");
        }
        let busy = l["cpu_busy"].as_f64().context("cpu_busy")?;
        ensure!((0.0..=1.0).contains(&busy), "cpu_busy {busy}");
        ensure!(
            l["mem_total"].as_u64().unwrap_or(0) > 0
                && l["mem_used"].as_u64() <= l["mem_total"].as_u64(),
            "memory {l}"
        );
        ensure!(
            m["age_s"].as_f64().is_some_and(|a| a < 5.0),
            "stale load: {m}"
        );
        let n: u32 = m["name"].as_str().unwrap_or("h0")[1..].parse()?;
        ensure!(m["addr"] == Hosts::peer_addr(n).as_str(), "{m}");
    }
    // The lines: one per member, each beginning with its name.
    let ferry = ferry_bin();
    let socket = hosts.socket(2);
    let text = hosts.run_ok(
        2,
        &[
            ferry.to_str().unwrap(),
            "hosts",
            "--socket",
            socket.to_str().unwrap(),
        ],
    )?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 3, "ferry hosts printed:\n{text}");
    for (line, name) in lines.iter().zip(["h2", "h1", "h3"]) {
        ensure!(line.starts_with(&format!("{name} ")), "line {line:?}");
        ensure!(
            line.contains("alive") && line.contains("cpu "),
            "line {line:?}"
        );
    }
    ensure!(
        lines[2].contains(&format!("10.77.0.3:{PEER_PORT}")),
        "{text}"
    );

    // h3 dies whole: h1 and h2 show it down.
    hosts.kill_host(3)?;
    let took = poll(DOWN_WITHIN, "h1 and h2 show the killed h3 down", || {
        Ok(state_of(hosts, 1, "h3")?.as_deref() == Some("down")
            && state_of(hosts, 2, "h3")?.as_deref() == Some("down"))
    })?;
    eprintln!("killed h3 known down on h1 and h2 after {took:?}");
    ensure!(sees_alive(hosts, 1, &[1, 2])?, "h1 lost h2 too");

    // Back with a fresh agent of the same name: alive again everywhere.
    hosts.start_host(3)?;
    let took = poll(JOIN_WITHIN, "h3 back alive on h1 and h2", || {
        Ok(sees_alive(hosts, 1, &[1, 2, 3])?
            && sees_alive(hosts, 2, &[1, 2, 3])?
            && sees_alive(hosts, 3, &[1, 2, 3])?)
    })?;
    eprintln!("h3 back alive everywhere after {took:?}");
    ensure!(members(hosts, 1)?.len() == 3, "{:?}", members(hosts, 1)?);
    Ok(())
}

#[test]
fn a_cut_link_makes_a_member_suspect_then_down_then_alive_again() -> Result<()> {
    let Some(_ctx) = setup("cluster_cut") else {
        return Ok(());
    };
    with_logs(Hosts::up(3)?, cut_body)
}

fn cut_body(hosts: &mut Hosts) -> Result<()> {
    let hosts = &*hosts;
    poll(JOIN_WITHIN, "every host sees all three alive", || {
        Ok(sees_alive(hosts, 1, &[1, 2, 3])? && sees_alive(hosts, 2, &[1, 2, 3])?)
    })?;
    hosts.cut_link(2)?;
    let mut seen = Vec::new();
    let took = poll(DOWN_WITHIN, "h1 shows the cut-off h2 down", || {
        let s = state_of(hosts, 1, "h2")?.unwrap_or_default();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        Ok(s == "down")
    })?;
    eprintln!("h2 on h1: {seen:?}, down after {took:?}");
    ensure!(
        seen.iter().any(|s| s == "suspect"),
        "h1 never showed h2 suspect before down: {seen:?}"
    );
    ensure!(sees_alive(hosts, 1, &[1, 3])?, "h1 lost h3 too");
    hosts.restore_link(2)?;
    let took = poll(JOIN_WITHIN, "h2 alive again on h1, and h1 on h2", || {
        Ok(sees_alive(hosts, 1, &[1, 2, 3])? && sees_alive(hosts, 2, &[1, 2, 3])?)
    })?;
    eprintln!("h2 alive again after {took:?}");
    Ok(())
}

#[test]
fn an_agent_with_another_cluster_key_is_never_a_member() -> Result<()> {
    let Some(_ctx) = setup("cluster_key") else {
        return Ok(());
    };
    with_logs(Hosts::up(3)?, key_body)
}

fn key_body(hosts: &mut Hosts) -> Result<()> {
    settle(hosts)?;
    for n in 1..=3 {
        hosts.kill_ferryd(n)?;
    }
    // h3 gets a key of its own; everything else (certificate, seeds) as usual.
    let other = hosts.dir(3).join("other-cluster.key");
    ferry_agent::cluster::ClusterKey::create(&other)?;
    configure(
        hosts,
        3,
        &[1, 2],
        &format!("cluster_key = \"{}\"\n", other.display()),
    )?;
    for n in 1..=3 {
        hosts.start_ferryd(n, &[])?;
    }
    poll(JOIN_WITHIN, "h1 and h2 see each other alive", || {
        Ok(sees_alive(hosts, 1, &[1, 2])? && sees_alive(hosts, 2, &[1, 2])?)
    })?;
    // h3 announces itself to its seeds every 2 s, and they to it: for a while, nobody
    // becomes a member across the two keys.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        for n in [1, 2] {
            let names: Vec<Value> = members(hosts, n)?
                .iter()
                .map(|m| m["name"].clone())
                .collect();
            ensure!(
                !names.contains(&Value::from("h3")),
                "h{n} lists h3: {names:?}"
            );
        }
        let names: Vec<Value> = members(hosts, 3)?
            .iter()
            .map(|m| m["name"].clone())
            .collect();
        ensure!(names == [Value::from("h3")], "h3 lists {names:?}");
        sleep(Duration::from_millis(500));
    }
    for n in 1..=3 {
        let bad = bad_datagrams(hosts, n)?;
        eprintln!("h{n}: {bad} bad datagrams");
        ensure!(bad >= 1.0, "h{n} counted no dropped datagram");
    }
    Ok(())
}
