//! Start-up with a large config: how long the real `elevate serve` takes
//! to answer `/readyz` with 200, how long `elevate check-config` takes on
//! the same file, and the server's memory (VmRSS, VmHWM from
//! `/proc/PID/status`) at rest and under load.
//!
//! The generated config (written to a temporary directory):
//! `BENCH_USERS` users (10,000), each with an e-mail, one token hash and 2
//! of `BENCH_GROUPS` groups (500); one dry-run target with `BENCH_ROLES`
//! roles (5) and `BENCH_RESOURCES` resources (5,000) in an OU tree 4 levels
//! deep — 4 roots, 20 OUs below them, 200 below those, and the remaining
//! resources as tagged (`env`, `team`) accounts under the 200; then
//! `BENCH_ELIGIBILITIES` eligibilities (2,000), each for one group, by turns
//! over everything under a level-2 OU, under a level-3 OU, by tags, or
//! three named accounts, 2 roles each, 4 in 5 needing approval; and
//! `BENCH_POLICIES` approval policies (500): the first 4 cover everything
//! under each root (so nothing is left without approvers), the rest a
//! level-3 OU or a `team` tag and one role.
//!
//! Measured, in this order:
//! 1. `elevate check-config FILE`, and in the bench the TOML parse alone
//!    (to tell parsing from checking);
//! 2. `BENCH_STARTS` (5) starts on a fresh database each: spawn → first
//!    200 from `/readyz` (polled every 5 ms), then SIGTERM → exit;
//! 3. one start on an existing database (the last fresh one), then memory
//!    at rest (1 s after ready), 20 `GET /api/v1/eligible` one at a time,
//!    then `BENCH_LOAD_CLIENTS` (16) clients for `BENCH_LOAD_SECS` (10) s,
//!    each looping: a random user asks `GET /api/v1/eligible`, creates a
//!    request for one of the listed roles that needs approval, and an
//!    approver of it approves (grants are applied by the dry-run provider
//!    and left active); memory is sampled every 50 ms and the peak
//!    reported, with the server's CPU use (from `/proc/PID/stat`);
//! 4. one more start on that database, now holding the load's requests.
//!
//! Time budget: the repeated fresh starts stop early, and step 4 is
//! skipped, when they would take the bench past `BENCH_BUDGET_SECS` (120);
//! what was skipped is printed. Steps 1 and 3 always run, so a slow start
//! makes the bench take longer than the budget rather than measure nothing.
//!
//! The bench runs the `elevate` binary that `cargo bench` builds next to it
//! (`CARGO_BIN_EXE_elevate`, bench profile). Server logs go to
//! `serve-N.log` in the temporary directory (`BENCH_KEEP=1` keeps it).
//! `BENCH_WRITE_CONFIG=PATH` only writes the generated config to PATH (to
//! profile `elevate check-config PATH` by hand) and stops.
//!
//! `cargo bench -p elevate --bench startup` (`--json` for JSON).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_elevate");
const L1: usize = 4;
const L2_PER: usize = 5;
const L3_PER: usize = 10;
const L2: usize = L1 * L2_PER;
const L3: usize = L2 * L3_PER;
const OUS: usize = L1 + L2 + L3;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({
        "p50": percentile(&v, 0.5),
        "p99": percentile(&v, 0.99),
        "min": v.first().copied().unwrap_or(f64::NAN),
        "max": v.last().copied().unwrap_or(f64::NAN),
        "n": v.len(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Clone, Copy)]
struct World {
    users: usize,
    groups: usize,
    resources: usize,
    roles: usize,
    eligibilities: usize,
    policies: usize,
}

impl World {
    fn groups_of(&self, u: usize) -> [usize; 2] {
        [u % self.groups, (u * 7 + 3) % self.groups]
    }
    fn l1(a: usize) -> String {
        format!("ou{a}")
    }
    /// Level-2 OU number `i` (0..L2).
    fn l2(i: usize) -> String {
        format!("ou{}-{}", i / L2_PER, i % L2_PER)
    }
    /// Level-3 OU number `i` (0..L3).
    fn l3(i: usize) -> String {
        let two = i / L3_PER;
        format!("{}-{}", Self::l2(two), i % L3_PER)
    }
    fn accounts(&self) -> usize {
        self.resources.saturating_sub(OUS).max(1)
    }
    fn account(i: usize) -> String {
        format!("acct{i:06}")
    }
    fn env_tag(i: usize) -> &'static str {
        ["prod", "staging", "dev"][i % 3]
    }
    fn team_tag(i: usize) -> String {
        format!("t{}", i % 25)
    }

    fn config(&self) -> String {
        let mut s = String::with_capacity(4 << 20);
        s.push_str("admins = [\"group:g0\"]\nauditors = [\"group:g1\"]\n");
        s.push_str("[server]\nlisten = \"127.0.0.1:0\"\n[limits]\nmin_duration = \"1m\"\n\n");
        for u in 0..self.users {
            let [a, b] = self.groups_of(u);
            s.push_str(&format!(
                "[[users]]\nname = \"u{u}\"\nemail = \"u{u}@example.com\"\ngroups = [\"g{a}\", \"g{b}\"]\ntoken_hashes = [\"{}\"]\n\n",
                elevate::auth::token_hash(&format!("t-u{u}"))
            ));
        }
        let roles: Vec<String> = (0..self.roles).map(|r| format!("\"r{r}\"")).collect();
        s.push_str(&format!(
            "[[targets]]\nid = \"aws\"\nkind = \"dry-run\"\nroles = [{}]\n\n",
            roles.join(", ")
        ));
        for a in 0..L1 {
            s.push_str(&format!(
                "[[targets.resources]]\nid = \"{}\"\n",
                Self::l1(a)
            ));
        }
        for i in 0..L2 {
            s.push_str(&format!(
                "[[targets.resources]]\nid = \"{}\"\nparent = \"{}\"\n",
                Self::l2(i),
                Self::l1(i / L2_PER)
            ));
        }
        for i in 0..L3 {
            s.push_str(&format!(
                "[[targets.resources]]\nid = \"{}\"\nparent = \"{}\"\n",
                Self::l3(i),
                Self::l2(i / L3_PER)
            ));
        }
        for i in 0..self.accounts() {
            s.push_str(&format!(
                "[[targets.resources]]\nid = \"{}\"\nparent = \"{}\"\ntags = {{ env = \"{}\", team = \"{}\" }}\n",
                Self::account(i),
                Self::l3(i % L3),
                Self::env_tag(i),
                Self::team_tag(i / 3)
            ));
        }
        s.push('\n');
        for k in 0..self.eligibilities {
            let n = k / 4;
            let selector = match k % 4 {
                0 => format!("{{ under = [\"{}\"] }}", Self::l2(n % L2)),
                1 => format!("{{ under = [\"{}\"] }}", Self::l3(n % L3)),
                2 => format!(
                    "{{ tags = {{ env = \"{}\", team = \"{}\" }} }}",
                    Self::env_tag(n),
                    Self::team_tag(n / 3)
                ),
                _ => {
                    let a = self.accounts();
                    format!(
                        "{{ ids = [\"{}\", \"{}\", \"{}\"] }}",
                        Self::account(n % a),
                        Self::account((n * 7 + 1) % a),
                        Self::account((n * 13 + 2) % a)
                    )
                }
            };
            s.push_str(&format!(
                "[[eligibilities]]\nid = \"e{k}\"\nsubjects = [\"group:g{}\"]\ntarget = \"aws\"\nresources = {selector}\nroles = [\"r{}\", \"r{}\"]\nmax_duration = \"8h\"\napproval_required = {}\n\n",
                k % self.groups,
                k % self.roles,
                (k + 2) % self.roles,
                k % 5 != 0
            ));
        }
        for p in 0..self.policies {
            let approvers = format!("group:g{}", (p * 3 + 1) % self.groups);
            if p < L1 {
                s.push_str(&format!(
                    "[[approval_policies]]\nid = \"p{p}\"\ntarget = \"aws\"\nresources = {{ under = [\"{}\"] }}\napprovers = [\"{approvers}\"]\n\n",
                    Self::l1(p)
                ));
            } else if p % 2 == 0 {
                s.push_str(&format!(
                    "[[approval_policies]]\nid = \"p{p}\"\ntarget = \"aws\"\nresources = {{ under = [\"{}\"] }}\napprovers = [\"{approvers}\"]\nquorum = 1\npending_timeout = \"2h\"\n\n",
                    Self::l3(p % L3)
                ));
            } else {
                s.push_str(&format!(
                    "[[approval_policies]]\nid = \"p{p}\"\ntarget = \"aws\"\nresources = {{ tags = {{ team = \"{}\" }} }}\nroles = [\"r{}\"]\napprovers = [\"{approvers}\"]\n\n",
                    Self::team_tag(p),
                    p % self.roles
                ));
            }
        }
        s
    }
}

