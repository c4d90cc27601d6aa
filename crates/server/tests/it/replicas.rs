//! Scale-out: three `elevate serve` processes sharing one PostgreSQL store,
//! in front of a real PostgreSQL target.
//!
//! Provider calls are counted on the target's side, by
//! `pg_stat_statements` (which counts only statements that completed), not
//! from elevate's own bookkeeping: "applied once" means PostgreSQL ran one
//! `GRANT` for that login, "removed once" one `REVOKE`.
//!
//! These tests always use a PostgreSQL store of their own, whichever engine
//! the rest of the suite runs on (`ELEVATE_TEST_DATABASE`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_testkit::PgCluster;
use reqwest::StatusCode;
use sqlx::Connection;

use crate::common::{body, eventually, policy_toml, PgTarget, ServerProcess, Setup, TestApp};

/// Extra requesters, one target login each, so that concurrent lifecycles
/// never share a grant (each must be applied and removed exactly once).
fn requesters(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("u{i:02}")).collect()
}

/// A target with `pg_stat_statements` loaded and a login per requester.
/// `client_connection_check_interval` makes a backend notice promptly that
/// its client (a killed replica) is gone even while it waits for a lock.
fn target(dir: &Path, logins: &[String]) -> Result<PgTarget> {
    let pg = PgTarget::start(dir)?;
    pg.cluster.psql(
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';
         ALTER SYSTEM SET client_connection_check_interval = '100ms';",
    )?;
    pg.cluster.stop()?;
    pg.cluster.start_again()?;
    let mut setup = String::from("CREATE EXTENSION pg_stat_statements;");
    for login in logins {
        setup.push_str(&format!("CREATE ROLE {login} LOGIN;"));
    }
    pg.cluster.psql(&setup)?;
    pg.cluster.psql("SELECT pg_stat_statements_reset()")?;
    Ok(pg)
}

/// GRANT and REVOKE statements PostgreSQL completed, per login.
fn target_calls(pg: &PgTarget) -> Result<BTreeMap<String, (u64, u64)>> {
    let out = pg.cluster.psql(
        "SELECT query || '|' || calls FROM pg_stat_statements WHERE query ~* '^(GRANT|REVOKE) '",
    )?;
    let mut calls: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (query, n) = line.rsplit_once('|').context("pg_stat_statements row")?;
        let n: u64 = n.trim().parse()?;
        // `GRANT "role" TO "login"` / `REVOKE "role" FROM "login"`.
        let login = query
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned();
        let entry = calls.entry(login).or_default();
        if query.to_ascii_uppercase().starts_with("GRANT") {
            entry.0 += n;
        } else {
            entry.1 += n;
        }
    }
    Ok(calls)
}

/// One config for every replica: the shared store, a short job lease (a
/// dead replica's claimed jobs are taken over after it), the target.
fn config(pg: &PgTarget, store_url: &str, logins: &[String]) -> String {
    let mut users = String::new();
    for login in logins {
        users.push_str(&format!(
            "[[users]]\nname = \"{login}\"\ngroups = [\"developers\"]\ntoken_hashes = [\"{}\"]\n\n",
            elevate::auth::token_hash(&crate::common::token(login))
        ));
    }
    format!(
        "{policy}\n{users}[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"{store_url}\"\nretry_max_backoff = \"1s\"\njob_lease = \"10s\"\n\n[[targets]]\nid = \"pg\"\nkind = \"postgres\"\nroles = [\"orders_writer\", \"orders_reader\"]\n[targets.postgres]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"broker\"\npassword_file = \"{pw}\"\nconnect_timeout = \"2s\"\n{resources}",
        policy = policy_toml("pg", &Setup::default()),
        port = pg.cluster.port(),
        pw = pg.password_file.display(),
        resources = crate::common::RESOURCES_TOML,
    )
}

/// The shared store: its own cluster, one database.
fn store_cluster() -> Result<(PgCluster, String)> {
    let cluster = PgCluster::start()?;
    cluster.psql("CREATE DATABASE elevate")?;
    let url = cluster.url("postgres", None, "elevate");
    Ok((cluster, url))
}

