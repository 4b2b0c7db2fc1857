//! `ferry-compat`: the conformance suite. Every C victim in `tests/compat/` (and every workload in
//! `tests/workloads/` whose header names a `compat-object`) sets up one kernel object or
//! attribute and checks it itself. Each is started, checked, dumped (which ends it), restored with
//! the restore checker on, and checked again; the result is one table row:
//!
//! - `passed`: the restored process checked its object and kept counting (the victim checked
//!   twice before the dump too: a check must hold again after itself);
//! - `refused`: the dump refused, naming the object (the header's `compat-refuse` text) — a pass;
//! - `FAILED (stage)`: anything else — the victim would not build or check before the dump, the
//!   dump refused without naming the object, the restore failed (the checker included), or the
//!   restored process found a difference or hung (`silent`: the worst kind).
//!
//! Header keys (in the first 25 lines of the source, one per line, `compat-KEY: value`): `object`
//! (required), `refuse` (text the dump's refusal must contain), `dump-args` (extra `ferry dump`
//! arguments, e.g. `--tree`), `args` (arguments after the state directory), `libs` (linker
//! arguments).
//!
//! Usage: `ferry-compat [--list] [FILTER...]` (a victim runs when its name contains any FILTER).
//! Needs root; `FERRY_BIN` names the `ferry` binary under test. Exits 1 when a victim failed
//! that `tests/compat/known-failures` does not list.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use ferry_tests::{
    Spawn, TestCtx, Victim, alive, my_children, read_lines, setup, target_dir, workspace_root,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a victim may take to answer a check after the restore before it counts as hung.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One victim and what its header says about it.
#[derive(Debug)]
struct Case {
    name: String,
    source: PathBuf,
    object: String,
    refuse: Option<String>,
    dump_args: Vec<String>,
    libs: Vec<String>,
    args: Vec<String>,
}

#[derive(Debug)]
enum Outcome {
    Passed,
    Refused(String),
    Failed { stage: &'static str, why: String },
}

impl Outcome {
    fn passed(&self) -> bool {
        !matches!(self, Outcome::Failed { .. })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.iter().any(|a| a == "--list");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let cases = match cases() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    if list {
        for c in &cases {
            println!("{:<28} {}", c.name, c.object);
        }
        return ExitCode::SUCCESS;
    }
    let Some(ctx) = setup("compat") else {
        return ExitCode::FAILURE;
    };
    quiet_panics();

    let known = match known_failures() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(8).max(8);
    println!("{:<width$}  {:<44}  result", "victim", "object");
    let mut results = Vec::new();
    for case in &cases {
        let start = Instant::now();
        let outcome = run_case(&ctx, case);
        let shown = match &outcome {
            Outcome::Passed => "passed".to_owned(),
            Outcome::Refused(msg) => format!("refused at dump: {msg}"),
            Outcome::Failed { stage, why } if known.contains(&case.name) => {
                format!("FAILED ({stage}, known): {why}")
            }
            Outcome::Failed { stage, why } => format!("FAILED ({stage}): {why}"),
        };
        println!(
            "{:<width$}  {:<44}  {shown}  [{:.1} s]",
            case.name,
            clip(&case.object, 44),
            start.elapsed().as_secs_f64()
        );
        results.push(outcome);
    }
    let passed = results.iter().filter(|o| o.passed()).count();
    let refused = results
        .iter()
        .filter(|o| matches!(o, Outcome::Refused(_)))
        .count();
    let silent = results
        .iter()
        .filter(|o| {
            matches!(
                o,
                Outcome::Failed {
                    stage: "silent",
                    ..
                }
            )
        })
        .count();
    let failed = results.len() - passed;
    let unknown: Vec<&str> = cases
        .iter()
        .zip(&results)
        .filter(|(c, o)| !o.passed() && !known.contains(&c.name))
        .map(|(c, _)| c.name.as_str())
        .collect();
    let fixed: Vec<&str> = cases
        .iter()
        .zip(&results)
        .filter(|(c, o)| o.passed() && known.contains(&c.name))
        .map(|(c, _)| c.name.as_str())
        .collect();
    if !fixed.is_empty() {
        println!(
            "listed in tests/compat/known-failures but passed now: {}",
            fixed.join(" ")
        );
    }
    if !unknown.is_empty() {
        println!(
            "failed and not listed in tests/compat/known-failures: {}",
            unknown.join(" ")
        );
    }
    println!(
        "{passed} passed, {failed} failed ({refused} of the passed refused at dump naming the object; \
         {silent} of the failed silent differences; {} of the failed known)",
        failed - unknown.len()
    );
    if unknown.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Every victim: `tests/compat/*.c`, then the workloads that carry a `compat-object` header.
fn cases() -> Result<Vec<Case>, String> {
    let root = workspace_root().join("tests");
    let mut out = Vec::new();
    for dir in ["compat", "workloads"] {
        let dir = root.join(dir);
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| format!("read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "c"))
            .collect();
        entries.sort();
        for source in entries {
            let text = fs::read_to_string(&source)
                .map_err(|e| format!("read {}: {e}", source.display()))?;
            if let Some(case) = parse_header(&source, &text)? {
                out.push(case);
            }
        }
    }
    Ok(out)
}

/// The victims listed in `tests/compat/known-failures` (one name first on a line; `#` starts a
/// comment): failures found and not fixed yet. They run and count as failed like any other, but
/// only a failure not listed there makes the run fail — a regression, or a new victim's finding.
fn known_failures() -> Result<Vec<String>, String> {
    let path = workspace_root().join("tests/compat/known-failures");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split('#').next()?.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Reads the `compat-*` keys of a victim's header (its first 25 lines). A source without
/// `compat-object` is not a conformance victim.
fn parse_header(source: &Path, text: &str) -> Result<Option<Case>, String> {
    let name = source
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a UTF-8 file name", source.display()))?
        .to_owned();
    let mut case = Case {
        name,
        source: source.to_owned(),
        object: String::new(),
        refuse: None,
        dump_args: Vec::new(),
        libs: Vec::new(),
        args: Vec::new(),
    };
    for line in text.lines().take(25) {
        let line = line.trim_start_matches(['/', '*', ' ', '\t']);
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "compat-object" => case.object = value.to_owned(),
            "compat-refuse" => case.refuse = Some(value.to_owned()),
            "compat-dump-args" => {
                case.dump_args = value.split_whitespace().map(Into::into).collect()
            }
            "compat-args" => case.args = value.split_whitespace().map(Into::into).collect(),
            "compat-libs" => case.libs = value.split_whitespace().map(Into::into).collect(),
            _ => {}
        }
    }
    Ok((!case.object.is_empty()).then_some(case))
}

/// The message of the last panic (the harness's assertions panic), kept instead of printed.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_else(|| "panic".to_owned());
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = msg;
    }));
}

