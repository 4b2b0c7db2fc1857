//! The agents' web page and `/metrics` (issue 12, items 5 and 6), over HTTPS on the test hosts
//! (`web = "10.77.0.N:7443"`, the node's certificate, verified here against the cluster CA):
//!
//! - with curl: `/metrics` parses (OpenMetrics text, every name `ferry_`) and its counters move
//!   after a move made from the page (migrations, downtime, dumps on the origin, restores on the
//!   destination, relayed bytes), with no command line in it; every POST without a session is
//!   401, with a session but without or with a wrong CSRF token 403, and none of them acts; a
//!   wrong token is refused; the session cookie is HttpOnly, Secure, SameSite=Strict; a user's
//!   page lists only their processes (root's all), and a user cannot kill root's job from it.
//! - in a real headless browser (Debian's chromium and chromedriver through WebDriver, the
//!   cluster CA trusted in an NSS database): a wrong token is refused, log in, see the running
//!   job, kill it with its button, see it killed, and gone once its output was read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_tests::hosts::{Hosts, WEB_PORT};
use ferry_tests::{ferry_bin, setup, skip, workload};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The uid of a user who is not root.
const USER: u32 = 65534;

/// `ferry ARGS` inside host `n`, as root or as `uid`, in `/`.
fn ferry(hosts: &Hosts, n: u32, uid: Option<u32>, args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new("nsenter");
    cmd.arg("--target")
        .arg(hosts.init_pid(n).to_string())
        .args(["--net", "--pid", "--mount", "--uts"]);
    if let Some(uid) = uid {
        cmd.arg(format!("--setuid={uid}"))
            .arg(format!("--setgid={uid}"));
    }
    cmd.arg("--")
        .arg(ferry_bin())
        .args(args)
        .env("FERRY_SOCKET", hosts.socket(n))
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run ferry {args:?}"))
}