// ---- the server process ----------------------------------------------------

struct Server {
    child: Child,
    base: String,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Memory of a process from `/proc/PID/status`, in KiB: (VmRSS, VmHWM).
fn memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time a process has used (user + system), from `/proc/PID/stat`;
/// Linux reports it in USER_HZ ticks, which are 1/100 s.
fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may
    // contain spaces: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Spawns `elevate serve` and waits for `/readyz` to answer 200; returns
/// the server and the time it took.
async fn start(
    http: &reqwest::Client,
    config: &Path,
    db: &Path,
    log: &Path,
) -> Result<(Server, Duration)> {
    let port = free_port()?;
    let log_file = std::fs::File::create(log)?;
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!("sqlite://{}", db.display()))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot run {BIN}"))?;
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = t + Duration::from_secs(600);
    loop {
        if let Ok(r) = http.get(&url).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "elevate serve exited with {status} before it was ready; see {}",
                log.display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("elevate serve was not ready after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = t.elapsed();
    Ok((
        Server {
            child,
            base: format!("http://127.0.0.1:{port}/api/v1"),
        },
        ready,
    ))
}

/// SIGTERM, then wait for the exit (SIGKILL after 30 s); returns how long
/// the graceful stop took.
async fn stop(mut server: Server) -> Result<Duration> {
    let t = Instant::now();
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = t + Duration::from_secs(30);
    loop {
        if server.child.try_wait()?.is_some() {
            return Ok(t.elapsed());
        }
        if Instant::now() > deadline {
            server.child.kill()?;
            server.child.wait()?;
            bail!("elevate serve did not stop within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- load ------------------------------------------------------------------

#[derive(Default)]
struct LoadResult {
    eligible_ms: Vec<f64>,
    eligible_entries: Vec<f64>,
    create_ms: Vec<f64>,
    approve_ms: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

impl LoadResult {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

async fn call(req: reqwest::RequestBuilder) -> Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{status} {v}");
    }
    Ok(v)
}

async fn load_client(
    http: reqwest::Client,
    base: String,
    world: World,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> LoadResult {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = LoadResult::default();
    while !stop.load(Ordering::Relaxed) {
        let u = rng.gen_range(0..world.users);
        let token = format!("t-u{u}");
        let t = Instant::now();
        let eligible = match call(http.get(format!("{base}/eligible")).bearer_auth(&token)).await {
            Ok(v) => v,
            Err(e) => {
                out.error(format!("eligible: {e}"));
                continue;
            }
        };
        out.eligible_ms.push(ms(t.elapsed()));
        let entries: Vec<&Value> = eligible["eligible"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["approval_required"] == true)
                    .collect()
            })
            .unwrap_or_default();
        out.eligible_entries
            .push(eligible["eligible"].as_array().map_or(0, |a| a.len()) as f64);
        if entries.is_empty() {
            continue;
        }
        let pick = entries[rng.gen_range(0..entries.len())];
        let t = Instant::now();
        let created = match call(
            http.post(format!("{base}/requests"))
                .bearer_auth(&token)
                .json(&json!({
                    "target": pick["target"], "resource": pick["resource"], "role": pick["role"],
                    "duration": "1h", "reason": "start-up bench load"
                })),
        )
        .await
        {
            Ok(v) => v,
            Err(e) => {
                out.error(format!("create: {e}"));
                continue;
            }
        };
        out.create_ms.push(ms(t.elapsed()));
        if created["state"] != "pending" {
            continue;
        }
        // An approver: user N is in group gN (see `World::groups_of`);
        // nobody approves their own request.
        let Some(group) = created["approvers"]
            .as_array()
            .and_then(|a| a.iter().find_map(|s| s.as_str()?.strip_prefix("group:g")))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            out.error(format!("no approver group in {}", created["approvers"]));
            continue;
        };
        let approver = if group == u {
            group + world.groups
        } else {
            group
        };
        let id = created["id"].as_str().unwrap_or_default();
        let t = Instant::now();
        match call(
            http.post(format!("{base}/requests/{id}/approve"))
                .bearer_auth(format!("t-u{approver}"))
                .json(&json!({})),
        )
        .await
        {
            Ok(_) => out.approve_ms.push(ms(t.elapsed())),
            Err(e) => out.error(format!("approve: {e}")),
        }
    }
    out
}

async fn run_load(
    http: &reqwest::Client,
    server: &Server,
    world: World,
    clients: usize,
    secs: usize,
) -> Result<Value> {
    let pid = server.child.id();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let sampler = {
        let stop_flag = stop_flag.clone();
        let samples = samples.clone();
        tokio::spawn(async move {
            while !stop_flag.load(Ordering::Relaxed) {
                if let (Some((rss, _)), Ok(mut s)) = (memory(pid), samples.lock()) {
                    s.push(rss);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(load_client(
            http.clone(),
            server.base.clone(),
            world,
            c as u64 + 1,
            stop_flag.clone(),
        ));
    }
    let t = Instant::now();
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
    stop_flag.store(true, Ordering::Relaxed);
    let mut all = LoadResult::default();
    while let Some(r) = tasks.join_next().await {
        let r = r?;
        all.eligible_ms.extend(r.eligible_ms);
        all.eligible_entries.extend(r.eligible_entries);
        all.create_ms.extend(r.create_ms);
        all.approve_ms.extend(r.approve_ms);
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let server_cpu = match (cpu_before, cpu_time(pid)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / wall),
        _ => None,
    };
    sampler.await?;
    let after = memory(pid);
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let peak_rss = samples.iter().copied().max();
    let entries =
        all.eligible_entries.iter().sum::<f64>() / all.eligible_entries.len().max(1) as f64;
    Ok(json!({
        "clients": clients,
        "wall_s": wall,
        "eligible_calls": all.eligible_ms.len(),
        "eligible_per_s": all.eligible_ms.len() as f64 / wall,
        "eligible_entries_avg": entries,
        "eligible_ms": stats(all.eligible_ms),
        "creates": all.create_ms.len(),
        "create_ms": stats(all.create_ms),
        "approvals": all.approve_ms.len(),
        "approve_ms": stats(all.approve_ms),
        "server_cpu_cores": server_cpu,
        "errors": all.errors,
        "first_error": all.first_error,
        "rss_samples": samples.len(),
        "peak_rss_kib": peak_rss,
        "rss_after_kib": after.map(|m| m.0),
        "hwm_after_kib": after.map(|m| m.1),
    }))
}

/// `GET /api/v1/eligible` with nothing else running, for `n` users.
async fn eligible_alone(
    http: &reqwest::Client,
    server: &Server,
    world: World,
    n: usize,
) -> Result<Value> {
    let mut lat = Vec::with_capacity(n);
    let mut entries = 0usize;
    for i in 0..n {
        let u = (i * 7919) % world.users;
        let t = Instant::now();
        let v = call(
            http.get(format!("{}/eligible", server.base))
                .bearer_auth(format!("t-u{u}")),
        )
        .await
        .with_context(|| format!("GET /eligible as u{u}"))?;
        lat.push(ms(t.elapsed()));
        entries += v["eligible"].as_array().map_or(0, |a| a.len());
    }
    Ok(json!({
        "calls": n,
        "entries_avg": entries as f64 / n.max(1) as f64,
        "ms": stats(lat),
    }))
}

// ---- the run ---------------------------------------------------------------

fn check_config(file: &Path) -> Result<(Duration, String)> {
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {BIN}"))?;
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        bail!(
            "check-config failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let warnings = String::from_utf8_lossy(&out.stderr).lines().count();
    Ok((took, format!("{stdout} [{warnings} line(s) on stderr]")))
}

async fn run() -> Result<Value> {
    let began = Instant::now();
    let world = World {
        users: env("BENCH_USERS", 10_000).max(2),
        groups: env("BENCH_GROUPS", 500).max(2),
        resources: env("BENCH_RESOURCES", 5_000),
        roles: env("BENCH_ROLES", 5).max(1),
        eligibilities: env("BENCH_ELIGIBILITIES", 2_000).max(1),
        policies: env("BENCH_POLICIES", 500).max(L1),
    };
    if world.users < 2 * world.groups {
        bail!("BENCH_USERS must be at least twice BENCH_GROUPS (approvers are picked as u{{N}} and u{{N + groups}})");
    }
    let starts = env("BENCH_STARTS", 5).max(1);
    let budget = Duration::from_secs(env("BENCH_BUDGET_SECS", 120) as u64);
    let load_clients = env("BENCH_LOAD_CLIENTS", 16).max(1);
    let load_secs = env("BENCH_LOAD_SECS", 10);

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("elevate.toml");
    let t = Instant::now();
    let text = world.config();
    let generate = t.elapsed();
    std::fs::write(&file, &text)?;
    if let Ok(path) = std::env::var("BENCH_WRITE_CONFIG") {
        std::fs::write(&path, &text)?;
        return Ok(json!({ "written": path, "bytes": text.len() }));
    }

    // The TOML parse alone, to tell parsing from checking.
    let t = Instant::now();
    let _: toml::Value = toml::from_str(&text)?;
    let toml_only = t.elapsed();
    let (check, check_output) = check_config(&file)?;

    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    let log = |n: usize| dir.path().join(format!("serve-{n}.log"));
    let mut fresh = Vec::new();
    let mut stops = Vec::new();
    let mut db = PathBuf::new();
    let mut skipped = Vec::new();
    for i in 0..starts {
        // Leave time for the start on the existing database that follows.
        if let Some(last) = fresh.last() {
            let per = Duration::from_secs_f64(*last / 1000.0);
            if began.elapsed() + per * 2 > budget {
                skipped.push(format!(
                    "fresh-database starts {}..{starts} (budget BENCH_BUDGET_SECS={}s)",
                    i + 1,
                    budget.as_secs()
                ));
                break;
            }
        }
        db = dir.path().join(format!("fresh-{i}.db"));
        let (server, ready) = start(&http, &file, &db, &log(i)).await?;
        fresh.push(ms(ready));
        stops.push(ms(stop(server).await?));
    }

    // Existing database; then memory at rest and under load.
    let (server, existing_ready) = start(&http, &file, &db, &log(starts)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest = memory(server.child.id()).context("cannot read /proc/PID/status")?;
    let alone = eligible_alone(&http, &server, world, 20).await?;
    let load = run_load(&http, &server, world, load_clients, load_secs).await?;
    stops.push(ms(stop(server).await?));

    // And once more, on the database the load filled.
    let loaded_ready =
        if began.elapsed() + Duration::from_secs_f64(existing_ready.as_secs_f64()) > budget {
            skipped.push(format!(
                "the start after the load (budget BENCH_BUDGET_SECS={}s)",
                budget.as_secs()
            ));
            None
        } else {
            let (server, ready) = start(&http, &file, &db, &log(starts + 1)).await?;
            stops.push(ms(stop(server).await?));
            Some(ms(ready))
        };

    if std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1") {
        let kept = dir.keep();
        eprintln!("kept {}", kept.display());
    }

    Ok(json!({
        "config": {
            "users": world.users,
            "groups": world.groups,
            "resources": world.resources.max(OUS + 1),
            "roles": world.roles,
            "eligibilities": world.eligibilities,
            "approval_policies": world.policies,
            "bytes": text.len(),
            "lines": text.lines().count(),
            "generate_ms": ms(generate),
        },
        "toml_parse_only_ms": ms(toml_only),
        "check_config_ms": ms(check),
        "check_config_output": check_output,
        "ready_fresh_db_ms": stats(fresh),
        "ready_existing_db_ms": ms(existing_ready),
        "ready_after_load_ms": loaded_ready,
        "stop_ms": stats(stops),
        "rest": {"rss_kib": rest.0, "hwm_kib": rest.1},
        "eligible_alone": alone,
        "load": load,
        "skipped": skipped,
        "bench_s": began.elapsed().as_secs_f64(),
    }))
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; nothing else to parse.
    let json_out = std::env::args().any(|a| a == "--json");
    let runtime = tokio::runtime::Runtime::new()?;
    let r = runtime.block_on(run())?;
    if json_out || !r["written"].is_null() {
        println!("{r}");
        return Ok(());
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mib = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / 1024.0;
    let c = &r["config"];
    println!(
        "elevate start-up: {} users in {} groups, {} resources, {} roles, {} eligibilities, {} approval policies",
        c["users"], c["groups"], c["resources"], c["roles"], c["eligibilities"], c["approval_policies"]
    );
    println!(
        "  config file                  {:.1} MiB, {} lines",
        f(&c["bytes"]) / 1048576.0,
        c["lines"],
    );
    println!(
        "  TOML parse alone (in bench)  {:9.1} ms",
        f(&r["toml_parse_only_ms"]),
    );
    println!(
        "  elevate check-config         {:9.1} ms   ({})",
        f(&r["check_config_ms"]),
        r["check_config_output"].as_str().unwrap_or("")
    );
    let s = &r["ready_fresh_db_ms"];
    println!(
        "  serve → /readyz, fresh DB    p50 {:9.1} ms   min {:9.1} ms   max {:9.1} ms   ({} runs)",
        f(&s["p50"]),
        f(&s["min"]),
        f(&s["max"]),
        s["n"]
    );
    let after_load = match r["ready_after_load_ms"].as_f64() {
        Some(v) => format!("{v:9.1} ms"),
        None => "skipped".into(),
    };
    println!(
        "  serve → /readyz, existing DB     {:9.1} ms   after the load: {after_load}",
        f(&r["ready_existing_db_ms"]),
    );
    for s in r["skipped"].as_array().into_iter().flatten() {
        println!("    skipped: {}", s.as_str().unwrap_or(""));
    }
    println!(
        "  SIGTERM → exit               p50 {:9.1} ms   max {:9.1} ms",
        f(&r["stop_ms"]["p50"]),
        f(&r["stop_ms"]["max"])
    );
    println!(
        "  memory at rest               VmRSS {:7.1} MiB   VmHWM {:7.1} MiB",
        mib(&r["rest"]["rss_kib"]),
        mib(&r["rest"]["hwm_kib"])
    );
    let a = &r["eligible_alone"];
    println!(
        "  GET /eligible, 1 client      p50 {:9.1} ms   max {:9.1} ms   ({} calls, {:.0} entries avg)",
        f(&a["ms"]["p50"]),
        f(&a["ms"]["max"]),
        a["calls"],
        f(&a["entries_avg"])
    );
    let l = &r["load"];
    println!(
        "  memory under load            peak VmRSS {:7.1} MiB   after: VmRSS {:7.1} MiB   VmHWM {:7.1} MiB",
        mib(&l["peak_rss_kib"]),
        mib(&l["rss_after_kib"]),
        mib(&l["hwm_after_kib"])
    );
    println!(
        "  load: {} clients × {:.1} s, server CPU {:.2} cores: {} eligible calls ({:.1}/s, {:.0} entries avg), {} creates, {} approvals, {} errors",
        l["clients"],
        f(&l["wall_s"]),
        f(&l["server_cpu_cores"]),
        l["eligible_calls"],
        f(&l["eligible_per_s"]),
        f(&l["eligible_entries_avg"]),
        l["creates"],
        l["approvals"],
        l["errors"]
    );
    for (label, k) in [
        ("GET /eligible", "eligible_ms"),
        ("POST /requests", "create_ms"),
        ("POST approve", "approve_ms"),
    ] {
        println!(
            "    {label:<16} p50 {:8.1} ms   p99 {:8.1} ms   max {:8.1} ms",
            f(&l[k]["p50"]),
            f(&l[k]["p99"]),
            f(&l[k]["max"])
        );
    }
    if let Some(e) = l["first_error"].as_str() {
        println!("    first error: {e}");
    }
    println!("  (bench took {:.0} s)", f(&r["bench_s"]));
    Ok(())
}