/// Runs `f`; a panic becomes `Err(its message)`.
fn attempt<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| one_line(&LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner())))
}

fn run_case(ctx: &TestCtx, case: &Case) -> Outcome {
    let fail = |stage, why: String| Outcome::Failed { stage, why };
    let exe = match compile(case) {
        Ok(exe) => exe,
        Err(why) => return fail("compile", why),
    };
    let state = Victim::new_state_dir(ctx, &case.name);
    let mut cmd = Command::new(&exe);
    cmd.arg(&state).args(&case.args);
    let mut victim = match attempt(|| Victim::spawn(cmd, state.clone(), Spawn::default())) {
        Ok(v) => v,
        Err(why) => return fail("start", why),
    };
    let outcome = exercise(ctx, case, &mut victim);
    // Everything the victim started, restored or not, ends with it.
    for pid in descendants(victim.pid) {
        victim.track(pid);
    }
    drop(victim);
    outcome
}

fn exercise(ctx: &TestCtx, case: &Case, victim: &mut Victim) -> Outcome {
    let fail = |stage, why: String| Outcome::Failed { stage, why };
    if let Err(why) = attempt(|| victim.wait_ready()) {
        return fail("start", why);
    }
    // Twice: a check must hold again after itself (as it must after the restore).
    for _ in 0..2 {
        match answer(victim) {
            Ok(line) if line.starts_with("ok") => {}
            Ok(line) => return fail("before dump", line),
            Err(why) => return fail("before dump", why),
        }
    }
    let members = descendants(victim.pid);
    let image = ctx.path(&format!("{}.ferry", case.name));
    let pid = victim.pid.to_string();
    let mut args = vec!["dump".to_owned(), pid, "-o".to_owned()];
    args.push(image.to_string_lossy().into_owned());
    args.extend(case.dump_args.iter().cloned());
    let dump = match attempt(|| ctx.ferry(&args)) {
        Ok(out) => out,
        Err(why) => return fail("dump", why),
    };
    if !dump.status.success() {
        let msg = error_line(&dump.stderr);
        return match &case.refuse {
            Some(want) if msg.to_lowercase().contains(&want.to_lowercase()) => {
                Outcome::Refused(msg)
            }
            _ => fail("dump", msg),
        };
    }
    if let Err(why) = attempt(|| victim.reap_killed()) {
        return fail("dump", why);
    }
    // The members of a dumped tree were reparented to us as they died: reap them, so their
    // PIDs are free again.
    for pid in &members {
        ferry_tests::kill_and_reap(*pid);
    }
    let before = my_children();
    let restore = match attempt(|| ctx.ferry(&["restore".as_ref(), image.as_os_str()])) {
        Ok(out) => out,
        Err(why) => return fail("restore", why),
    };
    for pid in my_children().difference(&before) {
        victim.track(*pid);
    }
    if !restore.status.success() {
        return fail("restore", error_line(&restore.stderr));
    }
    // `restored pid N`, for a tree followed by ` and its descendants …`.
    let Some(pid) = restore
        .stdout
        .strip_prefix("restored pid ")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<i32>().ok())
    else {
        return fail("restore", format!("unexpected output {:?}", restore.stdout));
    };
    victim.restored_as(pid);
    let tick = victim.last_tick();
    match answer(victim) {
        Ok(line) if line.starts_with("ok") => {}
        Ok(line) => return fail("silent", line),
        Err(why) => return fail("silent", why),
    }
    // A victim that counts must go on counting (some only answer checks).
    if tick > 0
        && let Err(why) = attempt(|| victim.wait_tick_beyond(tick))
    {
        return fail("silent", why);
    }
    Outcome::Passed
}

