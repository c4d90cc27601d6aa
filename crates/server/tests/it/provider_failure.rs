//! Target outages: with the database stopped, an approved grant is retried
//! (visible in its attempts and in metrics) and never reported active; it
//! applies once the database is back. Removals likewise retry until they
//! succeed, and show as "revocation failing" meanwhile.

use std::time::Duration;

use anyhow::{ensure, Result};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{body, env, eventually, Env, Setup};

const WAIT: Duration = Duration::from_secs(30);

fn retries(v: &serde_json::Value, kind: &str) -> usize {
    v["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["kind"] == kind && a["outcome"] == "retry")
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_retried_while_the_target_is_down_and_never_reported_active() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    pg.cluster.stop()?;

    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "10m"))
        .await?;
    app.approve("bob", &id).await?;
    eventually("two failed apply attempts", WAIT, || async {
        Ok(retries(&app.show(&id).await?, "apply") >= 2)
    })
    .await?;
    let v = app.show(&id).await?;
    assert_eq!(
        v["state"], "approved",
        "a grant that could not be applied must not be active"
    );
    ensure!(
        v["status"].as_str().is_some_and(|s| s.contains("failing")),
        "{}",
        v["status"]
    );
    let error = v["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        !error.is_empty() && !error.contains("broker-secret"),
        "attempt error should explain, without secrets: {error}"
    );

    let metrics = app
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await?
        .1;
    let text = metrics.as_str().unwrap_or_default();
    ensure!(
        text.lines()
            .any(|l| l.starts_with("elevate_job_attempts_total{kind=\"apply\",outcome=\"retry\"}")),
        "metrics lack apply retries:\n{text}"
    );
    ensure!(
        text.lines()
            .any(|l| l.starts_with("elevate_job_retries_total ") && !l.ends_with(" 0")),
        "{text}"
    );

    pg.cluster.start_again()?;
    app.wait_state(&id, "active", WAIT).await?;
    ensure!(pg.is_member("alice", "orders_writer")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_is_retried_until_the_target_returns() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    let id = app
        .request("alice", body("pg", "orders", "orders_writer", "10m"))
        .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;

    pg.cluster.stop()?;
    let (status, v) = app
        .post(
            "bob",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({"comment": "done"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually("two failed removal attempts", WAIT, || async {
        Ok(retries(&app.show(&id).await?, "remove") >= 2)
    })
    .await?;
    let v = app.show(&id).await?;
    assert_eq!(
        v["state"], "ending",
        "a removal that failed must not be reported done"
    );
    ensure!(
        v["status"]
            .as_str()
            .is_some_and(|s| s.contains("revocation failing")),
        "{}",
        v["status"]
    );
    // The first failure is an audit event (and so a notification to the
    // requester, approvers and admins), once, however often it retries.
    let (_, audit) = app
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await?;
    let failing: Vec<&serde_json::Value> = audit["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["action"] == "grant.removal_failing")
                .collect()
        })
        .unwrap_or_default();
    ensure!(failing.len() == 1, "{audit}");
    ensure!(failing[0]["actor"] == "system", "{}", failing[0]);

    pg.cluster.start_again()?;
    app.wait_state(&id, "revoked", WAIT).await?;
    ensure!(!pg.is_member("alice", "orders_writer")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_the_target_refuses_for_good_fails_with_the_targets_reason() -> Result<()> {
    let Env { pg: _pg, app, _dir } = env(Setup::default()).await?;
    // eve is eligible in elevate but has no login on this database server.
    let id = app
        .request("eve", body("pg", "orders", "orders_reader", "10m"))
        .await?;
    app.approve("bob", &id).await?;
    let v = app.wait_state(&id, "failed", WAIT).await?;
    let reason = v["decision_comment"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("eve"),
        "the reason should name the missing login: {v}"
    );
    ensure!(
        v["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["action"] == "grant.failed")),
        "{v}"
    );
    ensure!(
        !v["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["action"] == "grant.activated")),
        "a refused grant must never be reported active"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_that_end_during_an_outage_are_removed_once_the_target_returns() -> Result<()> {
    let Env { pg, app, _dir } = env(Setup::default()).await?;
    let mut ids = Vec::new();
    // Long enough that both are still running when the target goes down,
    // however slow the machine is at setting them up (checked below).
    for (role, duration) in [("orders_writer", "15s"), ("orders_reader", "16s")] {
        let id = app
            .request("alice", body("pg", "orders", role, duration))
            .await?;
        app.approve("bob", &id).await?;
        ids.push(id);
    }
    for id in &ids {
        app.wait_state(id, "active", WAIT).await?;
    }

    pg.cluster.stop()?;
    for id in &ids {
        let v = app.show(id).await?;
        let ends_at = chrono::DateTime::parse_from_rfc3339(v["ends_at"].as_str().unwrap_or(""))?;
        ensure!(
            ends_at > chrono::Utc::now(),
            "the grant ended before the target went down: {v}"
        );
    }
    // Both windows end while the target is down: the removals fail and are
    // retried, and neither grant may be reported ended meanwhile.
    eventually(
        "both removals failing",
        WAIT + Duration::from_secs(16),
        || async {
            let mut failing = 0;
            for id in &ids {
                let v = app.show(id).await?;
                ensure!(
                    v["state"] != "ended",
                    "reported ended while the target was down: {v}"
                );
                if v["state"] == "ending" && retries(&v, "remove") >= 1 {
                    failing += 1;
                }
            }
            Ok(failing == ids.len())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &ids {
        let v = app.show(id).await?;
        assert_eq!(v["state"], "ending", "{v}");
        ensure!(
            v["status"]
                .as_str()
                .is_some_and(|s| s.contains("revocation failing")),
            "{}",
            v["status"]
        );
    }

    pg.cluster.start_again()?;
    let back = std::time::Instant::now();
    for id in &ids {
        // retry_max_backoff is 1s in the test config: "within seconds".
        app.wait_state(id, "ended", Duration::from_secs(15)).await?;
    }
    println!(
        "overdue removals done {:?} after the target returned",
        back.elapsed()
    );
    ensure!(!pg.is_member("alice", "orders_writer")?);
    ensure!(!pg.is_member("alice", "orders_reader")?);
    Ok(())
}
