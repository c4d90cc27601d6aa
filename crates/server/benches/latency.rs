//! Approval → access and deadline → removal, measured against a real
//! PostgreSQL target, next to the physical limit: the same GRANT issued
//! directly. Run with `cargo bench -p elevate --bench latency`; it prints
//! medians and p99 (and `--json` for machine-readable output).
//!
//! Needs PostgreSQL installed (as for the tests).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use elevate::config::Config;
use elevate_testkit::PgCluster;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

const ROUNDS: usize = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

async fn is_member(conn: &mut PgConnection) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = 'orders_writer' AND u.rolname = 'alice'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(n == 1)
}

async fn wait_member(conn: &mut PgConnection, want: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_member(conn).await? != want {
        if Instant::now() > deadline {
            bail!("membership never became {want}");
        }
    }
    Ok(())
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> Result<Value> {
    let resp = http.post(url).bearer_auth(token).json(&body).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok(v)
}

fn config(port: u16, db: &std::path::Path, pw: &std::path::Path) -> String {
    let user = |name: &str, group: &str| {
        format!(
            "[[users]]\nname = \"{name}\"\ngroups = [\"{group}\"]\ntoken_hashes = [\"{}\"]\n",
            elevate::auth::token_hash(&format!("t-{name}"))
        )
    };
    format!(
        "admins = [\"group:dba\"]\n[limits]\nmin_duration = \"1s\"\n[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"sqlite://{db}\"\n{alice}{bob}
[[targets]]\nid = \"pg\"\nkind = \"postgres\"\nroles = [\"orders_writer\"]\n[targets.postgres]\nport = {port}\nuser = \"broker\"\npassword_file = \"{pw}\"\n[[targets.resources]]\nid = \"orders\"
[[eligibilities]]\nid = \"e\"\nsubjects = [\"group:dev\"]\ntarget = \"pg\"\nresources = {{ ids = [\"orders\"] }}\nroles = [\"orders_writer\"]\nmax_duration = \"1h\"
[[approval_policies]]\nid = \"p\"\ntarget = \"pg\"\nresources = {{ ids = [\"orders\"] }}\napprovers = [\"group:dba\"]\n",
        db = db.display(),
        pw = pw.display(),
        alice = user("alice", "dev"),
        bob = user("bob", "dba"),
    )
}

async fn run() -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let cluster = PgCluster::start()?;
    cluster.psql(
        "CREATE ROLE broker LOGIN PASSWORD 'pw' CREATEROLE;
         CREATE ROLE orders_writer NOLOGIN;
         GRANT orders_writer TO broker WITH ADMIN OPTION;
         GRANT pg_signal_backend TO broker;
         CREATE ROLE alice LOGIN;",
    )?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw")?;
    let mut observer = PgConnection::connect(&cluster.url("postgres", None, "postgres")).await?;
    let mut broker = PgConnection::connect(&cluster.url("broker", Some("pw"), "postgres")).await?;

    // The physical limit: the GRANT itself, on an open connection.
    let mut raw = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        sqlx::query("GRANT orders_writer TO alice")
            .execute(&mut broker)
            .await?;
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
        sqlx::query("REVOKE orders_writer FROM alice")
            .execute(&mut broker)
            .await?;
    }

    let text = config(cluster.port(), &dir.path().join("elevate.db"), &pw);
    let config = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = elevate::start(config, Some(listener)).await?;
    let base = format!("http://{}/api/v1", running.addr);
    let http = reqwest::Client::new();

    // Approval call returned → role usable on the target; and revocation
    // call returned → role gone.
    let mut approve_to_access = Vec::new();
    let mut revoke_to_gone = Vec::new();
    for _ in 0..ROUNDS {
        let created = post(&http, &format!("{base}/requests"), "t-alice", json!({
            "target": "pg", "resource": "orders", "role": "orders_writer", "duration": "1h", "reason": "bench"
        }))
        .await?;
        let id = created["id"].as_str().context("id")?.to_owned();
        post(
            &http,
            &format!("{base}/requests/{id}/approve"),
            "t-bob",
            json!({}),
        )
        .await?;
        let t = Instant::now();
        wait_member(&mut observer, true).await?;
        approve_to_access.push(t.elapsed().as_secs_f64() * 1000.0);
        post(
            &http,
            &format!("{base}/requests/{id}/revoke"),
            "t-alice",
            json!({}),
        )
        .await?;
        let t = Instant::now();
        wait_member(&mut observer, false).await?;
        revoke_to_gone.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // Deadline → removal: grants ending at staggered instants; lateness is
    // the removal's own record (grant.removed `lateness_ms`).
    let mut ids = Vec::new();
    for i in 0..20 {
        let created = post(
            &http,
            &format!("{base}/requests"),
            "t-alice",
            json!({
                "target": "pg", "resource": "orders", "role": "orders_writer",
                "duration": format!("{}s", 2 + i % 5), "reason": "bench"
            }),
        )
        .await?;
        let id = created["id"].as_str().context("id")?.to_owned();
        post(
            &http,
            &format!("{base}/requests/{id}/approve"),
            "t-bob",
            json!({}),
        )
        .await?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut lateness = Vec::new();
    for id in &ids {
        let v: Value = http
            .get(format!("{base}/audit?request={id}"))
            .bearer_auth("t-bob")
            .send()
            .await?
            .json()
            .await?;
        let removed = v["events"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["action"] == "grant.removed").cloned())
            .with_context(|| format!("{id} not removed yet"))?;
        lateness.push(
            removed["details"]["lateness_ms"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    running.shutdown().await;

    let (raw_p50, raw_p99, _) = summary(raw);
    let (a_p50, a_p99, a_max) = summary(approve_to_access);
    let (r_p50, r_p99, r_max) = summary(revoke_to_gone);
    let (l_p50, l_p99, l_max) = summary(lateness);
    Ok(json!({
        "rounds": ROUNDS,
        "raw_grant_ms": {"p50": raw_p50, "p99": raw_p99},
        "approve_to_access_ms": {"p50": a_p50, "p99": a_p99, "max": a_max, "ratio_p50_to_raw": a_p50 / raw_p50},
        "revoke_to_removed_ms": {"p50": r_p50, "p99": r_p99, "max": r_max},
        "deadline_to_removed_ms": {"p50": l_p50, "p99": l_p99, "max": l_max, "grants": ids.len()},
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
    let f = |k: &str, p: &str| r[k][p].as_f64().unwrap_or(f64::NAN);
    println!("elevate latency against PostgreSQL ({} rounds)", ROUNDS);
    println!(
        "  raw GRANT (the limit)          p50 {:7.2} ms  p99 {:7.2} ms",
        f("raw_grant_ms", "p50"),
        f("raw_grant_ms", "p99")
    );
    println!("  approve returned → usable      p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  ({:.1}× raw at p50)",
        f("approve_to_access_ms", "p50"), f("approve_to_access_ms", "p99"), f("approve_to_access_ms", "max"), f("approve_to_access_ms", "ratio_p50_to_raw"));
    println!(
        "  revoke returned → removed      p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        f("revoke_to_removed_ms", "p50"),
        f("revoke_to_removed_ms", "p99"),
        f("revoke_to_removed_ms", "max")
    );
    println!(
        "  deadline → removed             p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        f("deadline_to_removed_ms", "p50"),
        f("deadline_to_removed_ms", "p99"),
        f("deadline_to_removed_ms", "max")
    );
    Ok(())
}
