//! The web page's HTML, rendered on the server.

use std::fmt::Write;

use ferry_proto::v1::{LoadReply, ManagedProcess, MigrationRecord};

use super::auth::Session;
use super::table;
use crate::managed::load;
use crate::metrics::ManagedCounts;
use crate::node::NodeRef;

/// The page's only script: reloads the list every 15 s unless a form field has the focus.
pub const SCRIPT: &str = r#""use strict";
setInterval(function () {
  var a = document.activeElement;
  if (!a || a === document.body) { location.replace("/"); }
}, 15000);
"#;

/// How many migration records the page shows.
const RECORDS: usize = 20;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;\
margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;\
font-size:.9em}th{background:#eee}.flash{background:#ffd;border:1px solid #cc8;padding:.4em}\
.err{color:#a00}form.inline{display:inline;margin:0}td.command{font-family:monospace}";

/// `s` with the characters HTML gives a meaning escaped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    )
}

/// The login form, with `error` above it.
pub fn login(host: &str, error: Option<&str>) -> String {
    let mut p = head(&format!("Ferry on {host}: log in"));
    let _ = writeln!(p, "<h1>Ferry on {}</h1>", esc(host));
    if let Some(e) = error {
        let _ = writeln!(p, "<p class=\"err\" id=\"error\">{}</p>", esc(e));
    }
    p.push_str(
        "<form method=\"post\" action=\"/login\">\
         <p><label>Token (from <code>ferry web token</code>): \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" size=\"70\" \
         autofocus></label></p>\
         <p><button type=\"submit\" id=\"login\">Log in</button></p></form>\n</body></html>\n",
    );
    p
}

fn csrf_field(s: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&s.csrf)
    )
}

/// The main page for session `s`: processes, hosts, migrations.
pub async fn index(node: &NodeRef, s: &Session, flash: Option<&str>) -> String {
    let me = node.config.name.clone();
    let list = crate::managed::local::list(node, s.user).await;
    let peers: Vec<String> = node.peers.peers().keys().cloned().collect();
    let loads = load::futures_join(
        peers
            .iter()
            .map(|n| async move { (n.clone(), load::peer_load(node, n).await) }),
    )
    .await;
    let own = load::host_load(&node.managed).await;
    let n = node.clone();
    let mut records = tokio::task::spawn_blocking(move || n.store.list())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    records.sort_by_key(|r| std::cmp::Reverse(r.started_unix_ms));
    records.truncate(RECORDS);

    let who = if s.user.is_root() {
        "root (every user's processes)".to_string()
    } else {
        format!("uid {}", s.user.uid)
    };
    let mut p = head(&format!("Ferry on {me}"));
    let _ = write!(
        p,
        "<h1>Ferry on {}</h1>\n<p>Logged in as <span id=\"user\">{}</span>. \
         <form class=\"inline\" method=\"post\" action=\"/logout\">{}\
         <button type=\"submit\" id=\"logout\">Log out</button></form></p>\n",
        esc(&me),
        esc(&who),
        csrf_field(s)
    );
    if let Some(f) = flash {
        let _ = writeln!(p, "<p class=\"flash\" id=\"flash\">{}</p>", esc(f));
    }
    processes(&mut p, s, &me, &peers, &list.processes, &list.unreachable);
    hosts(&mut p, &me, &own, &loads);
    migrations(&mut p, &records);
    p.push_str("<script src=\"/app.js\"></script>\n</body></html>\n");
    p
}

fn processes(
    p: &mut String,
    s: &Session,
    me: &str,
    peers: &[String],
    list: &[ManagedProcess],
    unreachable: &[String],
) {
    p.push_str("<h2>Managed processes</h2>\n<table id=\"processes\"><tr>");
    for h in table::HEAD {
        let _ = write!(p, "<th>{h}</th>");
    }
    p.push_str("<th>ACTIONS</th></tr>\n");
    for proc in list {
        let cells = table::row(proc);
        let _ = write!(p, "<tr data-id=\"{}\">", esc(&proc.id));
        for (i, c) in cells.iter().enumerate() {
            let class = table::HEAD[i].to_ascii_lowercase();
            let _ = write!(p, "<td class=\"{class}\">{}</td>", esc(c));
        }
        p.push_str("<td class=\"actions\">");
        if table::is_running(proc) {
            let _ = write!(
                p,
                "<form class=\"inline\" method=\"post\" action=\"/kill\">{}\
                 <input type=\"hidden\" name=\"id\" value=\"{}\">\
                 <button type=\"submit\" class=\"kill\" name=\"signal\" value=\"TERM\">kill\
                 </button></form> ",
                csrf_field(s),
                esc(&proc.id)
            );
            // A process moves from its home, once: the page of its home offers it.
            if proc.home == me && proc.host == me && !peers.is_empty() {
                let _ = write!(
                    p,
                    "<form class=\"inline\" method=\"post\" action=\"/move\">{}\
                     <input type=\"hidden\" name=\"id\" value=\"{}\">\
                     <select name=\"to\" class=\"to\"><option value=\"auto\">auto</option>",
                    csrf_field(s),
                    esc(&proc.id)
                );
                for peer in peers {
                    let _ = write!(p, "<option value=\"{0}\">{0}</option>", esc(peer));
                }
                p.push_str("</select> <button type=\"submit\" class=\"move\">move</button></form>");
            }
        }
        p.push_str("</td></tr>\n");
    }
    p.push_str("</table>\n");
    if list.is_empty() {
        p.push_str("<p id=\"none\">No managed processes.</p>\n");
    }
    for u in unreachable {
        let _ = writeln!(
            p,
            "<p class=\"err\">Host {}: unreachable, its processes are not shown.</p>",
            esc(u)
        );
    }
}

