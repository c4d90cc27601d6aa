//! Lifecycle throughput on the embedded store: complete create → approve →
//! apply → remove lifecycles per second, next to the storage limit — the
//! raw rate of durable (fsync'd) single-row transactions on a SQLite file
//! in the same directory, opened with the same settings as the store (WAL,
//! `synchronous = FULL`).
//!
//! One lifecycle: the requester creates a request (1 h, dry-run target),
//! an approver approves it (quorum 1), the client polls
//! `GET /api/v1/requests/ID` until the state is `active` (the worker has
//! applied it), the requester revokes it, and the client polls until
//! `revoked` (the worker has removed it). `BENCH_CLIENTS` clients run
//! lifecycles back to back until `BENCH_LIFECYCLES` are done; client `c`
//! always acts as requester `r{c}` and approver `a{c % 4}`, so the grants
//! of concurrent lifecycles never share a grant key (no "role kept: still
//! needed by ..." removals). Polling backs off from 1 ms to
//! `BENCH_POLL_MAX_MS`, so waiting clients do not crowd out the server.
//!
//! The same lifecycles are then driven in process (calling `Broker`
//! directly on a fresh database, no HTTP) to show what HTTP costs.
//!
//! Write transactions per lifecycle, counted from `engine.rs` and the
//! store: create 1, approve 1, claim of the apply job 1 (`claim_jobs` is an
//! UPDATE of its own), apply result 1, revoke 1, claim of the removal 1,
//! removal result 1 = **7**. No deadline fires (the grants last 1 h and are
//! revoked first); start-up writes are not counted. Under concurrency the
//! worker claims and records several jobs per commit, so the real count is
//! between 3 + 4/batch and 7: the implied limit (raw ÷ 7) is a floor.
//!
//! `cargo bench -p elevate --bench throughput` (`--json` for JSON).
//! Environment: `BENCH_LIFECYCLES` (2000), `BENCH_CLIENTS` (32),
//! `BENCH_INPROCESS_LIFECYCLES` (same as `BENCH_LIFECYCLES`; 0 skips the
//! in-process run), `BENCH_RAW_TXNS` (7 × `BENCH_LIFECYCLES`, the same
//! number of commits the lifecycles need), `BENCH_RAW_ROW_BYTES` (1024, the
//! payload of one raw row, about one stored request document),
//! `BENCH_POLL_MAX_MS` (20). The database lives in a temporary directory
//! (`TMPDIR`): put it on the disk you want to measure.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use elevate::config::Config;
use elevate::engine::{Broker, CreateInput};
use elevate_core::principal::Principal;
use elevate_core::values::{Comment, RequestId};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};

/// Write transactions elevate commits per lifecycle (see the module doc).
mod lifecycle;

use lifecycle::basics::{env, ms, stats};
use lifecycle::{client, config, summarize, Lap, Laps, APPROVERS};

const TXNS_PER_LIFECYCLE: usize = 7;

#[derive(Clone, Copy)]
struct Params {
    lifecycles: usize,
    clients: usize,
    inprocess: usize,
    raw_txns: usize,
    raw_row_bytes: usize,
    poll_max: Duration,
}

