//! The whole lifecycle against a real PostgreSQL target: approval, use of
//! the role, removal at the deadline (ending sessions that already took
//! the role), overlapping grants, revocation, deactivation, quorum and
//! scope, pending timeout, scheduled start and extension.

use std::time::Duration;

use anyhow::{ensure, Result};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::common::{body, env, eventually, Env, PgTarget, Setup, TestApp};

const WAIT: Duration = Duration::from_secs(20);

async fn can_write_as_writer(conn: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SET ROLE orders_writer")
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO orders VALUES (1)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_grant_is_usable_then_revoked_at_the_deadline_ending_open_sessions() -> Result<()>
{
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    // Long enough for alice to sign in and use the role on a loaded
    // machine before the deadline.
    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "12s"))
        .await?;
    assert_eq!(app.show(&id).await?["state"], "pending");
    ensure!(
        !pg.is_member("alice", "orders_writer")?,
        "nothing granted before approval"
    );

    app.approve("bob", &id).await?;
    let active = app.wait_state(&id, "active", WAIT).await?;
    ensure!(pg.is_member("alice", "orders_writer")?);

    // alice takes the role in a session she keeps open.
    let mut session = pg.alice().await?;
    can_write_as_writer(&mut session).await?;

    let ended = app.wait_state(&id, "ended", WAIT).await?;
    ensure!(
        !pg.is_member("alice", "orders_writer")?,
        "role still granted after the deadline"
    );
    // Removal happened after the deadline, never before it.
    let ends_at =
        chrono::DateTime::parse_from_rfc3339(active["ends_at"].as_str().unwrap_or_default())?;
    let ended_at =
        chrono::DateTime::parse_from_rfc3339(ended["ended_at"].as_str().unwrap_or_default())?;
    ensure!(
        ended_at >= ends_at,
        "ended {ended_at} before the window end {ends_at}"
    );

    // The session that had SET ROLE was terminated...
    let still_usable = sqlx::query("INSERT INTO orders VALUES (2)")
        .execute(&mut session)
        .await;
    ensure!(
        still_usable.is_err(),
        "a session that had SET ROLE kept its rights after revocation"
    );
    // ...and a new one cannot take the role.
    let mut fresh = pg.alice().await?;
    ensure!(sqlx::query("SET ROLE orders_writer")
        .execute(&mut fresh)
        .await
        .is_err());
    let count = pg.cluster.psql("SELECT count(*) FROM orders")?;
    assert_eq!(count, "1");

    let events: Vec<String> = ended["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["action"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        events,
        [
            "request.created",
            "request.approved",
            "grant.activated",
            "grant.window_ended",
            "grant.removed"
        ]
    );
    fresh.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_grants_keep_the_role_until_the_last_one_ends() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    // Same user and role on two resources of the same server: in
    // PostgreSQL that is one membership, so they overlap.
    // The short one must still be running when the long one is approved,
    // and the long one when the short one ends.
    let short = app
        .request("alice", body("pg", "orders", "orders_writer", "8s"))
        .await?;
    let long = app
        .request("alice", body("pg", "orders", "orders_writer", "16s"))
        .await?;
    app.approve("bob", &short).await?;
    app.approve("bob", &long).await?;
    app.wait_state(&long, "active", WAIT).await?;

    let ended = app.wait_state(&short, "ended", WAIT).await?;
    ensure!(
        pg.is_member("alice", "orders_writer")?,
        "the short grant's end took the role from the long grant"
    );
    let attempts = ended["attempts"].as_array().cloned().unwrap_or_default();
    ensure!(
        attempts
            .iter()
            .any(|a| a["kind"] == "remove" && a["outcome"] == "skipped"),
        "the short grant's removal should be recorded as skipped: {attempts:?}"
    );
    let mut session = pg.alice().await?;
    can_write_as_writer(&mut session).await?;

    app.wait_state(&long, "ended", WAIT).await?;
    ensure!(!pg.is_member("alice", "orders_writer")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_early_deactivation_remove_the_role_at_once() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "1h"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    let mut session = pg.alice().await?;
    can_write_as_writer(&mut session).await?;

    // An approver in scope revokes.
    let (status, v) = app
        .post(
            "carol",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({"comment": "incident closed"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    let revoked = app.wait_state(&id, "revoked", WAIT).await?;
    assert_eq!(revoked["decided_by"], "carol");
    ensure!(!pg.is_member("alice", "orders_writer")?);
    ensure!(
        sqlx::query("SELECT 1").execute(&mut session).await.is_err(),
        "open session survived revocation"
    );

    // The requester ends her own grant early.
    let id = app
        .request("alice", body("pg", "orders", "orders_reader", "1h"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    ensure!(pg.is_member("alice", "orders_reader")?);
    let (status, _) = app
        .post("alice", &format!("/api/v1/requests/{id}/revoke"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK);
    let v = app.wait_state(&id, "revoked", WAIT).await?;
    ensure!(!pg.is_member("alice", "orders_reader")?);
    ensure!(
        v["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["action"] == "grant.deactivated")),
        "deactivation must be named as such in the audit trail"
    );

    // Someone outside the scope cannot revoke.
    let id = app
        .request("alice", body("pg", "orders", "orders_reader", "1h"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    let (status, v) = app
        .post("eve", &format!("/api/v1/requests/{id}/revoke"), json!({}))
        .await?;
    ensure!(
        status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
        "{status} {v}"
    );
    ensure!(pg.is_member("alice", "orders_reader")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_two_needs_two_distinct_approvers_other_than_the_requester() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    let id = app
        .request("alice", body("pg", "billing", "orders_reader", "10m"))
        .await?;

    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/approve"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["code"], "self_approval");

    let (status, v) = app
        .post("eve", &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await?;
    // eve is not in the approvers' scope: she may not even see it.
    ensure!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{status} {v}"
    );

    let first = app.approve("bob", &id).await?;
    assert_eq!(first["state"], "pending");
    assert_eq!(first["approvals"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(first["quorum"], 2);
    ensure!(!pg.is_member("alice", "orders_reader")?);

    let (status, v) = app
        .post("bob", &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(v["code"], "already_approved");

    let second = app.approve("carol", &id).await?;
    ensure!(
        second["state"] == "approved" || second["state"] == "active",
        "{second}"
    );
    app.wait_state(&id, "active", WAIT).await?;
    ensure!(pg.is_member("alice", "orders_reader")?);

    // A rejection by any approver ends a request.
    let id = app
        .request("alice", body("pg", "billing", "orders_reader", "10m"))
        .await?;
    app.approve("bob", &id).await?;
    let (status, v) = app
        .post(
            "carol",
            &format!("/api/v1/requests/{id}/reject"),
            json!({"comment": "use the read replica"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "rejected");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_request_expires_after_its_timeout() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup {
        pending_timeout: "2s",
        ..Setup::default()
    })
    .await?;
    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "10m"))
        .await?;
    let v = app.wait_state(&id, "expired", WAIT).await?;
    assert_eq!(v["events"][1]["action"], "request.expired");
    let (status, v) = app
        .post("bob", &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    ensure!(!pg.is_member("alice", "orders_writer")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_start_grants_at_the_start_time_and_not_before() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    // Far enough ahead for the request and approval to be done before it.
    let start = chrono::Utc::now() + chrono::Duration::seconds(10);
    let mut b = body("pg", "orders", "orders_writer", "10m");
    b["start"] = json!(start.to_rfc3339());
    let id = app.request("alice", b).await?;
    let v = app.approve("bob", &id).await?;
    assert_eq!(v["state"], "scheduled");
    ensure!(
        !pg.is_member("alice", "orders_writer")?,
        "granted before its start"
    );

    let active = app.wait_state(&id, "active", WAIT).await?;
    let since =
        chrono::DateTime::parse_from_rfc3339(active["active_since"].as_str().unwrap_or_default())?;
    ensure!(
        since >= start,
        "activated at {since}, before the start {start}"
    );
    ensure!(pg.is_member("alice", "orders_writer")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_lengthens_an_active_grant_without_interruption() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    // Long enough to be extended before it ends on a loaded machine.
    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "12s"))
        .await?;
    app.approve("bob", &id).await?;
    let before = app.wait_state(&id, "active", WAIT).await?;
    let mut session = pg.alice().await?;
    can_write_as_writer(&mut session).await?;

    let (status, ext) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/extend"),
            json!({"duration": "1h", "reason": "migration still running"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{ext}");
    assert_eq!(ext["state"], "pending");
    assert_eq!(ext["extends"], id.as_str());
    let ext_id = ext["id"].as_str().unwrap_or_default().to_owned();
    // A second extension while one is pending is refused.
    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/extend"),
            json!({"duration": "1h", "reason": "again"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    let approved = app.approve("bob", &ext_id).await?;
    assert_eq!(approved["state"], "extended");
    let after = app.show(&id).await?;
    assert_eq!(after["state"], "active");
    let old_end =
        chrono::DateTime::parse_from_rfc3339(before["ends_at"].as_str().unwrap_or_default())?;
    let new_end =
        chrono::DateTime::parse_from_rfc3339(after["ends_at"].as_str().unwrap_or_default())?;
    assert_eq!(new_end - old_end, chrono::Duration::hours(1));

    // Past the original end, the same session still works: no interruption.
    let past_end = (old_end.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        + Duration::from_secs(1);
    tokio::time::sleep(past_end).await;
    sqlx::query("INSERT INTO orders VALUES (3)")
        .execute(&mut session)
        .await?;
    let v = app.show(&id).await?;
    assert_eq!(v["state"], "active");
    ensure!(
        v["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().all(|a| a["kind"] == "apply")),
        "no removal may have run: {}",
        v["attempts"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_is_granted_without_approval_and_awaits_review() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    let mut b = body("pg", "orders", "orders_writer", "10m");
    b["break_glass"] = json!(true);
    let id = app.request("alice", b).await?;
    let v = app.wait_state(&id, "active", WAIT).await?;
    ensure!(pg.is_member("alice", "orders_writer")?);
    assert_eq!(v["break_glass"], true);
    assert_eq!(v["review"], "awaiting");
    ensure!(
        v["status"]
            .as_str()
            .is_some_and(|s| s.contains("break-glass")),
        "{}",
        v["status"]
    );

    let (status, r) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/acknowledge"),
            json!({}),
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    let (status, r) = app
        .post(
            "bob",
            &format!("/api/v1/requests/{id}/acknowledge"),
            json!({"comment": "checked the incident"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["review"], "acknowledged");
    let listed = app.get("alice", "/api/v1/grants?active=true").await?.1;
    ensure!(listed["grants"].as_array().is_some_and(|g| g
        .iter()
        .any(|g| g["id"] == id.as_str() && g["break_glass"] == true)));
    eventually("the break-glass grant's audit event", WAIT, || async {
        let v = app.show(&id).await?;
        Ok(v["events"][0]["details"]["break_glass"] == true)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_removed_from_the_login_it_was_given_to_even_after_the_mapping_changes(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pg = PgTarget::start(dir.path())?;
    pg.cluster.psql("CREATE ROLE alice_pg LOGIN")?;
    let db = dir.path().join("elevate.db");
    let config = pg.config(&db, &Setup::default())?;
    let app = TestApp::start(&config).await?;
    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "1h"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    ensure!(pg.is_member("alice", "orders_writer")?);
    app.stop().await;

    // The operator now maps alice to another login and restarts elevate.
    let remapped = config.replacen(
        "connect_timeout = \"2s\"\n",
        "connect_timeout = \"2s\"\nuser_map = { alice = \"alice_pg\" }\n",
        1,
    );
    ensure!(remapped != config, "test config layout changed");
    let app = TestApp::start(&remapped).await?;
    let (status, v) = app
        .post("alice", &format!("/api/v1/requests/{id}/revoke"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    app.wait_state(&id, "revoked", WAIT).await?;
    ensure!(
        !pg.is_member("alice", "orders_writer")?,
        "the role stayed with the login it was given to"
    );
    ensure!(!pg.is_member("alice_pg", "orders_writer")?);
    Ok(())
}
