//! `elevate db copy`: an embedded installation moves to PostgreSQL (and
//! back) with its whole history and audit chain, and a copy never merges
//! into a database that holds data.
//!
//! These tests pick their engines themselves, whatever
//! `ELEVATE_TEST_DATABASE` says: the source is always a SQLite file (the
//! embedded store being moved) and the PostgreSQL side a cluster of the
//! test's own.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_store::{AuditFilter, RequestFilter, Store};
use elevate_testkit::PgCluster;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{binary, body, cli, dry_run_config_on, Setup, TestApp};

const WAIT: Duration = Duration::from_secs(20);

/// A password in the destination URL: PostgreSQL's trust authentication
/// never asks for it, and no output may show it.
const SECRET: &str = "pw-never-printed";

/// Runs `elevate db copy --from FROM --to TO`, off the async runtime.
async fn db_copy(from: &str, to: &str) -> Result<Output> {
    let (from, to) = (from.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["db", "copy", "--from", &from, "--to", &to])
            .env_remove("ELEVATE_URL")
            .env_remove("ELEVATE_TOKEN")
            .env_remove("ELEVATE_CONFIG")
            .output()
            .context("running elevate db copy")
    })
    .await?
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A failed copy: non-zero exit, nothing on stdout, one line on stderr
/// saying `expected`, and no secret.
fn refused(out: &Output, expected: &str) -> Result<String> {
    let (stdout, stderr) = text(out);
    ensure!(
        !out.status.success(),
        "db copy should have failed: {stdout} {stderr}"
    );
    ensure!(stdout.is_empty(), "a failed copy printed: {stdout}");
    ensure!(
        stderr.lines().count() == 1 && stderr.starts_with("error: "),
        "one error line expected: {stderr:?}"
    );
    ensure!(
        stderr.contains(expected),
        "the error should say {expected:?}: {stderr}"
    );
    ensure!(!stderr.contains(SECRET), "a password was printed: {stderr}");
    Ok(stderr)
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Every request as JSON (its domain value and bookkeeping), by id.
async fn requests(store: &Store) -> Result<Vec<Value>> {
    let mut all = store
        .list_requests(&RequestFilter {
            limit: Some(10_000),
            ..RequestFilter::default()
        })
        .await?;
    all.sort_by(|a, b| a.request.id.as_str().cmp(b.request.id.as_str()));
    let mut out = Vec::new();
    for r in all {
        out.push(json!({
            "request": serde_json::to_value(&r.request)?,
            "grant_key": r.grant_key,
            "account": r.account,
            "removal_failures": r.removal_failures,
            "apply_failures": r.apply_failures,
            "attempts": serde_json::to_value(store.attempts(&r.request.id).await?)?,
        }));
    }
    Ok(out)
}

/// The whole audit trail as JSON, in chain order.
async fn trail(store: &Store) -> Result<Vec<Value>> {
    Ok(store
        .audit_events(&AuditFilter::default())
        .await?
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?)
}

/// What the two stores must agree on.
async fn same_history(a: &Store, b: &Store) -> Result<(usize, usize, String)> {
    let (ra, rb) = (requests(a).await?, requests(b).await?);
    ensure!(ra == rb, "requests differ:\n{ra:#?}\n{rb:#?}");
    let (ta, tb) = (trail(a).await?, trail(b).await?);
    ensure!(ta == tb, "audit trails differ:\n{ta:#?}\n{tb:#?}");
    let (va, vb) = (a.verify_audit().await?, b.verify_audit().await?);
    ensure!(va.ok && va == vb, "verification differs: {va:?} {vb:?}");
    Ok((ra.len(), ta.len(), va.head.unwrap_or_default()))
}

async fn post_ok(app: &TestApp, user: &str, path: &str, body: Value) -> Result<Value> {
    let (status, v) = app.post(user, path, body).await?;
    ensure!(status.is_success(), "POST {path} as {user}: {status} {v}");
    Ok(v)
}

/// The installation being moved: requests in every kind of state, and
/// their ids by what they show.
struct History {
    active: String,
    extension: String,
    revoked: String,
    ended: String,
    rejected: String,
    pending: String,
}

async fn make_history(app: &TestApp) -> Result<History> {
    let active = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    app.approve("bob", &active).await?;
    app.wait_state(&active, "active", WAIT).await?;
    let extension = post_ok(
        app,
        "alice",
        &format!("/api/v1/requests/{active}/extend"),
        json!({ "duration": "10m", "reason": "the fix takes longer" }),
    )
    .await?["id"]
        .as_str()
        .context("extension without id")?
        .to_owned();

    let revoked = app
        .request("alice", body("demo", "orders", "orders_reader", "30m"))
        .await?;
    app.approve("carol", &revoked).await?;
    app.wait_state(&revoked, "active", WAIT).await?;
    post_ok(
        app,
        "alice",
        &format!("/api/v1/requests/{revoked}/revoke"),
        json!({}),
    )
    .await?;
    app.wait_state(&revoked, "revoked", WAIT).await?;

    let ended = app
        .request("alice", body("demo", "orders", "orders_reader", "4s"))
        .await?;
    app.approve("bob", &ended).await?;
    app.wait_state(&ended, "ended", WAIT).await?;

    let rejected = app
        .request("eve", body("demo", "orders", "orders_reader", "10m"))
        .await?;
    post_ok(
        app,
        "carol",
        &format!("/api/v1/requests/{rejected}/reject"),
        json!({ "comment": "use the read replica" }),
    )
    .await?;

    // Billing needs two approvals: one recorded, still pending.
    let pending = app
        .request("alice", body("demo", "billing", "orders_reader", "10m"))
        .await?;
    app.approve("bob", &pending).await?;
    let v = app.show(&pending).await?;
    ensure!(v["state"] == "pending", "{v}");
    Ok(History {
        active,
        extension,
        revoked,
        ended,
        rejected,
        pending,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_installation_moves_to_postgresql_with_its_history_and_audit_chain() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let sqlite = sqlite_url(&dir.path().join("elevate.db"));
    let app = TestApp::start(&dry_run_config_on(&sqlite, &Setup::default())).await?;
    let h = make_history(&app).await?;
    let shown_before = app.show(&h.revoked).await?;

    let cluster = PgCluster::start()?;
    cluster.psql("CREATE DATABASE moved")?;
    let postgres = cluster.url("postgres", Some(SECRET), "moved");

    // While elevate runs on the file, the copy is refused.
    let out = db_copy(&sqlite, &postgres).await?;
    refused(&out, "another elevate process is using this database")?;
    app.stop().await;

    let out = db_copy(&sqlite, &postgres).await?;
    let (stdout, stderr) = text(&out);
    ensure!(out.status.success(), "db copy failed: {stdout} {stderr}");
    ensure!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "a password was printed: {stdout} {stderr}"
    );
    ensure!(
        stdout.contains("audit chain verified"),
        "the copy should say the chain verified: {stdout}"
    );

    let source = Store::open(&sqlite).await?;
    let copy = Store::open(&postgres).await?;
    let (requests, events, head) = same_history(&source, &copy).await?;
    ensure!(requests == 6, "{requests} requests copied: {stdout}");
    ensure!(
        stdout.contains(&format!("audit events: {events}, head {head}")),
        "the summary should give the count and head: {stdout}"
    );
    ensure!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["requests", "6", "rows"]),
        "the summary should count the requests: {stdout}"
    );
    let states: Vec<(String, String)> = [
        (&h.active, "active"),
        (&h.extension, "pending"),
        (&h.revoked, "revoked"),
        (&h.ended, "ended"),
        (&h.rejected, "rejected"),
        (&h.pending, "pending"),
    ]
    .into_iter()
    .map(|(id, s)| (id.clone(), s.to_owned()))
    .collect();
    for (id, state) in &states {
        let id = elevate_core::values::RequestId::parse(id)?;
        let r = copy
            .get_request(&id)
            .await?
            .context("a request is missing")?;
        ensure!(
            r.request.state.name() == state,
            "{id} is {} in the copy, not {state}",
            r.request.state.name()
        );
    }
    source.close().await;
    drop(source);
    copy.close().await;
    drop(copy);

    // Copying again into the copy (it now holds data) is refused and
    // changes nothing.
    let before = cluster.psql_db("moved", "SELECT count(*) FROM audit")?;
    let out = db_copy(&sqlite, &postgres).await?;
    refused(&out, "not empty")?;
    ensure!(cluster.psql_db("moved", "SELECT count(*) FROM audit")? == before);
    ensure!(cluster.psql_db("moved", "SELECT count(*) FROM requests")? == "6");

    // elevate runs on the copy: the chain verifies through the CLI, the
    // history shows, and work goes on (new jobs and events after the
    // copied ones).
    let app = TestApp::start(&dry_run_config_on(&postgres, &Setup::default())).await?;
    let url = app.url.clone();
    let out =
        tokio::task::spawn_blocking(move || cli(&url, "dave", &["audit", "verify"])).await??;
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.success()
            && stdout.contains("intact")
            && stdout.contains(&format!("{events} events")),
        "`elevate audit verify` on the copy: {stdout} {stderr}"
    );
    let shown_after = app.show(&h.revoked).await?;
    ensure!(
        shown_after["events"] == shown_before["events"]
            && shown_after["state"] == shown_before["state"]
            && shown_after["attempts"] == shown_before["attempts"],
        "the history of {} changed:\n{shown_before}\n{shown_after}",
        h.revoked
    );
    ensure!(
        shown_after["events"]
            .as_array()
            .is_some_and(|e| e.len() >= 4),
        "{shown_after}"
    );
    app.approve("carol", &h.pending).await?;
    app.wait_state(&h.pending, "active", WAIT).await?;
    app.approve("bob", &h.extension).await?;
    post_ok(
        &app,
        "alice",
        &format!("/api/v1/requests/{}/revoke", h.active),
        json!({}),
    )
    .await?;
    app.wait_state(&h.active, "revoked", WAIT).await?;
    let (status, v) = app.get("dave", "/api/v1/audit/verify").await?;
    ensure!(status == StatusCode::OK && v["ok"] == true, "{v}");
    ensure!(
        v["events"].as_u64().is_some_and(|n| n > events as u64),
        "new events should follow the copied ones: {v}"
    );
    app.stop().await;

    // And back: PostgreSQL as the source, a new SQLite file as the copy.
    let back = sqlite_url(&dir.path().join("back.db"));
    let out = db_copy(&postgres, &back).await?;
    let (stdout, stderr) = text(&out);
    ensure!(out.status.success(), "copy back failed: {stdout} {stderr}");
    let copy = Store::open(&postgres).await?;
    let back = Store::open(&back).await?;
    let (requests, _, _) = same_history(&copy, &back).await?;
    ensure!(requests == 6);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_refused_into_a_database_holding_data_and_for_bad_urls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let source = sqlite_url(&dir.path().join("elevate.db"));
    let app = TestApp::start(&dry_run_config_on(&source, &Setup::default())).await?;
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    app.stop().await;

    // A destination with history of its own.
    let other = sqlite_url(&dir.path().join("other.db"));
    let app = TestApp::start(&dry_run_config_on(&other, &Setup::default())).await?;
    app.request("eve", body("demo", "orders", "orders_reader", "10m"))
        .await?;
    app.stop().await;
    let store = Store::open(&other).await?;
    let before = (requests(&store).await?, trail(&store).await?);
    store.close().await;
    drop(store);

    let out = db_copy(&source, &other).await?;
    let stderr = refused(&out, "the destination database is not empty")?;
    ensure!(stderr.contains("requests: 1 row"), "{stderr}");
    let store = Store::open(&other).await?;
    ensure!(
        (requests(&store).await?, trail(&store).await?) == before,
        "a refused copy changed the destination"
    );
    store.close().await;
    drop(store);

    // Bad URLs: one clear line, passwords redacted.
    let out = db_copy(
        &source,
        &format!("mysql://admin:{SECRET}@db.internal/elevate"),
    )
    .await?;
    let stderr = refused(&out, "--to: unsupported database URL scheme")?;
    ensure!(
        stderr.contains("mysql://admin:***@db.internal/elevate"),
        "{stderr}"
    );
    let missing = sqlite_url(&dir.path().join("missing.db"));
    let out = db_copy(&missing, &sqlite_url(&dir.path().join("new.db"))).await?;
    refused(&out, "does not exist")?;
    ensure!(
        !dir.path().join("missing.db").exists(),
        "a missing source must not be created"
    );
    let out = db_copy(&source, &source).await?;
    refused(&out, "the same database")?;

    // The embedded store copies into a new file as well.
    let copy = sqlite_url(&dir.path().join("copy.db"));
    let out = db_copy(&source, &copy).await?;
    let (stdout, stderr) = text(&out);
    ensure!(out.status.success(), "db copy failed: {stdout} {stderr}");
    let (source, copy) = (Store::open(&source).await?, Store::open(&copy).await?);
    let (requests, events, _) = same_history(&source, &copy).await?;
    ensure!(
        requests == 1 && events >= 3,
        "{requests} requests, {events} events"
    );
    Ok(())
}