struct Replicas {
    config: PathBuf,
    servers: Vec<Option<ServerProcess>>,
    apps: Vec<TestApp>,
}

impl Replicas {
    /// Starts `n` replicas one after another (the first migrates, the
    /// others find the schema current). Index `i` of `start` decides which
    /// to start now; the rest can be started later with [`Replicas::up`].
    async fn new(dir: &Path, text: &str, store_url: &str, n: usize, start: usize) -> Result<Self> {
        let config = dir.join("replica.toml");
        std::fs::write(&config, text)?;
        let mut r = Replicas {
            config,
            servers: Vec::new(),
            apps: Vec::new(),
        };
        for _ in 0..n {
            let port = elevate_testkit::free_port()?;
            r.apps.push(TestApp::external(
                &format!("http://127.0.0.1:{port}"),
                store_url.to_owned(),
            ));
            r.servers.push(None);
        }
        for i in 0..start {
            r.up(i).await?;
        }
        Ok(r)
    }

    async fn up(&mut self, i: usize) -> Result<()> {
        let port: u16 = self.apps[i]
            .url
            .rsplit(':')
            .next()
            .context("replica url")?
            .parse()?;
        self.servers[i] = Some(ServerProcess::start(&self.config, port).await?);
        Ok(())
    }

    /// SIGKILL: the replica gets no chance to hand anything back.
    fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut s) = self.servers[i].take() {
            s.kill()?;
        }
        Ok(())
    }
}

async fn verify_chain(app: &TestApp) -> Result<()> {
    let (status, v) = app.get("dave", "/api/v1/audit/verify").await?;
    ensure!(
        status == StatusCode::OK && v["ok"] == true,
        "audit chain: {status} {v}"
    );
    Ok(())
}

