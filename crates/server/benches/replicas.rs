//! Lifecycle throughput with several replicas on one PostgreSQL: 1, 2 and 3
//! `elevate serve` processes sharing one database, next to one process on
//! a SQLite file, all driven the same way over HTTP in the same run.
//!
//! The lifecycle and the clients are those of the `throughput` bench: the
//! requester creates a request (1 h, dry-run target), an approver approves
//! it (quorum 1), the client polls `GET /api/v1/requests/ID` until the
//! state is `active` (a worker has applied it), the requester revokes it,
//! and the client polls until `revoked` (a worker has removed it).
//! `BENCH_CLIENTS` clients run lifecycles back to back until
//! `BENCH_LIFECYCLES` are done; client `c` always acts as requester `r{c}`
//! and approver `a{c % 4}`, so concurrent lifecycles never share a grant
//! key. Polling backs off from 1 ms to `BENCH_POLL_MAX_MS`.
//!
//! With N replicas, lifecycle number k starts at replica i = k mod N and
//! walks round the ring: create on i, approve on i+1, poll until `active`
//! and revoke on i+2, poll until `revoked` on i+3. Every step after the
//! first therefore reads or writes through a different process than the
//! one before it (when N > 1), and the apply and remove jobs run on
//! whichever replica claims them first. With N = 1 (and on SQLite) every
//! step goes to the one process.
//!
//! Setup: a throwaway PostgreSQL cluster (`elevate_testkit::PgCluster`,
//! which runs with `fsync=off`: its commits are not durable, unlike the
//! SQLite store's `synchronous=FULL`), one fresh database per replica count
//! (`bench_n1`, `bench_n2`, ...), one config file (the users and policies
//! of `throughput`, a dry-run target, plus an auditor), and N processes of
//! the real binary (`CARGO_BIN_EXE_elevate`, bench profile) started at once
//! with `serve --config FILE --listen 127.0.0.1:PORT`, each waited for
//! until `/readyz` answers 200 (database reachable, migrations current).
//! Servers log at `warn` (`ELEVATE_LOG`, if set, wins) to files in a
//! temporary directory; they are stopped with SIGTERM after each run.
//!
//! Checked after each run, failing the bench otherwise: every lifecycle
//! reached `revoked` (the polling), `GET /api/v1/audit/verify` reports an
//! intact chain, the database holds exactly `BENCH_LIFECYCLES` requests,
//! all `revoked`, no provider job is left queued (`/metrics`), and the
//! replicas together recorded one `grant.activated` and one
//! `grant.removed` per lifecycle. Also reported:
//! - which replica ran the provider jobs (its `grant.activated` and
//!   `grant.removed` transitions, from each process's `/metrics`);
//! - how busy the write lock was: `pg_locks` sampled every 20 ms on a
//!   separate connection — the share of samples in which some replica held
//!   the store's advisory write lock, and the mean number of writers
//!   waiting for it;
//! - where the CPU went during the run, in cores (CPU seconds per second,
//!   from `/proc`): the whole machine, the replicas, PostgreSQL (the
//!   postmaster and its children), the bench's own clients, and the rest.
//!
//! `cargo bench -p elevate --bench replicas` (`--json` for JSON).
//! Environment: `BENCH_LIFECYCLES` (600), `BENCH_CLIENTS` (32),
//! `BENCH_REPLICAS` (`1,2,3`: the replica counts to run, in order),
//! `BENCH_SQLITE` (1; 0 skips the SQLite run), `BENCH_POLL_MAX_MS` (20).
//! Needs PostgreSQL's server binaries (see `elevate_testkit`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use elevate_testkit::PgCluster;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

mod lifecycle;

use lifecycle::basics::env;
use lifecycle::{client, config, get, summarize, Laps};

const BIN: &str = env!("CARGO_BIN_EXE_elevate");
/// Linux reports process and machine CPU times in 1/100 s ticks.
fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

#[derive(Clone)]
struct Params {
    lifecycles: usize,
    clients: usize,
    replicas: Vec<usize>,
    sqlite: bool,
    poll_max: Duration,
}

// ---- config and processes --------------------------------------------------

struct Replica {
    child: Child,
    /// `http://127.0.0.1:PORT`
    origin: String,
    log: PathBuf,
}