fn ferry_ok(hosts: &Hosts, n: u32, uid: Option<u32>, args: &[&str]) -> Result<String> {
    let out = ferry(hosts, n, uid, args)?;
    ensure!(
        out.status.success(),
        "ferry {args:?} on h{n} as {uid:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_line(s: &str) -> Result<String> {
    Ok(s.lines().next().context("no output")?.trim().to_string())
}

/// `ferry ps --json` on h1 as `uid`: job `id`'s object, if listed.
fn ps_job(hosts: &Hosts, uid: Option<u32>, id: &str) -> Result<Option<Value>> {
    let out = ferry_ok(hosts, 1, uid, &["ps", "--json"])?;
    let v: Value = serde_json::from_str(&out).context("ps --json is not JSON")?;
    Ok(v.as_array()
        .context("ps --json is not an array")?
        .iter()
        .find(|p| p["id"] == id)
        .cloned())
}

fn wait_job(
    hosts: &Hosts,
    uid: Option<u32>,
    id: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let start = Instant::now();
    loop {
        let p = ps_job(hosts, uid, id)?;
        if let Some(p) = &p
            && want(p)
        {
            return Ok(p.clone());
        }
        ensure!(start.elapsed() < TIMEOUT, "job {id} never {what}: {p:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// curl inside host `n` to `https://hN:7443PATH`, trusting only the cluster CA and requiring
/// the certificate to name hN. `post`: the form body. `session`: the cookie's value.
fn curl(
    hosts: &Hosts,
    n: u32,
    path: &str,
    post: Option<&str>,
    session: Option<&str>,
) -> Result<Answer> {
    curl_with(hosts, n, path, post, session, &[])
}

/// [`curl`] with more request headers.
fn curl_with(
    hosts: &Hosts,
    n: u32,
    path: &str,
    post: Option<&str>,
    session: Option<&str>,
    more: &[&str],
) -> Result<Answer> {
    let host = Hosts::name(n);
    let mut args: Vec<String> = vec![
        "curl".into(),
        "-sS".into(),
        "-i".into(),
        "--max-time".into(),
        "20".into(),
        "--cacert".into(),
        hosts.tls_dir().join("ca.pem").display().to_string(),
        "--resolve".into(),
        format!("{host}:{WEB_PORT}:{}", Hosts::addr(n)),
    ];
    if let Some(body) = post {
        args.extend(["--data-raw".into(), body.into()]);
    }
    if let Some(s) = session {
        args.extend(["-H".into(), format!("Cookie: __Host-ferry_session={s}")]);
    }
    for h in more {
        args.extend(["-H".into(), (*h).to_string()]);
    }
    args.push(format!("https://{host}:{WEB_PORT}{path}"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = hosts.run(n, &argv)?;
    ensure!(
        out.status.success(),
        "curl {path} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET /metrics` of host `n`, checked line by line: every sample `ferry_...`, a number, the
/// text ends with `# EOF`. Sample (name with labels) → value, and the text.
fn metrics(hosts: &Hosts, n: u32) -> Result<(BTreeMap<String, f64>, String)> {
    let a = curl(hosts, n, "/metrics", None, None)?;
    ensure!(a.status == 200, "GET /metrics: {a:?}");
    ensure!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "content type: {a:?}"
    );
    ensure!(a.body.trim_end().ends_with("# EOF"), "no # EOF: {}", a.body);
    let mut out = BTreeMap::new();
    for line in a.body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.split_whitespace();
            let kind = w.next().unwrap_or("");
            ensure!(
                kind == "EOF" || w.next().is_some_and(|name| name.starts_with("ferry_")),
                "metadata of another name: {line}"
            );
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("not a sample: {line:?}"))?;
        let name_end = key.find('{').unwrap_or(key.len());
        let name = &key[..name_end];
        ensure!(
            name.starts_with("ferry_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        ensure!(
            name_end == key.len() || key.ends_with('}'),
            "bad labels in {line:?}"
        );
        let v: f64 = value
            .parse()
            .with_context(|| format!("not a number in {line:?}"))?;
        out.insert(key.to_string(), v);
    }
    Ok((out, a.body))
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// The value of hidden field `csrf` in a page.
fn csrf_of(page: &str) -> Result<String> {
    let at = page
        .find("name=\"csrf\" value=\"")
        .context("no CSRF field in the page")?;
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    Ok(rest[..rest.find('"').context("unterminated")?].to_string())
}

/// Logs in on h`n` with `token`: the session cookie's value (checking its attributes).
fn login(hosts: &Hosts, n: u32, token: &str) -> Result<String> {
    let a = curl(hosts, n, "/login", Some(&format!("token={token}")), None)?;
    ensure!(a.status == 303, "login: {a:?}");
    let cookie = a.header("set-cookie").context("no cookie")?;
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        ensure!(
            cookie.split("; ").any(|x| x == attr),
            "cookie without {attr}: {cookie}"
        );
    }
    let value = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("__Host-ferry_session="))
        .context("not the session cookie")?;
    Ok(value.to_string())
}

/// Kills a job left by a failed test (root's, on h1).
struct KillJob<'a>(&'a Hosts, String);

impl Drop for KillJob<'_> {
    fn drop(&mut self) {
        let _ = ferry(self.0, 1, None, &["kill", &self.1, "--signal", "KILL"]);
    }
}

#[test]
fn metrics_login_csrf_and_actions_over_https() -> Result<()> {
    let Some(_ctx) = setup("web-https") else {
        return Ok(());
    };
    if Command::new("curl").arg("--version").output().is_err() {
        skip("curl is missing (apt-get install curl)");
        return Ok(());
    }
    let hosts = Hosts::up(2).context("hosts up")?;
    let (h1_before, _) = metrics(&hosts, 1)?;
    let (h2_before, _) = metrics(&hosts, 2)?;

    let ticker = workload("ticker");
    let ticker = ticker.to_str().context("path")?;
    let root_job = first_line(&ferry_ok(
        &hosts,
        1,
        None,
        &["run", "--detach", "--", ticker],
    )?)?;
    let _kill_root = KillJob(&hosts, root_job.clone());
    let user_job = first_line(&ferry_ok(
        &hosts,
        1,
        Some(USER),
        &["run", "--detach", "--", "/bin/sleep", "1000"],
    )?)?;
    let _kill_user = KillJob(&hosts, user_job.clone());
    let user_token = first_line(&ferry_ok(&hosts, 1, Some(USER), &["web", "token"])?)?;
    let root_token = first_line(&ferry_ok(&hosts, 1, None, &["web", "token"])?)?;
    ensure!(
        user_token != root_token && user_token.len() >= 64,
        "{user_token}"
    );

    // Unauthenticated: the page sends to the login form, every action is refused.
    let a = curl(&hosts, 1, "/", None, None)?;
    ensure!(
        a.status == 303 && a.header("location") == Some("/login"),
        "GET / without a session: {a:?}"
    );
    for (path, body) in [
        ("/kill", format!("id={user_job}&signal=TERM")),
        ("/move", format!("id={user_job}&to=h2")),
        ("/logout", String::new()),
    ] {
        for cookie in [None, Some("0123abcd")] {
            let a = curl(&hosts, 1, path, Some(&body), cookie)?;
            ensure!(
                a.status == 401 || a.status == 403,
                "POST {path} with cookie {cookie:?}: {a:?}"
            );
        }
    }
    // A wrong token, and a token of another length.
    for bad in [
        format!("fwt_{}", "0".repeat(64)),
        "nothing".to_string(),
        root_token[..root_token.len() - 1].to_string(),
    ] {
        let a = curl(&hosts, 1, "/login", Some(&format!("token={bad}")), None)?;
        ensure!(a.status == 401, "login with {bad:?}: {a:?}");
        ensure!(a.header("set-cookie").is_none(), "{a:?}");
        ensure!(a.body.contains("Wrong token"), "{a:?}");
    }

    // The user's page: their job, not root's.
    let user = login(&hosts, 1, &user_token)?;
    let page = curl(&hosts, 1, "/", None, Some(&user))?;
    ensure!(page.status == 200, "{page:?}");
    ensure!(
        page.header("content-security-policy").is_some()
            && page.header("x-frame-options") == Some("DENY"),
        "{page:?}"
    );
    ensure!(
        page.body.contains(&format!("data-id=\"{user_job}\"")),
        "the user's page lacks their job {user_job}: {}",
        page.body
    );
    ensure!(
        !page.body.contains(&format!("data-id=\"{root_job}\"")),
        "the user's page shows root's job {root_job}: {}",
        page.body
    );
    ensure!(
        page.body.contains("data-host=\"h2\""),
        "no host h2: {}",
        page.body
    );
    let csrf = csrf_of(&page.body)?;

    // A session without the CSRF token, or with a wrong one, acts on nothing.
    for body in [
        format!("id={user_job}&signal=KILL"),
        format!("id={user_job}&signal=KILL&csrf="),
        format!("id={user_job}&signal=KILL&csrf={}", "0".repeat(csrf.len())),
    ] {
        let a = curl(&hosts, 1, "/kill", Some(&body), Some(&user))?;
        ensure!(a.status == 403, "POST /kill {body}: {a:?}");
    }
    let a = curl(&hosts, 1, "/logout", Some("csrf=x"), Some(&user))?;
    ensure!(
        a.status == 403,
        "POST /logout with a wrong CSRF token: {a:?}"
    );
    // Nor does a browser's POST from another site, even with the right token.
    let a = curl_with(
        &hosts,
        1,
        "/kill",
        Some(&format!("id={user_job}&signal=KILL&csrf={csrf}")),
        Some(&user),
        &["Origin: https://elsewhere.example"],
    )?;
    ensure!(a.status == 403, "POST /kill from another origin: {a:?}");
    // Root's job cannot be killed from the user's session.
    let a = curl(
        &hosts,
        1,
        "/kill",
        Some(&format!("id={root_job}&signal=KILL&csrf={csrf}")),
        Some(&user),
    )?;
    ensure!(a.status == 303, "{a:?}");
    let page = curl(&hosts, 1, "/", None, Some(&user))?;
    ensure!(page.body.contains("Could not kill"), "{}", page.body);
    thread::sleep(Duration::from_millis(500));
    for (uid, id) in [(Some(USER), &user_job), (None, &root_job)] {
        let p = ps_job(&hosts, uid, id)?.context("job gone")?;
        ensure!(p["status"] == "running", "{id} after refused POSTs: {p}");
    }

    // Root's page lists both; root moves its job to h2 from it.
    let root = login(&hosts, 1, &root_token)?;
    let page = curl(&hosts, 1, "/", None, Some(&root))?;
    for id in [&root_job, &user_job] {
        ensure!(
            page.body.contains(&format!("data-id=\"{id}\"")),
            "root's page lacks {id}"
        );
    }
    let root_csrf = csrf_of(&page.body)?;
    ensure!(root_csrf != csrf, "two sessions share a CSRF token");
    let a = curl(
        &hosts,
        1,
        "/move",
        Some(&format!("id={root_job}&to=h2&csrf={root_csrf}")),
        Some(&root),
    )?;
    ensure!(a.status == 303, "POST /move: {a:?}");
    let page = curl(&hosts, 1, "/", None, Some(&root))?;
    ensure!(
        page.body.contains(&format!("Moved {root_job} to h2")),
        "{}",
        page.body
    );
    wait_job(&hosts, None, &root_job, "ran on h2", |p| {
        p["host"] == "h2" && p["status"] == "running"
    })?;

    // The user kills their job from the page.
    let a = curl(
        &hosts,
        1,
        "/kill",
        Some(&format!("id={user_job}&signal=TERM&csrf={csrf}")),
        Some(&user),
    )?;
    ensure!(a.status == 303, "POST /kill: {a:?}");
    wait_job(&hosts, Some(USER), &user_job, "was killed", |p| {
        p["status"] == "killed SIGTERM"
    })?;

    // The metrics moved: one committed migration (with its downtime and bytes) and one dump
    // on h1, one restore on h2, relayed output both ways; and no command line anywhere.
    let start = Instant::now();
    let (h1, h2, text) = loop {
        let (h1, text) = metrics(&hosts, 1)?;
        let (h2, _) = metrics(&hosts, 2)?;
        if get(&h1, "ferry_relay_bytes_total{direction=\"in\"}")
            > get(&h1_before, "ferry_relay_bytes_total{direction=\"in\"}")
            || start.elapsed() > TIMEOUT
        {
            break (h1, h2, text);
        }
        thread::sleep(Duration::from_millis(300));
    };
    let moved = |m: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, key: &str| {
        get(m, key) - get(before, key)
    };
    for (m, before, key, want) in [
        (
            &h1,
            &h1_before,
            "ferry_migrations_total{outcome=\"committed\"}",
            1.0,
        ),
        (
            &h1,
            &h1_before,
            "ferry_migration_downtime_seconds_count",
            1.0,
        ),
        (&h1, &h1_before, "ferry_migration_wire_bytes_count", 1.0),
        (&h1, &h1_before, "ferry_dumps_total{outcome=\"ok\"}", 1.0),
        (&h2, &h2_before, "ferry_restores_total{outcome=\"ok\"}", 1.0),
    ] {
        ensure!(
            moved(m, before, key) == want,
            "{key} moved by {} (want {want})",
            moved(m, before, key)
        );
    }
    ensure!(
        moved(&h1, &h1_before, "ferry_relay_bytes_total{direction=\"in\"}") > 0.0,
        "no relayed bytes counted on h1"
    );
    ensure!(
        moved(
            &h2,
            &h2_before,
            "ferry_relay_bytes_total{direction=\"out\"}"
        ) > 0.0,
        "no relayed bytes counted on h2"
    );
    ensure!(get(&h1, "ferry_migration_wire_bytes_sum") > 0.0);
    ensure!(get(&h1, "ferry_agent_uptime_seconds") > 0.0);
    ensure!(
        get(&h1, "ferry_managed_processes{status=\"remote\"}") >= 1.0
            && get(&h1, "ferry_managed_processes{status=\"killed\"}") >= 1.0
            && get(&h2, "ferry_managed_processes{status=\"hosted\"}") >= 1.0,
        "managed processes by status: h1 {h1:?} h2 {h2:?}"
    );
    // Whole words: a number such as an uptime of 1.7384257810000002 s holds "1000" too.
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .collect();
    for word in ["ticker", "sleep", "1000"] {
        ensure!(!words.contains(&word), "the metrics name {word:?}:\n{text}");
    }

    // Logging out ends the session.
    let a = curl(
        &hosts,
        1,
        "/logout",
        Some(&format!("csrf={csrf}")),
        Some(&user),
    )?;
    ensure!(a.status == 303, "logout: {a:?}");
    let a = curl(&hosts, 1, "/", None, Some(&user))?;
    ensure!(a.status == 303, "the page after logout: {a:?}");
    Ok(())
}

// ---- The browser ----

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CERTUTIL: &str = "/usr/bin/certutil";
const DRIVER_PORT: u16 = 9515;

/// chromedriver in host h1's network namespace (the browser reaches the agents' addresses
/// from there), in a process group of its own; ended, with the browser it started, on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-i32::try_from(self.0.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// An NSS database in `home/.pki/nssdb` (where chromium looks) that trusts the cluster CA to
/// identify servers.
fn trust_ca(home: &Path, ca: &Path) -> Result<()> {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db)?;
    let db_arg = format!("sql:{}", db.display());
    for args in [
        vec!["-N", "-d", &db_arg, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db_arg,
            "-n",
            "ferry-test-ca",
            "-t",
            "C,,",
            "-i",
            ca.to_str().context("path")?,
        ],
    ] {
        let out = Command::new(CERTUTIL).args(&args).output()?;
        ensure!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs `f` on a thread of its own inside the network namespace of process `pid`, with a
/// runtime of its own.
fn in_netns<T: Send + 'static>(
    pid: i32,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("enter the host's network namespace")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the browser thread panicked"))?
}

/// Polls `f` until it gives `Some`, for [`TIMEOUT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > TIMEOUT {
            bail!("never {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text of cell `class` of job `id`'s row, if it is on the page.
async fn cell(c: &fantoccini::Client, id: &str, class: &str) -> Option<String> {
    use fantoccini::Locator;
    let sel = format!("tr[data-id='{id}'] td.{class}");
    c.find(Locator::Css(&sel)).await.ok()?.text().await.ok()
}

#[test]
fn browser_logs_in_sees_the_job_kills_it_and_it_is_gone() -> Result<()> {
    let Some(ctx) = setup("web-browser") else {
        return Ok(());
    };
    for (tool, package) in [
        (CHROMIUM, "chromium"),
        (CHROMEDRIVER, "chromium-driver"),
        (CERTUTIL, "libnss3-tools"),
    ] {
        if !Path::new(tool).exists() {
            skip(&format!("{tool} is missing (apt-get install {package})"));
            return Ok(());
        }
    }
    let hosts = Hosts::up(1).context("hosts up")?;
    let job = first_line(&ferry_ok(
        &hosts,
        1,
        Some(USER),
        &["run", "--detach", "--", "/bin/sleep", "1000"],
    )?)?;
    let _kill = KillJob(&hosts, job.clone());
    let token = first_line(&ferry_ok(&hosts, 1, Some(USER), &["web", "token"])?)?;

    let home = ctx.dir.path().join("home");
    trust_ca(&home, &hosts.tls_dir().join("ca.pem"))?;
    let profile: PathBuf = ctx.dir.path().join("profile");
    let log = ctx.dir.path().join("chromedriver.log");
    let init = hosts.init_pid(1);
    let driver = {
        use std::os::unix::process::CommandExt;
        Command::new("nsenter")
            .arg("--target")
            .arg(init.to_string())
            .args(["--net", "--"])
            .arg(CHROMEDRIVER)
            .arg(format!("--port={DRIVER_PORT}"))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("start chromedriver")?
    };
    let _driver = Driver(driver);

    // `ferry output` of the killed job, as its user: reading a finished job's output forgets it.
    let read_output = {
        let (socket, ferry, job) = (hosts.socket(1), ferry_bin(), job.clone());
        move || -> Result<()> {
            let out = Command::new("nsenter")
                .arg("--target")
                .arg(init.to_string())
                .args(["--net", "--pid", "--mount", "--uts"])
                .arg(format!("--setuid={USER}"))
                .arg(format!("--setgid={USER}"))
                .arg("--")
                .arg(ferry)
                .args(["output", &job])
                .env("FERRY_SOCKET", socket)
                .current_dir("/")
                .stdin(Stdio::null())
                .output()?;
            ensure!(
                out.status.success(),
                "ferry output {job}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        }
    };
    let url = format!("https://h1:{WEB_PORT}/");
    let addr = Hosts::addr(1);
    let result = in_netns(init, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(browse(
                url,
                addr,
                profile,
                token,
                job,
                Box::new(read_output),
            ))
    });
    if result.is_err()
        && let Ok(text) = std::fs::read_to_string(&log)
    {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!(
            "chromedriver log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
    result
}

async fn browse(
    url: String,
    addr: std::net::Ipv4Addr,
    profile: PathBuf,
    token: String,
    job: String,
    read_output: Box<dyn FnOnce() -> Result<()> + Send>,
) -> Result<()> {
    use fantoccini::{ClientBuilder, Locator};
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                format!("--host-resolver-rules=MAP h1 {addr}"),
            ],
        }),
    );
    let driver = format!("http://127.0.0.1:{DRIVER_PORT}");
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = eventually("reached chromedriver", || {
        let (caps, driver, connector) = (caps.clone(), driver.clone(), connector.clone());
        async move {
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&driver)
                .await
                .ok()
        }
    })
    .await?;
    let run = async {
        // No session: the login form. (Asked again while the page is not there: on a busy
        // machine the agent's web listener may answer a moment after the browser's first
        // try, which shows an error page at the same address.)
        let start = Instant::now();
        let here = loop {
            let here = match c.goto(&url).await {
                Ok(()) => c.current_url().await.ok(),
                Err(_) => None,
            };
            if here.as_ref().is_some_and(|u| u.path() == "/login") || start.elapsed() > TIMEOUT {
                break here;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ensure!(
            here.as_ref().is_some_and(|u| u.path() == "/login"),
            "not sent to the login form: {here:?}"
        );
        // A wrong token is refused.
        c.find(Locator::Id("token"))
            .await?
            .send_keys(&format!("fwt_{}", "0".repeat(64)))
            .await?;
        c.find(Locator::Id("login")).await?.click().await?;
        let error = eventually("showed the refusal", || async {
            c.find(Locator::Id("error")).await.ok()?.text().await.ok()
        })
        .await?;
        ensure!(error.contains("Wrong token"), "{error}");
        ensure!(
            c.find(Locator::Id("processes")).await.is_err(),
            "a wrong token shows the processes"
        );
        // The right one: the job, running.
        c.find(Locator::Id("token"))
            .await?
            .send_keys(&token)
            .await?;
        c.find(Locator::Id("login")).await?.click().await?;
        let status = eventually("listed the running job", || async {
            cell(&c, &job, "status").await.filter(|s| s == "running")
        })
        .await?;
        ensure!(status == "running");
        let command = cell(&c, &job, "command").await.unwrap_or_default();
        ensure!(command.contains("sleep 1000"), "command {command:?}");
        let user = c.find(Locator::Id("user")).await?.text().await?;
        ensure!(user == format!("uid {USER}"), "logged in as {user:?}");
        // Kill it with its button.
        c.find(Locator::Css(&format!("tr[data-id='{job}'] button.kill")))
            .await?
            .click()
            .await?;
        let flash = eventually("said it was killed", || async {
            c.find(Locator::Id("flash")).await.ok()?.text().await.ok()
        })
        .await?;
        ensure!(flash.contains(&format!("Sent SIGTERM to {job}")), "{flash}");
        eventually("showed the job killed", || async {
            c.refresh().await.ok()?;
            let s = cell(&c, &job, "status").await?;
            (s == "killed SIGTERM").then_some(())
        })
        .await?;
        ensure!(
            c.find(Locator::Css(&format!("tr[data-id='{job}'] button.kill")))
                .await
                .is_err(),
            "a killed job still has a kill button"
        );
        anyhow::Ok(())
    };
    let result = async {
        run.await?;
        // Once its user has read its output, the job is forgotten: the page lists it no more.
        read_output()?;
        eventually("dropped the forgotten job", || async {
            c.refresh().await.ok()?;
            c.find(Locator::Id("processes")).await.ok()?;
            cell(&c, &job, "id").await.is_none().then_some(())
        })
        .await
    }
    .await;
    let _ = c.close().await;
    result
}