fn load_cells(l: &LoadReply) -> String {
    format!(
        "<td class=\"cpus\">{}</td><td class=\"cpu_idle\">{:.0}%</td><td>{}</td><td>{}</td>\
         <td class=\"managed\">{}</td>",
        l.cpus,
        l.cpu_idle * 100.0,
        table::human_bytes(l.mem_total),
        table::human_bytes(l.mem_available),
        l.managed_running
    )
}

fn hosts(p: &mut String, me: &str, own: &LoadReply, loads: &[(String, Result<LoadReply, String>)]) {
    p.push_str(
        "<h2>Hosts</h2>\n<table id=\"hosts\"><tr><th>HOST</th><th>CPUS</th><th>CPU_IDLE</th>\
         <th>MEM</th><th>MEM_AVAILABLE</th><th>MANAGED</th></tr>\n",
    );
    let _ = writeln!(
        p,
        "<tr data-host=\"{0}\"><td>{0} (this host)</td>{1}</tr>",
        esc(me),
        load_cells(own)
    );
    for (name, l) in loads {
        match l {
            Ok(l) => {
                let _ = writeln!(
                    p,
                    "<tr data-host=\"{0}\"><td>{0}</td>{1}</tr>",
                    esc(name),
                    load_cells(l)
                );
            }
            Err(e) => {
                let _ = writeln!(
                    p,
                    "<tr data-host=\"{0}\"><td>{0}</td><td colspan=\"5\" class=\"err\">\
                     unreachable: {1}</td></tr>",
                    esc(name),
                    esc(e)
                );
            }
        }
    }
    p.push_str("</table>\n");
}

fn migrations(p: &mut String, records: &[MigrationRecord]) {
    p.push_str(
        "<h2>Recent migrations of this host</h2>\n<table id=\"migrations\"><tr><th>ID</th>\
         <th>ROLE</th><th>PEER</th><th>PID</th><th>STATE</th><th>STARTED</th>\
         <th>DOWNTIME</th><th>DETAIL</th></tr>\n",
    );
    for r in records {
        let downtime = if r.frozen_end_unix_us > r.frozen_unix_us && r.frozen_unix_us > 0 {
            format!("{} ms", (r.frozen_end_unix_us - r.frozen_unix_us) / 1000)
        } else {
            "-".into()
        };
        let ago = crate::node::now_ms().saturating_sub(r.started_unix_ms) / 1000;
        let _ = writeln!(
            p,
            "<tr data-migration=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td>\
             <td class=\"state\">{4}</td><td>{5} ago</td><td>{6}</td><td>{7}</td></tr>",
            esc(&r.migration_id),
            esc(&r.role),
            esc(&r.peer),
            r.pid,
            esc(&r.state),
            table::human_time(ago),
            downtime,
            esc(&r.detail)
        );
    }
    p.push_str("</table>\n");
    if records.is_empty() {
        p.push_str("<p>No migrations yet.</p>\n");
    }
}

/// The managed processes of this agent by status, for `/metrics` (from the registry, the
/// migration records and `/proc`; no peer is asked). Blocking.
pub fn managed_counts(node: &NodeRef) -> ManagedCounts {
    let mut counts: std::collections::BTreeMap<&'static str, i64> = Default::default();
    let mut alive_here = 0i64;
    for e in node.managed.list(0, true) {
        let from_record = |e: &crate::managed::Entry| {
            let rec = node.store.get(&e.migration_id).ok().flatten()?;
            match rec.state.as_str() {
                "ended" if rec.exit_known => Some((rec.exit_code, rec.exit_signal)),
                "ended" | "lost" => Some((0, -1)),
                _ => None,
            }
        };
        let exit = e.exit.or_else(|| {
            if e.migration_id.is_empty() {
                None
            } else {
                from_record(&e)
            }
        });
        let status = match exit {
            Some((_, -1)) => "lost",
            Some((_, sig)) if sig != 0 => "killed",
            Some(_) => "finished",
            None if !e.runs_on.is_empty() => "remote",
            None => match crate::managed::proc_stat(e.pid) {
                Some(st) if crate::managed::alive(e.pid, e.start_time) => {
                    alive_here += 1;
                    // As `ps` shows it: a zombie not reaped yet still counts as running.
                    if matches!(st.state, 'T' | 't') {
                        "frozen"
                    } else {
                        "running"
                    }
                }
                _ => "lost",
            },
        };
        *counts.entry(status).or_default() += 1;
    }
    let hosted = i64::from(node.managed.running_here()) - alive_here;
    counts.insert("hosted", hosted.max(0));
    ManagedCounts {
        counts: counts.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<script>alert('x\"&')</script>"),
            "&lt;script&gt;alert(&#39;x&quot;&amp;&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn the_login_page_escapes_its_message() {
        let p = login("h1", Some("<b>"));
        assert!(p.contains("&lt;b&gt;") && !p.contains("<b>"));
        assert!(p.contains("name=\"token\""));
    }
}