/// The running processes of one run; whatever is still running when this
/// is dropped (an error part-way) is killed.
struct Replicas(Vec<Replica>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for r in &mut self.0 {
            if let Ok(None) = r.child.try_wait() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts `n` processes on `config` at once and waits until every one
/// answers `/readyz` with 200.
async fn spawn(
    http: &reqwest::Client,
    dir: &Path,
    label: &str,
    config: &Path,
    n: usize,
) -> Result<Replicas> {
    let mut replicas = Replicas(Vec::with_capacity(n));
    for i in 0..n {
        let port = elevate_testkit::free_port()?;
        let log = dir.join(format!("{label}-{i}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if std::env::var_os("ELEVATE_LOG").is_none() {
            command.env("ELEVATE_LOG", "warn");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {BIN}"))?;
        replicas.0.push(Replica {
            child,
            origin: format!("http://127.0.0.1:{port}"),
            log,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, r) in replicas.0.iter_mut().enumerate() {
        let url = format!("{}/readyz", r.origin);
        loop {
            if let Ok(resp) = http.get(&url).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            if let Some(status) = r.child.try_wait()? {
                bail!(
                    "{label} replica {i} exited with {status} before it was ready:\n{}",
                    log_tail(&r.log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{label} replica {i} was not ready after 60 s:\n{}",
                    log_tail(&r.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(replicas)
}

/// SIGTERM to every process, then wait for them (SIGKILL after 30 s).
async fn stop(mut replicas: Replicas) -> Result<()> {
    for r in &replicas.0 {
        let _ = Command::new("kill")
            .args(["-TERM", &r.child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for r in &mut replicas.0 {
        while r.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("an elevate serve did not stop within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

// ---- CPU accounting ----------------------------------------------------------

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may contain spaces): index 0 is field 3 (state).
fn proc_stat(pid: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // The state letter becomes 0; the numbers stay in place.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU time a process has used (user + system, fields 14 and 15).
fn process_cpu(pid: &str) -> Option<Duration> {
    let f = proc_stat(pid)?;
    Some(ticks(f.get(11)? + f.get(12)?))
}

/// CPU time of a PostgreSQL server: the postmaster (with its reaped
/// children, fields 16 and 17) and its live children (backends, walwriter,
/// checkpointer, ...).
fn postgres_cpu(postmaster: u32) -> Option<Duration> {
    let pm = u64::from(postmaster);
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(f) = proc_stat(pid) else { continue };
        let used = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        if pid.parse::<u64>().ok() == Some(pm) {
            total += used + f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
        } else if f.get(1).copied() == Some(pm) {
            total += used;
        }
    }
    Some(ticks(total))
}

/// The postmaster's PID, from `postmaster.pid` in the cluster's data
/// directory (`data/` under the testkit cluster's directory).
fn postmaster_pid(cluster: &PgCluster) -> Option<u32> {
    let text = std::fs::read_to_string(cluster.socket_dir().join("data/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// (busy, total) CPU time of the whole machine, all cores, from `/proc/stat`.
fn machine_cpu() -> Option<(Duration, Duration)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((ticks(total.saturating_sub(idle)), ticks(total)))
}

struct CpuMark {
    machine: Option<(Duration, Duration)>,
    bench: Option<Duration>,
    servers: Vec<Option<Duration>>,
    postgres: Option<Duration>,
}

fn cpu_mark(replicas: &Replicas, postmaster: Option<u32>) -> CpuMark {
    CpuMark {
        machine: machine_cpu(),
        bench: process_cpu("self"),
        postgres: postmaster.and_then(postgres_cpu),
        servers: replicas
            .0
            .iter()
            .map(|r| process_cpu(&r.child.id().to_string()))
            .collect(),
    }
}

/// Where the CPU went between two marks, in seconds of CPU per second of
/// wall time (2.0 = both cores of a 2-core machine busy).
fn cpu_use(a: &CpuMark, b: &CpuMark, wall: Duration) -> Value {
    let secs = |x: Option<Duration>, y: Option<Duration>| match (x, y) {
        (Some(x), Some(y)) => Some(y.saturating_sub(x).as_secs_f64() / wall.as_secs_f64()),
        _ => None,
    };
    let busy = secs(a.machine.map(|m| m.0), b.machine.map(|m| m.0));
    let bench = secs(a.bench, b.bench);
    let servers: Option<f64> = a
        .servers
        .iter()
        .zip(&b.servers)
        .map(|(x, y)| secs(*x, *y))
        .sum();
    let postgres = secs(a.postgres, b.postgres);
    let other = match (busy, bench, servers) {
        (Some(m), Some(c), Some(s)) => Some((m - c - s - postgres.unwrap_or(0.0)).max(0.0)),
        _ => None,
    };
    json!({
        "machine_busy_cores": busy,
        "bench_clients_cores": bench,
        "elevate_cores": servers,
        "postgres_cores": postgres,
        "other_cores": other,
    })
}

// ---- the write lock --------------------------------------------------------

/// The store's write lock (`WRITE_LOCK_KEY` in `crates/store/src/lib.rs`,
/// 0x656c_6576_0001), as `pg_locks` shows a bigint advisory key: high 32
/// bits in `classid`, low 32 bits in `objid`, `objsubid` 1.
const WRITE_LOCK_CLASSID: i64 = 0x656c;
const WRITE_LOCK_OBJID: i64 = 0x6576_0001;
const LOCK_SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Samples `pg_locks` on `url` every 20 ms until `stop`: how often a
/// replica held the write lock, and how many other replicas' writers were
/// waiting for it (each replica lets one writer at a time through its own
/// mutex, so at most N − 1 wait here).
async fn sample_write_lock(url: String, stop: Arc<AtomicBool>) -> Result<Value> {
    let mut conn = PgConnection::connect(&url).await?;
    let (mut samples, mut held, mut waiting) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let (h, w): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN granted THEN 1 ELSE 0 END), 0)::bigint, \
                    COALESCE(SUM(CASE WHEN granted THEN 0 ELSE 1 END), 0)::bigint \
             FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
               AND classid::bigint = $1 AND objid::bigint = $2 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(WRITE_LOCK_CLASSID)
        .bind(WRITE_LOCK_OBJID)
        .fetch_one(&mut conn)
        .await?;
        samples += 1;
        held += u64::from(h > 0);
        waiting += w.max(0) as u64;
        tokio::time::sleep(LOCK_SAMPLE_EVERY).await;
    }
    conn.close().await?;
    if samples >= 10 && held == 0 {
        bail!(
            "the write lock was never seen held in {samples} samples: does \
             WRITE_LOCK_CLASSID/OBJID still match the store's WRITE_LOCK_KEY?"
        );
    }
    let per = |n: u64| n as f64 / samples.max(1) as f64;
    Ok(json!({
        "samples": samples,
        "held_fraction": per(held),
        "mean_waiting": per(waiting),
    }))
}

// ---- the lifecycles --------------------------------------------------------

/// The PostgreSQL server of a run: its URL and its postmaster's PID.
#[derive(Clone, Copy)]
struct Pg<'a> {
    url: &'a str,
    postmaster: Option<u32>,
}

/// Runs the lifecycles against `replicas`; returns the summary, the CPU
/// use during the run, and (on PostgreSQL) the write lock's occupancy.
async fn drive(
    http: &reqwest::Client,
    replicas: &Replicas,
    pg: Option<Pg<'_>>,
    p: &Params,
) -> Result<Value> {
    let apis: Arc<Vec<String>> = Arc::new(
        replicas
            .0
            .iter()
            .map(|r| format!("{}/api/v1", r.origin))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = pg.map(|pg| tokio::spawn(sample_write_lock(pg.url.to_owned(), stop.clone())));
    let postmaster = pg.and_then(|pg| pg.postmaster);
    let before = cpu_mark(replicas, postmaster);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..p.clients {
        tasks.spawn(client(
            http.clone(),
            apis.clone(),
            c,
            next.clone(),
            p.lifecycles,
            p.poll_max,
        ));
    }
    let mut all = Laps::default();
    while let Some(r) = tasks.join_next().await {
        let laps = r??;
        all.laps.extend(laps.laps);
        all.polls += laps.polls;
    }
    let wall = t.elapsed();
    let after = cpu_mark(replicas, postmaster);
    stop.store(true, Ordering::Relaxed);
    let mut summary = summarize(&all, wall);
    summary["cpu"] = cpu_use(&before, &after, wall);
    if let Some(sampler) = sampler {
        summary["write_lock"] = sampler.await??;
    }
    Ok(summary)
}

// ---- checks ----------------------------------------------------------------

/// The value of one sample (`name{labels}`) in a Prometheus text page; 0
/// when it is absent.
fn metric(page: &str, sample: &str) -> f64 {
    page.lines()
        .filter_map(|l| l.strip_prefix(sample))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Audit chain, stored states and job queue (shared by all replicas), and
/// each replica's share of the provider jobs. Fails when something is off.
async fn check(http: &reqwest::Client, replicas: &Replicas, lifecycles: usize) -> Result<Value> {
    let first = replicas.0.first().context("no replicas")?;
    let audit = get(
        http,
        &format!("{}/api/v1/audit/verify", first.origin),
        "t-auditor",
    )
    .await?;
    if audit["ok"] != json!(true) {
        bail!("audit chain does not verify: {audit}");
    }
    let mut pages = Vec::new();
    for r in &replicas.0 {
        let resp = http.get(format!("{}/metrics", r.origin)).send().await?;
        if !resp.status().is_success() {
            bail!("{}/metrics: {}", r.origin, resp.status());
        }
        pages.push(resp.text().await?);
    }
    let page = pages.first().context("no metrics")?;
    let revoked = metric(page, "elevate_requests{state=\"revoked\"}");
    let requests: f64 = page
        .lines()
        .filter(|l| l.starts_with("elevate_requests{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let queued = metric(page, "elevate_jobs_queued");
    if revoked != lifecycles as f64 || requests != lifecycles as f64 {
        bail!("expected {lifecycles} requests, all revoked; the store has {requests}, {revoked} revoked");
    }
    if queued != 0.0 {
        bail!("{queued} provider jobs still queued after every request was revoked");
    }
    let jobs: Vec<f64> = pages
        .iter()
        .map(|m| {
            metric(m, "elevate_transitions_total{action=\"grant.activated\"}")
                + metric(m, "elevate_transitions_total{action=\"grant.removed\"}")
        })
        .collect();
    let retries: f64 = pages
        .iter()
        .map(|m| metric(m, "elevate_job_retries_total"))
        .sum();
    let jobs_total: f64 = jobs.iter().sum();
    if jobs_total != 2.0 * lifecycles as f64 {
        bail!(
            "expected {} grant.activated + grant.removed transitions across replicas, got {jobs_total}",
            2 * lifecycles
        );
    }
    Ok(json!({
        "audit_ok": true,
        "audit_events": audit["events"],
        "requests_revoked": revoked,
        "jobs_queued": queued,
        "job_retries": retries,
        "jobs_per_replica": jobs,
    }))
}

// ---- runs ------------------------------------------------------------------

/// One run: `n` processes on `database` (on `pg`, if given), the
/// lifecycles, the checks.
async fn run_one(
    http: &reqwest::Client,
    dir: &Path,
    label: &str,
    database: &str,
    pg: Option<Pg<'_>>,
    n: usize,
    p: &Params,
) -> Result<Value> {
    let path = dir.join(format!("{label}.toml"));
    std::fs::write(&path, config(database, p.clients.max(50)))?;
    let replicas = spawn(http, dir, label, &path, n).await?;
    let mut result = drive(http, &replicas, pg, p)
        .await
        .with_context(|| format!("{label}: lifecycles"))?;
    result["checks"] = check(http, &replicas, p.lifecycles)
        .await
        .with_context(|| format!("{label}: checks"))?;
    result["replicas"] = json!(n);
    stop(replicas).await?;
    Ok(result)
}

async fn run(p: &Params) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.clients * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let sqlite = if p.sqlite {
        let db = format!("sqlite://{}", dir.path().join("sqlite.db").display());
        Some(run_one(&http, dir.path(), "sqlite", &db, None, 1, p).await?)
    } else {
        None
    };
    let cluster = PgCluster::start()?;
    let version = cluster.psql("SHOW server_version")?;
    let fsync = cluster.psql("SHOW fsync")?;
    let postmaster = postmaster_pid(&cluster);
    let mut postgres = Vec::new();
    for &n in &p.replicas {
        let db = format!("bench_n{n}");
        cluster.psql(&format!("CREATE DATABASE {db}"))?;
        let url = cluster.url("postgres", None, &db);
        let pg = Pg {
            url: &url,
            postmaster,
        };
        postgres.push(run_one(&http, dir.path(), &db, &url, Some(pg), n, p).await?);
    }
    drop(cluster);
    Ok(json!({
        "clients": p.clients,
        "lifecycles": p.lifecycles,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "postgresql": { "version": version, "fsync": fsync },
        "sqlite": sqlite,
        "postgres": postgres,
    }))
}

fn parse_replicas(text: &str) -> Result<Vec<usize>> {
    let list: Vec<usize> = text
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("BENCH_REPLICAS: {s:?} is not a replica count"))
        })
        .collect::<Result<_>>()?;
    Ok(list)
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; nothing else to parse.
    let json_out = std::env::args().any(|a| a == "--json");
    let p = Params {
        lifecycles: env("BENCH_LIFECYCLES", 600).max(1),
        clients: env("BENCH_CLIENTS", 32).max(1),
        replicas: parse_replicas(
            &std::env::var("BENCH_REPLICAS").unwrap_or_else(|_| "1,2,3".into()),
        )?,
        sqlite: env("BENCH_SQLITE", 1) != 0,
        poll_max: Duration::from_millis(env("BENCH_POLL_MAX_MS", 20).max(1) as u64),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let r = runtime.block_on(run(&p))?;
    if json_out {
        println!("{r}");
        return Ok(());
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "elevate lifecycle throughput by replica count: {} lifecycles, {} clients, {} cores; PostgreSQL {} (fsync={})",
        r["lifecycles"],
        r["clients"],
        r["cores"],
        r["postgresql"]["version"].as_str().unwrap_or("?"),
        r["postgresql"]["fsync"].as_str().unwrap_or("?"),
    );
    let mut runs: Vec<(&str, &Value)> = Vec::new();
    if !r["sqlite"].is_null() {
        runs.push(("SQLite", &r["sqlite"]));
    }
    for v in r["postgres"].as_array().into_iter().flatten() {
        runs.push(("PostgreSQL", v));
    }
    println!(
        "  {:<11} {:>8} {:>13} {:>9} {:>9} {:>9} {:>16} {:>13}",
        "store",
        "replicas",
        "lifecycles/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "write lock held",
        "lock waiters"
    );
    for (store, v) in &runs {
        let lock = &v["write_lock"];
        let (held, waiting) = if lock.is_null() {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format!("{:.0} %", 100.0 * f(lock, "held_fraction")),
                format!("{:.2}", f(lock, "mean_waiting")),
            )
        };
        println!(
            "  {store:<11} {:>8} {:>13.1} {:>9.1} {:>9.1} {:>9.1} {held:>16} {waiting:>13}",
            v["replicas"],
            f(v, "lifecycles_per_s"),
            f(&v["lifecycle_ms"], "p50"),
            f(&v["lifecycle_ms"], "p99"),
            f(&v["lifecycle_ms"], "max"),
        );
    }
    println!(
        "  {:<11} {:>8}   {:<52} {:<46} provider jobs run by each replica",
        "",
        "",
        "phase p50 ms: create/approve/→active/revoke/→removed",
        "CPU cores: busy/elevate/postgres/clients/other"
    );
    for (store, v) in &runs {
        let cpu = &v["cpu"];
        let jobs: Vec<String> = v["checks"]["jobs_per_replica"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|j| format!("{:.0}", j.as_f64().unwrap_or(f64::NAN)))
                    .collect()
            })
            .unwrap_or_default();
        let phases = format!(
            "{:.1}/{:.1}/{:.1}/{:.1}/{:.1}",
            f(&v["create_ms"], "p50"),
            f(&v["approve_ms"], "p50"),
            f(&v["approved_to_active_ms"], "p50"),
            f(&v["revoke_ms"], "p50"),
            f(&v["revoked_to_removed_ms"], "p50"),
        );
        let cores = [
            "machine_busy_cores",
            "elevate_cores",
            "postgres_cores",
            "bench_clients_cores",
            "other_cores",
        ]
        .map(|k| {
            cpu[k]
                .as_f64()
                .map_or("-".to_owned(), |c| format!("{c:.2}"))
        })
        .join("/");
        println!(
            "  {store:<11} {:>8}   {phases:<52} {cores:<46} {}",
            v["replicas"],
            jobs.join(" / "),
        );
    }
    println!(
        "  checked after each run: every lifecycle reached revoked, the audit chain verifies, the store holds exactly those requests, all revoked, no job queued"
    );
    Ok(())
}