async fn start(dir: &Path, name: &str, requesters: usize) -> Result<elevate::Running> {
    let db = dir.join(name);
    let text = config(&format!("sqlite://{}", db.display()), requesters);
    let config = Config::parse(&text, None).map_err(|p| anyhow!("config: {p:?}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    elevate::start(config, Some(listener)).await
}

// ---- over HTTP -------------------------------------------------------------

async fn run_http(dir: &Path, p: Params) -> Result<(Value, Value)> {
    let running = start(dir, "http.db", p.clients.max(50)).await?;
    let base = format!("http://{}/api/v1", running.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.clients * 2)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let apis = Arc::new(vec![base]);
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
    let store = storage_facts(&running.broker).await?;
    running.shutdown().await;
    Ok((summarize(&all, wall), store))
}

/// What one lifecycle left in the database: sizes that make the raw row
/// comparable, and the audit and attempt rows written.
async fn storage_facts(broker: &Broker) -> Result<Value> {
    let pool = broker.store.pool();
    let requests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await?;
    let doc: Option<f64> = sqlx::query_scalar("SELECT AVG(LENGTH(doc)) FROM requests")
        .fetch_one(pool)
        .await?;
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit")
        .fetch_one(pool)
        .await?;
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_attempts")
        .fetch_one(pool)
        .await?;
    let per = |n: i64| n as f64 / (requests.max(1) as f64);
    Ok(json!({
        "requests": requests,
        "request_doc_bytes": doc,
        "audit_events_per_lifecycle": per(audit),
        "job_attempts_per_lifecycle": per(attempts),
    }))
}

// ---- in process ------------------------------------------------------------

fn principal(broker: &Broker, name: &str) -> Result<Principal> {
    broker
        .directory
        .users()
        .find(|p| p.name.as_str() == name)
        .cloned()
        .with_context(|| format!("no user {name}"))
}

async fn wait_broker(
    broker: &Broker,
    id: &RequestId,
    want: &str,
    poll_max: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(1);
    let mut polls = 0;
    loop {
        polls += 1;
        let s = broker.load(id).await.map_err(|e| anyhow!("load: {e:?}"))?;
        match s.request.state.name() {
            s if s == want => return Ok(polls),
            "failed" => bail!("{id} failed"),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("{id} never became {want}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(poll_max);
    }
}

async fn broker_client(
    broker: Arc<Broker>,
    c: usize,
    next: Arc<AtomicUsize>,
    total: usize,
    poll_max: Duration,
) -> Result<Laps> {
    let requester = principal(&broker, &format!("r{c}"))?;
    let approver = principal(&broker, &format!("a{}", c % APPROVERS))?;
    let mut out = Laps::default();
    while next.fetch_add(1, Ordering::Relaxed) < total {
        let t0 = Instant::now();
        let created = broker
            .create(
                &requester,
                CreateInput {
                    target: "bench".into(),
                    resource: "db".into(),
                    role: "writer".into(),
                    duration: "1h".into(),
                    start: None,
                    reason: "throughput bench".into(),
                    ticket: None,
                    break_glass: false,
                },
            )
            .await
            .map_err(|e| anyhow!("create: {e:?}"))?;
        let id = created.request.id.clone();
        let t1 = Instant::now();
        broker
            .approve(&approver, &id, Comment::default())
            .await
            .map_err(|e| anyhow!("approve: {e:?}"))?;
        let t2 = Instant::now();
        out.polls += wait_broker(&broker, &id, "active", poll_max).await?;
        let t3 = Instant::now();
        broker
            .revoke(&requester, &id, Comment::default())
            .await
            .map_err(|e| anyhow!("revoke: {e:?}"))?;
        let t4 = Instant::now();
        out.polls += wait_broker(&broker, &id, "revoked", poll_max).await?;
        let t5 = Instant::now();
        out.laps.push(Lap {
            total: ms(t5 - t0),
            create: ms(t1 - t0),
            approve: ms(t2 - t1),
            to_active: ms(t3 - t2),
            revoke: ms(t4 - t3),
            to_revoked: ms(t5 - t4),
        });
    }
    Ok(out)
}

async fn run_inprocess(dir: &Path, p: Params) -> Result<Value> {
    let running = start(dir, "inprocess.db", p.clients.max(50)).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..p.clients {
        tasks.spawn(broker_client(
            running.broker.clone(),
            c,
            next.clone(),
            p.inprocess,
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
    running.shutdown().await;
    Ok(summarize(&all, wall))
}

// ---- the storage limit -----------------------------------------------------

/// K single-row INSERT transactions, one after the other on one connection
/// (elevate serialises its writers the same way), each committed durably.
async fn run_raw(dir: &Path, p: Params) -> Result<Value> {
    let options = SqliteConnectOptions::new()
        .filename(dir.join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    sqlx::query("CREATE TABLE rows (id INTEGER PRIMARY KEY, key TEXT NOT NULL, doc TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    let doc = "x".repeat(p.raw_row_bytes);
    let mut lat = Vec::with_capacity(p.raw_txns);
    let t = Instant::now();
    for i in 0..p.raw_txns {
        let t0 = Instant::now();
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO rows (key, doc) VALUES (?, ?)")
            .bind(format!("key-{i}"))
            .bind(&doc)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        lat.push(ms(t0.elapsed()));
    }
    let wall = t.elapsed();
    conn.close().await?;
    let per_s = p.raw_txns as f64 / wall.as_secs_f64();
    Ok(json!({
        "txns": p.raw_txns,
        "row_bytes": p.raw_row_bytes,
        "wall_s": wall.as_secs_f64(),
        "txns_per_s": per_s,
        "commit_ms": stats(lat),
        "txns_per_lifecycle": TXNS_PER_LIFECYCLE,
        "implied_lifecycles_per_s": per_s / TXNS_PER_LIFECYCLE as f64,
    }))
}

async fn run() -> Result<Value> {
    let lifecycles = env("BENCH_LIFECYCLES", 2000).max(1);
    let p = Params {
        lifecycles,
        clients: env("BENCH_CLIENTS", 32).max(1),
        inprocess: env("BENCH_INPROCESS_LIFECYCLES", lifecycles),
        raw_txns: env("BENCH_RAW_TXNS", TXNS_PER_LIFECYCLE * lifecycles).max(1),
        raw_row_bytes: env("BENCH_RAW_ROW_BYTES", 1024),
        poll_max: Duration::from_millis(env("BENCH_POLL_MAX_MS", 20).max(1) as u64),
    };
    let dir = tempfile::tempdir()?;
    let raw = run_raw(dir.path(), p).await?;
    let (http, store) = run_http(dir.path(), p).await?;
    let inprocess = if p.inprocess > 0 {
        Some(run_inprocess(dir.path(), p).await?)
    } else {
        None
    };
    let limit = raw["implied_lifecycles_per_s"].as_f64().unwrap_or(f64::NAN);
    let ratio = |v: &Value| v["lifecycles_per_s"].as_f64().unwrap_or(f64::NAN) / limit;
    Ok(json!({
        "clients": p.clients,
        "directory": dir.path().display().to_string(),
        "raw": raw,
        "http": http,
        "http_ratio_to_limit": ratio(&http),
        "inprocess": inprocess,
        "inprocess_ratio_to_limit": inprocess.as_ref().map(ratio),
        "store": store,
    }))
}

fn main() -> Result<()> {
    // `cargo bench` passes --bench; nothing else to parse.
    let json_out = std::env::args().any(|a| a == "--json");
    let runtime = tokio::runtime::Runtime::new()?;
    let r = runtime.block_on(run())?;
    if json_out {
        println!("{r}");
        return Ok(());
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let raw = &r["raw"];
    println!(
        "elevate lifecycle throughput ({} clients, SQLite in {})",
        r["clients"],
        r["directory"].as_str().unwrap_or("?")
    );
    println!(
        "  storage limit: {} durable single-row txns ({} B rows): {:8.1} txns/s  commit p50 {:.2} ms  p99 {:.2} ms",
        raw["txns"],
        raw["row_bytes"],
        f(raw, "txns_per_s"),
        f(&raw["commit_ms"], "p50"),
        f(&raw["commit_ms"], "p99"),
    );
    println!(
        "  implied lifecycle limit: {:.1} txns/s ÷ {} txns per lifecycle = {:.1} lifecycles/s",
        f(raw, "txns_per_s"),
        raw["txns_per_lifecycle"],
        f(raw, "implied_lifecycles_per_s"),
    );
    let row = |label: &str, v: &Value, ratio: f64| {
        println!(
            "  {label:<11} {:>6} lifecycles in {:6.1} s: {:7.1}/s ({:.2}× the limit)  lifecycle p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms",
            v["lifecycles"],
            f(v, "wall_s"),
            f(v, "lifecycles_per_s"),
            ratio,
            f(&v["lifecycle_ms"], "p50"),
            f(&v["lifecycle_ms"], "p99"),
            f(&v["lifecycle_ms"], "max"),
        );
        println!(
            "  {:<11} phases p50/p99 ms: create {:.1}/{:.1}  approve {:.1}/{:.1}  →active {:.1}/{:.1}  revoke {:.1}/{:.1}  →revoked {:.1}/{:.1}  ({:.1} polls per lifecycle)",
            "",
            f(&v["create_ms"], "p50"),
            f(&v["create_ms"], "p99"),
            f(&v["approve_ms"], "p50"),
            f(&v["approve_ms"], "p99"),
            f(&v["approved_to_active_ms"], "p50"),
            f(&v["approved_to_active_ms"], "p99"),
            f(&v["revoke_ms"], "p50"),
            f(&v["revoke_ms"], "p99"),
            f(&v["revoked_to_removed_ms"], "p50"),
            f(&v["revoked_to_removed_ms"], "p99"),
            f(v, "polls_per_lifecycle"),
        );
    };
    row("over HTTP", &r["http"], f(&r, "http_ratio_to_limit"));
    if !r["inprocess"].is_null() {
        row(
            "in process",
            &r["inprocess"],
            f(&r, "inprocess_ratio_to_limit"),
        );
    }
    let s = &r["store"];
    println!(
        "  per lifecycle stored: request doc {:.0} B, {:.1} audit events, {:.1} provider attempts",
        f(s, "request_doc_bytes"),
        f(s, "audit_events_per_lifecycle"),
        f(s, "job_attempts_per_lifecycle"),
    );
    Ok(())
}
