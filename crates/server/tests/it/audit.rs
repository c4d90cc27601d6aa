//! The audit trail: every change of state writes exactly one event, the
//! export is a hash chain, only auditors and admins read it, and `audit
//! verify` passes on an untouched database but names the broken event
//! after a row is edited, deleted or forged directly in the database
//! (SQLite or PostgreSQL, see `elevate_testkit::database`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};

use crate::common::{
    body, cli, connect_store, dry_run_config, dry_run_config_on, token, Setup, TestApp,
};

const WAIT: Duration = Duration::from_secs(20);
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Env {
    _dir: tempfile::TempDir,
    app: TestApp,
}

async fn env() -> Result<Env> {
    let dir = tempfile::tempdir()?;
    let config = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let app = TestApp::start(&config).await?;
    Ok(Env { _dir: dir, app })
}

/// [`env`] with the store on SQLite whatever `ELEVATE_TEST_DATABASE` says.
async fn env_on_sqlite() -> Result<Env> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("elevate.db").display());
    let app = TestApp::start(&dry_run_config_on(&url, &Setup::default())).await?;
    Ok(Env { _dir: dir, app })
}

/// One full lifecycle: alice asks, bob approves, the grant becomes active,
/// bob revokes it and it is removed. Five events.
async fn lifecycle(app: &TestApp, resource: &str) -> Result<String> {
    let id = app
        .request("alice", body("demo", resource, "orders_reader", "30m"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    let (status, v) = app
        .post(
            "bob",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({ "comment": "done" }),
        )
        .await?;
    ensure!(status == StatusCode::OK, "revoke refused: {status} {v}");
    app.wait_state(&id, "revoked", WAIT).await?;
    Ok(id)
}

/// Two lifecycles: ten events.
async fn history(app: &TestApp) -> Result<Vec<String>> {
    Ok(vec![
        lifecycle(app, "orders").await?,
        lifecycle(app, "orders").await?,
    ])
}

async fn events(app: &TestApp) -> Result<Vec<Value>> {
    let (status, v) = app.get("dave", "/api/v1/audit").await?;
    ensure!(status == StatusCode::OK, "audit list: {status} {v}");
    Ok(v["events"].as_array().context("no events array")?.clone())
}

async fn verify(app: &TestApp) -> Result<Value> {
    let (status, v) = app.get("dave", "/api/v1/audit/verify").await?;
    ensure!(status == StatusCode::OK, "verify: {status} {v}");
    Ok(v)
}

async fn export_text(app: &TestApp, user: &str) -> Result<(StatusCode, String)> {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/audit/export", app.url))
        .bearer_auth(token(user))
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

async fn database(app: &TestApp) -> Result<sqlx::AnyConnection> {
    connect_store(&app.db_url).await
}

/// Runs SQL directly on the app's database, as an intruder with file
/// access would.
async fn tamper(app: &TestApp, sql: &str) -> Result<u64> {
    let mut db = database(app).await?;
    let done = sqlx::query(sql).execute(&mut db).await?;
    db.close().await?;
    Ok(done.rows_affected())
}

/// The chain's link hash, computed the documented way (what a forger who
/// read the source would do).
fn link_hash(
    prev: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    request: &str,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &seq.to_string(),
        &at_ms.to_string(),
        actor,
        action,
        request,
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.update(details.as_bytes());
    hex::encode(h.finalize())
}

/// The CLI's `audit verify` as dave, off the async runtime.
async fn cli_verify(app: &TestApp, user: &str) -> Result<std::process::Output> {
    let url = app.url.clone();
    let user = user.to_owned();
    tokio::task::spawn_blocking(move || cli(&url, &user, &["audit", "verify"])).await?
}

/// The API and the CLI both report the chain broken at `seq`.
async fn reported_broken_at(app: &TestApp, seq: i64) -> Result<Value> {
    let v = verify(app).await?;
    ensure!(v["ok"] == false, "verify passed a tampered chain: {v}");
    ensure!(
        v["broken_at"] == seq,
        "expected the break at event {seq}: {v}"
    );
    ensure!(
        v["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "no problem described: {v}"
    );

    let out = cli_verify(app, "dave").await?;
    let stdout = String::from_utf8(out.stdout)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        !out.status.success(),
        "`elevate audit verify` exited 0 on a broken chain: {stdout}"
    );
    let named = format!("event {seq}");
    ensure!(
        stdout.contains(&named) && stdout.contains("BROKEN"),
        "the report should name {named}: {stdout}"
    );
    ensure!(
        stderr.lines().count() == 1 && stderr.contains(&named),
        "stderr should be one line naming {named}: {stderr}"
    );
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_writes_exactly_one_event_in_order() -> Result<()> {
    let Env { app, _dir } = env().await?;
    let id = lifecycle(&app, "orders").await?;

    let shown = app.show(&id).await?;
    let own = shown["events"].as_array().context("no events")?;
    let actions: Vec<&str> = own.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "request.created",
            "request.approved",
            "grant.activated",
            "grant.revoked",
            "grant.removed"
        ]
    );
    for e in own {
        ensure!(e["request"] == id.as_str(), "event of another request: {e}");
    }
    let actor = |i: usize| own[i]["actor"].as_str().unwrap_or_default().to_owned();
    ensure!(actor(0).contains("alice"), "created by {}", actor(0));
    ensure!(actor(1).contains("bob"), "approved by {}", actor(1));
    ensure!(actor(3).contains("bob"), "revoked by {}", actor(3));
    ensure!(
        own[0]["details"]["justification"] == "incident INC-42: 受注データの修正",
        "the creation event should carry the justification: {}",
        own[0]
    );

    // Nothing else was written anywhere in the trail.
    let all = events(&app).await?;
    ensure!(
        all.len() == 5,
        "expected 5 events in the whole trail, found {}: {all:?}",
        all.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_an_untouched_database_through_api_and_cli() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;
    let all = events(&app).await?;
    ensure!(all.len() >= 6, "only {} events", all.len());

    let v = verify(&app).await?;
    ensure!(v["ok"] == true, "verify failed an untouched chain: {v}");
    ensure!(
        v["events"] == all.len(),
        "verify counted {} events, the trail has {}",
        v["events"],
        all.len()
    );
    ensure!(
        v["head"] == all[all.len() - 1]["hash"],
        "the head should be the last event's hash: {v}"
    );
    ensure!(v.get("broken_at").is_none_or(Value::is_null), "{v}");

    let out = cli_verify(&app, "dave").await?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "`elevate audit verify` failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("intact") && stdout.contains(&format!("{} events", all.len())),
        "the CLI should say the chain is intact and count it: {stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_event_is_reported_at_its_sequence_number() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;
    ensure!(verify(&app).await?["ok"] == true);

    let changed = tamper(
        &app,
        r#"UPDATE audit SET details = '{"justification":"nothing to see here"}' WHERE seq = 3"#,
    )
    .await?;
    ensure!(changed == 1, "the edit changed {changed} rows");
    let v = reported_broken_at(&app, 3).await?;
    ensure!(
        v["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("event 3"),
        "{v}"
    );

    // The edited trail can still be read and exported (to investigate).
    let all = events(&app).await?;
    ensure!(all.len() == 10, "{} events", all.len());
    let (status, _) = export_text(&app, "dave").await?;
    ensure!(status == StatusCode::OK, "export after tampering: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_with_a_recomputed_hash_is_reported_at_the_next_link() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;

    let mut db = database(&app).await?;
    let row =
        sqlx::query("SELECT at, actor, action, request_id, prev_hash FROM audit WHERE seq = 3")
            .fetch_one(&mut db)
            .await?;
    let details = r#"{"justification":"nothing to see here"}"#;
    let forged = link_hash(
        &row.get::<String, _>(4),
        3,
        row.get(0),
        &row.get::<String, _>(1),
        &row.get::<String, _>(2),
        &row.get::<Option<String>, _>(3).unwrap_or_default(),
        details,
    );
    sqlx::query("UPDATE audit SET details = $1, hash = $2 WHERE seq = 3")
        .bind(details)
        .bind(&forged)
        .execute(&mut db)
        .await?;
    db.close().await?;

    // Event 3 is self-consistent now, but event 4 still links to the
    // original event 3.
    reported_broken_at(&app, 4).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_middle_event_is_reported_as_missing() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;

    ensure!(tamper(&app, "DELETE FROM audit WHERE seq = 4").await? == 1);
    let v = reported_broken_at(&app, 4).await?;
    ensure!(
        v["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("missing"),
        "{v}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_last_event_is_reported_by_the_head_check() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;
    let last = events(&app).await?.len() as i64;

    ensure!(tamper(&app, &format!("DELETE FROM audit WHERE seq = {last}")).await? == 1);
    reported_broken_at(&app, last).await?;

    // Deleting the recorded head as well is still noticed.
    tamper(&app, "DELETE FROM audit_head").await?;
    let v = verify(&app).await?;
    ensure!(
        v["ok"] == false,
        "a chain without its head passed verify: {v}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_is_reported_even_with_a_correct_hash() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;
    let all = events(&app).await?;
    let last = all.len() as i64;
    let last_hash = all[all.len() - 1]["hash"]
        .as_str()
        .context("no hash")?
        .to_owned();
    let request = all[0]["request"].as_str().context("no request")?.to_owned();
    let details = r#"{"comment":"approved by the CTO"}"#;
    let at_ms = chrono::Utc::now().timestamp_millis();
    let forged = last + 1;

    // A forged row with a made-up hash.
    tamper(
        &app,
        &format!(
            "INSERT INTO audit (seq, at, actor, action, request_id, details, prev_hash, hash) \
             VALUES ({forged}, {at_ms}, 'user:mallory', 'request.approved', '{request}', '{details}', '{last_hash}', '{}')",
            "ab".repeat(32)
        ),
    )
    .await?;
    reported_broken_at(&app, forged).await?;

    // The same row with the hash recomputed: only the recorded head tells.
    let hash = link_hash(
        &last_hash,
        forged,
        at_ms,
        "user:mallory",
        "request.approved",
        &request,
        details,
    );
    tamper(
        &app,
        &format!("UPDATE audit SET hash = '{hash}' WHERE seq = {forged}"),
    )
    .await?;
    reported_broken_at(&app, forged).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_admins_may_read_or_verify_the_audit_trail() -> Result<()> {
    let Env { app, _dir } = env().await?;
    lifecycle(&app, "orders").await?;

    for user in ["alice", "bob", "eve"] {
        for path in [
            "/api/v1/audit",
            "/api/v1/audit/verify",
            "/api/v1/audit/export",
        ] {
            let (status, v) = app.get(user, path).await?;
            ensure!(
                status == StatusCode::FORBIDDEN && v["code"] == "forbidden",
                "{user} {path}: {status} {v}"
            );
            ensure!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
    }
    let out = cli_verify(&app, "alice").await?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        !out.status.success() && stderr.lines().count() == 1 && stderr.contains("forbidden"),
        "alice's `audit verify` should fail with one line: {stderr}"
    );
    for path in [
        "/api/v1/audit",
        "/api/v1/audit/verify",
        "/api/v1/audit/export",
    ] {
        let (status, v) = app.get("dave", path).await?;
        ensure!(status == StatusCode::OK, "dave {path}: {status} {v}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_is_one_event_per_line_each_linked_to_the_one_before() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;
    let listed = events(&app).await?;

    let (status, text) = export_text(&app, "dave").await?;
    ensure!(status == StatusCode::OK, "export: {status} {text}");
    ensure!(text.ends_with('\n'), "the export should end with a newline");
    let exported: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        exported.len() == listed.len() && exported.len() == 10,
        "exported {} events, listed {}",
        exported.len(),
        listed.len()
    );
    let mut prev = GENESIS.to_owned();
    for (i, e) in exported.iter().enumerate() {
        ensure!(e["seq"] == i as i64 + 1, "event {i} has seq {}", e["seq"]);
        ensure!(
            e["prev_hash"] == prev.as_str(),
            "event {} does not link to the one before: {e}",
            e["seq"]
        );
        ensure!(
            e == &listed[i],
            "export and list differ at {i}: {e} vs {}",
            listed[i]
        );
        prev = e["hash"].as_str().context("no hash")?.to_owned();
    }
    ensure!(verify(&app).await?["head"] == prev.as_str());

    // The CLI writes exactly the same lines.
    let url = app.url.clone();
    let out =
        tokio::task::spawn_blocking(move || cli(&url, "dave", &["audit", "export"])).await??;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        String::from_utf8(out.stdout)? == text,
        "`elevate audit export` differs from the API export"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_altered_to_another_type_is_reported_not_a_crash() -> Result<()> {
    // SQLite-only: only SQLite lets a text value into an integer column;
    // PostgreSQL refuses the edit itself.
    let Env { app, _dir } = env_on_sqlite().await?;
    history(&app).await?;
    ensure!(tamper(&app, "UPDATE audit SET at = 'yesterday' WHERE seq = 3").await? == 1);
    let v = reported_broken_at(&app, 3).await?;
    ensure!(
        v["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("altered"),
        "{v}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_streams_every_event_of_a_history_longer_than_a_page() -> Result<()> {
    let Env { app, _dir } = env().await?;
    history(&app).await?;
    let before = events(&app).await?.len();
    // Filler rows straight into the table (the export does not verify): more
    // than one page of the stream.
    let mut db = database(&app).await?;
    let mut tx = sqlx::Connection::begin(&mut db).await?;
    for seq in 1_000..7_000_i64 {
        sqlx::query("INSERT INTO audit (seq, at, actor, action, request_id, details, prev_hash, hash) VALUES ($1, 0, 'system', 'test.filler', NULL, '{}', '', '')")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    db.close().await?;
    let (status, text) = export_text(&app, "dave").await?;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<i64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).map(|v| v["seq"].as_i64().unwrap_or(-1)))
        .collect::<Result<_, _>>()?;
    assert_eq!(seqs.len(), before + 6_000);
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "events out of order");
    Ok(())
}
