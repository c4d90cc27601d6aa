//! The decision point `GET /api/v1/check`: may this user request X, and
//! are they elevated for it right now?

use std::time::Duration;

use anyhow::Result;
use reqwest::StatusCode;

use crate::common::{body, dry_run_config, Setup, TestApp};

const Q: &str = "/api/v1/check?target=demo&resource=orders&role=orders_writer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tells_eligibility_and_whether_the_grant_is_live_now() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let app = TestApp::start(&dry_run_config(
        &dir.path().join("elevate.db"),
        &Setup::default(),
    )?)
    .await?;

    let (status, v) = app.get("alice", Q).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["eligible"], true);
    assert_eq!(v["elevated"], false);
    assert_eq!(v["terms"]["approval_required"], true);
    assert_eq!(v["terms"]["max_duration"], "1h");

    let (_, v) = app.get("bob", Q).await?;
    assert_eq!(
        v["eligible"], false,
        "bob approves but may not request: {v}"
    );
    assert!(v["not_eligible_because"]
        .as_str()
        .is_some_and(|s| s.contains("not eligible")));

    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "10m"))
        .await?;
    let (_, v) = app.get("alice", Q).await?;
    assert_eq!(v["elevated"], false, "a pending request is not access");
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", Duration::from_secs(20))
        .await?;
    let (_, v) = app.get("alice", Q).await?;
    assert_eq!(v["elevated"], true);
    assert_eq!(v["grant"]["id"], id.as_str());

    // Asking about someone else is for admins and auditors.
    let (status, v) = app.get("eve", &format!("{Q}&user=alice")).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = app.get("dave", &format!("{Q}&user=ALICE")).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["elevated"], true);
    let (status, v) = app.get("dave", &format!("{Q}&user=nobody")).await?;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_user"))
    );
    let (status, v) = app
        .get(
            "alice",
            "/api/v1/check?target=demo&resource=nope&role=orders_writer",
        )
        .await?;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_resource"))
    );
    let (status, _) = app.get("alice", "/api/v1/check?target=demo").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    app.post(
        "alice",
        &format!("/api/v1/requests/{id}/revoke"),
        serde_json::json!({}),
    )
    .await?;
    app.wait_state(&id, "revoked", Duration::from_secs(20))
        .await?;
    let (_, v) = app.get("alice", Q).await?;
    assert_eq!(v["elevated"], false);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_is_granted_only_if_the_requester_is_still_eligible_when_it_starts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("elevate.db");
    let config = dry_run_config(&db, &Setup::default())?;
    let app = TestApp::start(&config).await?;
    let pending = app
        .request("alice", body("demo", "orders", "orders_writer", "10m"))
        .await?;
    let mut b = body("demo", "billing", "orders_writer", "10m");
    // Far enough ahead that the approvals and the restart come before it.
    b["start"] =
        serde_json::json!((chrono::Utc::now() + chrono::Duration::seconds(10)).to_rfc3339());
    let scheduled = app.request("alice", b).await?;
    app.approve("bob", &scheduled).await?;
    app.approve("carol", &scheduled).await?;
    assert_eq!(app.show(&scheduled).await?["state"], "scheduled");
    app.stop().await;

    // alice leaves the developers group; elevate restarts with that config.
    let moved = config.replacen(
        "name = \"alice\"\nemail = \"alice@example.com\"\ngroups = [\"developers\"]",
        "name = \"alice\"\nemail = \"alice@example.com\"\ngroups = [\"former-staff\"]",
        1,
    );
    anyhow::ensure!(moved != config, "test config layout changed");
    let app = TestApp::start(&moved).await?;
    let v = app.approve("bob", &pending).await?;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(
        v["decision_comment"]
            .as_str()
            .is_some_and(|c| c.contains("no longer eligible")),
        "{v}"
    );
    let v = app
        .wait_state(&scheduled, "cancelled", Duration::from_secs(30))
        .await?;
    assert!(
        v["events"]
            .as_array()
            .is_some_and(|e| !e.iter().any(|e| e["action"] == "grant.activated")),
        "{v}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_is_a_json_400() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let app = TestApp::start(&dry_run_config(
        &dir.path().join("elevate.db"),
        &Setup::default(),
    )?)
    .await?;
    let (status, v) = app.get("alice", "/api/v1/requests/%FF").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], "invalid_input", "{v}");
    Ok(())
}
