//! Crash safety: elevate is killed with SIGKILL while grants are active,
//! their deadlines pass while it is down, and on restart it catches up:
//! every overdue grant is removed, nothing is applied twice, and the audit
//! chain is intact.

use std::time::Duration;

use anyhow::{ensure, Result};
use elevate_testkit::database_url;

use crate::common::{body, PgTarget, ServerProcess, Setup, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_grants_are_removed_on_restart_after_a_kill_and_nothing_is_granted_twice(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pg = PgTarget::start(dir.path())?;
    let db = dir.path().join("elevate.db");
    let config = dir.path().join("elevate.toml");
    // A short job lease: on PostgreSQL a restarted elevate does not free the
    // killed one's leases (another replica might hold them), it waits them
    // out.
    let text = pg.config(&db, &Setup::default())?;
    let leased = text.replacen(
        "retry_max_backoff = \"1s\"\n",
        "retry_max_backoff = \"1s\"\njob_lease = \"5s\"\n",
        1,
    );
    ensure!(leased != text, "test config layout changed");
    std::fs::write(&config, leased)?;
    let port = elevate_testkit::free_port()?;
    let mut server = ServerProcess::start(&config, port).await?;
    let app = TestApp::external(&server.url, database_url(&db)?);

    let mut ids = Vec::new();
    for role in ["orders_writer", "orders_reader"] {
        let id = app
            .request("alice", body("pg", "orders", role, "15s"))
            .await?;
        app.approve("bob", &id).await?;
        ids.push(id);
    }
    for id in &ids {
        app.wait_state(id, "active", Duration::from_secs(20))
            .await?;
    }
    let mut ends = Vec::new();
    for id in &ids {
        let v = app.show(id).await?;
        let ends_at = chrono::DateTime::parse_from_rfc3339(v["ends_at"].as_str().unwrap_or(""))?;
        ends.push(ends_at.with_timezone(&chrono::Utc));
    }
    let (first_end, last_end) = match (ends.iter().min(), ends.iter().max()) {
        (Some(first), Some(last)) => (*first, *last),
        _ => anyhow::bail!("no grants"),
    };
    server.kill()?;
    // The windows were long enough to be running still when elevate died
    // (however slow the set-up was): the roles are there.
    ensure!(
        first_end > chrono::Utc::now(),
        "a grant ended before elevate was killed"
    );
    ensure!(pg.is_member("alice", "orders_writer")? && pg.is_member("alice", "orders_reader")?);
    // Let every deadline pass while elevate is down.
    let left = (last_end - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(1)).await;
    ensure!(
        pg.is_member("alice", "orders_writer")?,
        "nothing could have removed the role while elevate was down"
    );

    // On a new port: the old one may have been taken meanwhile.
    let server = ServerProcess::start(&config, elevate_testkit::free_port()?).await?;
    let app = TestApp::external(&server.url, database_url(&db)?);
    for id in &ids {
        app.wait_state(id, "ended", Duration::from_secs(20)).await?;
    }
    ensure!(!pg.is_member("alice", "orders_writer")?);
    ensure!(!pg.is_member("alice", "orders_reader")?);

    for id in &ids {
        let v = app.show(id).await?;
        let actions: Vec<&str> = v["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            actions.iter().filter(|a| **a == "grant.activated").count(),
            1,
            "{actions:?}"
        );
        assert_eq!(
            actions.iter().filter(|a| **a == "grant.removed").count(),
            1,
            "{actions:?}"
        );
        let applies = v["attempts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["kind"] == "apply" && a["outcome"] == "ok")
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(applies, 1, "applied more than once: {}", v["attempts"]);
        // The removal was late by the downtime, and says so.
        let removed = v["events"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["action"] == "grant.removed").cloned())
            .unwrap_or_default();
        ensure!(
            removed["details"]["lateness_ms"].as_i64().unwrap_or(0) > 0,
            "{removed}"
        );
    }
    let (_, verify) = app.get("dave", "/api/v1/audit/verify").await?;
    assert_eq!(verify["ok"], true, "{verify}");
    drop(server);
    Ok(())
}