/// Every one of `ids` ended, applied once and removed once, on the
/// target's own count.
fn assert_once_each(pg: &PgTarget, logins: &[String]) -> Result<()> {
    let calls = target_calls(pg)?;
    for login in logins {
        let (grants, revokes) = calls.get(login).copied().unwrap_or_default();
        ensure!(
            grants == 1 && revokes == 1,
            "{login}: PostgreSQL ran {grants} GRANT(s) and {revokes} REVOKE(s); every grant must be applied once and removed once (all counts: {calls:?})"
        );
        ensure!(
            !pg.is_member(login, "orders_writer")?,
            "{login} still holds the role"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_apply_and_remove_every_grant_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let logins = requesters(24);
    let pg = target(dir.path(), &logins)?;
    let (_store, store_url) = store_cluster()?;
    let text = config(&pg, &store_url, &logins);
    let replicas = Replicas::new(dir.path(), &text, &store_url, 3, 3).await?;
    let apps = &replicas.apps;

    // Every replica answers ready on the shared, migrated store.
    for app in apps {
        let (status, v) = app
            .call(reqwest::Method::GET, "/readyz", None, None)
            .await?;
        ensure!(status == StatusCode::OK, "readyz: {status} {v}");
        ensure!(v["migrations_current"] == true, "{v}");
    }

    // A stream of lifecycles, each step on another replica: created on
    // one, approved on the next, and left to end by itself, so whichever
    // replica claims the jobs and the deadline does the work.
    let mut running = tokio::task::JoinSet::new();
    for (i, login) in logins.iter().enumerate() {
        let create = TestApp::external(&apps[i % 3].url, store_url.clone());
        let approve = TestApp::external(&apps[(i + 1) % 3].url, store_url.clone());
        let login = login.clone();
        running.spawn(async move {
            let id = create
                .request(&login, body("pg", "orders", "orders_writer", "3s"))
                .await?;
            let approver = if i % 2 == 0 { "bob" } else { "carol" };
            approve.approve(approver, &id).await?;
            anyhow::Ok(id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = running.join_next().await {
        ids.push(r??);
    }
    for (i, id) in ids.iter().enumerate() {
        let v = apps[(i + 2) % 3]
            .wait_state(id, "ended", Duration::from_secs(60))
            .await?;
        ensure!(v["apply_failures"] == 0, "{v}");
    }
    assert_once_each(&pg, &logins)?;
    for app in apps {
        verify_chain(app).await?;
    }

    // The audit chain is one line: every lifecycle's events, no gaps.
    let (status, events) = apps[0].get("dave", "/api/v1/audit?limit=1000").await?;
    let events = events["events"]
        .as_array()
        .with_context(|| format!("audit list: {status} {events}"))?
        .clone();
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    ensure!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "audit seq has gaps or forks"
    );
    for id in &ids {
        let of_request = events.iter().filter(|e| e["request"] == id.as_str());
        let actions: Vec<&str> = of_request.filter_map(|e| e["action"].as_str()).collect();
        for expected in ["request.created", "request.approved"] {
            ensure!(
                actions.contains(&expected),
                "{id}: {expected} missing from {actions:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_claimed_work_is_finished_by_the_others_after_its_lease() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let logins = requesters(1);
    let login = &logins[0];
    let pg = target(dir.path(), &logins)?;
    let (_store, store_url) = store_cluster()?;
    // A short lease, waited out by the live replicas. (The other tests
    // keep a longer one: its half is the provider call limit, and a GRANT
    // slower than that on a loaded machine would be tried twice.)
    let text =
        config(&pg, &store_url, &logins).replace("job_lease = \"10s\"", "job_lease = \"4s\"");
    ensure!(text.contains("job_lease = \"4s\""), "config layout changed");
    // Only replica 0 runs at first, so it is the one that claims the job.
    let mut replicas = Replicas::new(dir.path(), &text, &store_url, 3, 1).await?;

    // Hold every role change on the target: replica 0's GRANT waits on
    // this lock while replica 0 holds the job's lease.
    let mut blocker =
        sqlx::PgConnection::connect(&pg.cluster.url("postgres", None, "postgres")).await?;
    sqlx::raw_sql("BEGIN; LOCK TABLE pg_catalog.pg_auth_members IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await?;

    let a = &replicas.apps[0];
    let id = a
        .request(login, body("pg", "orders", "orders_writer", "40s"))
        .await?;
    a.approve("bob", &id).await?;
    let waiting_grant = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'GRANT %' AND wait_event_type = 'Lock'";
    // At least one: a call that outlives the call limit is retried by
    // the same replica while the first GRANT still waits.
    eventually(
        "replica 0's GRANT to wait on the target",
        Duration::from_secs(20),
        || async { Ok(pg.cluster.psql(waiting_grant)?.parse::<u32>().unwrap_or(0) >= 1) },
    )
    .await?;

    // Killed before the others start, so only its GRANTs ever wait on the
    // lock: none of the live replicas' can be parked behind it.
    replicas.kill(0)?;
    // The dead replica's statements are cancelled by the target once it
    // notices the client is gone; only then is the role lock released, so
    // the dead replica's GRANT can never land late.
    eventually(
        "the killed replica's GRANT to be cancelled",
        Duration::from_secs(20),
        || async { Ok(pg.cluster.psql(waiting_grant)? == "0") },
    )
    .await?;
    replicas.up(1).await?;
    replicas.up(2).await?;
    sqlx::raw_sql("ROLLBACK").execute(&mut blocker).await?;

    let b = &replicas.apps[1];
    let v = b.wait_state(&id, "active", Duration::from_secs(30)).await?;
    ensure!(
        pg.is_member(login, "orders_writer")?,
        "active but not granted: {v}"
    );
    let v = b.wait_state(&id, "ended", Duration::from_secs(90)).await?;
    assert_once_each(&pg, &logins)?;
    // One successful apply and one removal in the request's history: the
    // killed replica's claim left no attempt behind.
    let attempts = v["attempts"].as_array().cloned().unwrap_or_default();
    let ok = |kind: &str| {
        attempts
            .iter()
            .filter(|a| a["kind"] == kind && a["outcome"] == "ok")
            .count()
    };
    ensure!(
        ok("apply") == 1 && ok("remove") == 1,
        "attempts: {attempts:?}"
    );
    verify_chain(b).await?;
    verify_chain(&replicas.apps[2]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_through_a_stopped_replica_is_removed_on_time_by_another() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let logins = requesters(1);
    let login = &logins[0];
    let pg = target(dir.path(), &logins)?;
    let (store, store_url) = store_cluster()?;
    let text = config(&pg, &store_url, &logins);
    let mut replicas = Replicas::new(dir.path(), &text, &store_url, 3, 3).await?;

    let a = &replicas.apps[0];
    let id = a
        .request(login, body("pg", "orders", "orders_writer", "6s"))
        .await?;
    a.approve("bob", &id).await?;
    let v = a.wait_state(&id, "active", Duration::from_secs(20)).await?;
    let ends_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(v["ends_at"].clone()).context("ends_at")?;
    replicas.kill(0)?;

    let b = &replicas.apps[1];
    let v = b.wait_state(&id, "ended", Duration::from_secs(60)).await?;
    ensure!(!pg.is_member(login, "orders_writer")?, "role left behind");
    assert_once_each(&pg, &logins)?;
    let ended_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(v["ended_at"].clone()).context("ended_at")?;
    let late = (ended_at - ends_at).num_milliseconds();
    eprintln!("removal by another replica: {late} ms after the deadline");
    // Behaviour, not speed: "on time" means at the deadline's own wake-up
    // (LISTEN/NOTIFY told the others of it), not at some later sweep. The
    // schedulers never sleep longer than 2 s, so anything near that bound
    // or beyond means the wake-up was missed.
    ensure!(
        (0..10_000).contains(&late),
        "removed {late} ms after the deadline"
    );

    // Readiness follows the database: stop the store and /readyz says so.
    store.stop()?;
    eventually(
        "readyz to report the database down",
        Duration::from_secs(30),
        || async {
            let r = b.call(reqwest::Method::GET, "/readyz", None, None).await?;
            Ok(r.0 == StatusCode::SERVICE_UNAVAILABLE && r.1["database"] == false)
        },
    )
    .await?;
    let (status, _) = b.call(reqwest::Method::GET, "/healthz", None, None).await?;
    ensure!(status == StatusCode::OK, "healthz follows the process only");
    store.start_again()?;
    eventually(
        "readyz to recover with the database",
        Duration::from_secs(30),
        || async {
            let r = b.call(reqwest::Method::GET, "/readyz", None, None).await?;
            Ok(r.0 == StatusCode::OK)
        },
    )
    .await?;
    verify_chain(b).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_an_empty_database_migrate_it_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let logins = requesters(1);
    let pg = target(dir.path(), &logins)?;
    let (store, store_url) = store_cluster()?;
    let file = dir.path().join("replica.toml");
    std::fs::write(&file, config(&pg, &store_url, &logins))?;
    let ports = [
        elevate_testkit::free_port()?,
        elevate_testkit::free_port()?,
        elevate_testkit::free_port()?,
    ];
    // All three at once, on a database without a single table.
    let (a, b, c) = tokio::join!(
        ServerProcess::start(&file, ports[0]),
        ServerProcess::start(&file, ports[1]),
        ServerProcess::start(&file, ports[2]),
    );
    let servers = [a?, b?, c?];
    for server in &servers {
        let app = TestApp::external(&server.url, store_url.clone());
        let (status, v) = app
            .call(reqwest::Method::GET, "/readyz", None, None)
            .await?;
        ensure!(
            status == StatusCode::OK
                && v["migrations_current"] == true
                && v["engine"] == "postgres",
            "readyz: {status} {v}"
        );
    }
    let versions = store.psql_db(
        "elevate",
        "SELECT count(*) || ' ' || count(DISTINCT version) || ' ' || max(version) FROM schema_version",
    )?;
    let expected = elevate_store::SCHEMA_VERSION;
    ensure!(
        versions == format!("{expected} {expected} {expected}"),
        "each migration must be recorded once: rows, distinct versions, latest = {versions}"
    );
    // And the store works through any of them.
    let app = TestApp::external(&servers[2].url, store_url.clone());
    let id = app
        .request(&logins[0], body("pg", "orders", "orders_writer", "2s"))
        .await?;
    TestApp::external(&servers[0].url, store_url.clone())
        .approve("bob", &id)
        .await?;
    app.wait_state(&id, "ended", Duration::from_secs(30))
        .await?;
    assert_once_each(&pg, &logins)?;
    Ok(())
}