/// Sends SIGUSR1 and returns the victim's next `ok`/`BAD` line, or why there was none.
fn answer(victim: &Victim) -> Result<String, String> {
    let answers = |v: &Victim| -> Vec<String> {
        read_lines(&v.state.join("status"))
            .into_iter()
            .filter(|l| l.starts_with("ok") || l.starts_with("BAD"))
            .collect()
    };
    let before = answers(victim).len();
    kill(Pid::from_raw(victim.pid), Signal::SIGUSR1)
        .map_err(|e| format!("kill({}, SIGUSR1): {e}", victim.pid))?;
    let start = Instant::now();
    loop {
        if let Some(line) = answers(victim).get(before) {
            return Ok(line.clone());
        }
        if !alive(victim.pid) {
            return Err(format!(
                "died instead of answering a check; stderr: {}",
                one_line(&victim.stderr_text())
            ));
        }
        if start.elapsed() > ANSWER_TIMEOUT {
            return Err(format!(
                "no answer to a check within {ANSWER_TIMEOUT:?} (hung?); state {}",
                ferry_tests::proc_state(victim.pid).unwrap_or('?')
            ));
        }
        sleep(Duration::from_millis(5));
    }
}

/// Compiles the victim (again only when its source, common.h or a header beside the source is
/// newer than the executable).
fn compile(case: &Case) -> Result<PathBuf, String> {
    let include = workspace_root().join("tests").join("workloads");
    let out_dir = target_dir().join("ferry-compat");
    fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let out = out_dir.join(&case.name);
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    // The source, common.h, and the headers beside the source (shared victim bodies).
    let headers = case
        .source
        .parent()
        .and_then(|d| fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h"));
    let newest = [case.source.clone(), include.join("common.h")]
        .into_iter()
        .chain(headers)
        .filter_map(|p| modified(&p))
        .max();
    if let (Some(built), Some(newest)) = (modified(&out), newest)
        && built >= newest
    {
        return Ok(out);
    }
    let tmp = out_dir.join(format!(".{}.{}", case.name, std::process::id()));
    let output = Command::new("cc")
        .args(["-O1", "-g", "-Wall", "-pthread", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&tmp)
        .arg(&case.source)
        .args(&case.libs)
        .output()
        .map_err(|e| format!("run cc: {e}"))?;
    if !output.status.success() {
        return Err(one_line(&String::from_utf8_lossy(&output.stderr)));
    }
    fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(out)
}

/// Every process below PID (children first found, then theirs), from `/proc/*/stat`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The fields after the command name (which may hold spaces and parentheses).
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// The line of `ferry`'s stderr that says what went wrong (the `error:` line, else the last).
fn error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("ferry:"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no message)");
    one_line(line)
}

fn one_line(s: &str) -> String {
    clip(&s.split_whitespace().collect::<Vec<_>>().join(" "), 400)
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
