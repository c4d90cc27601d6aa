//! What the `throughput` and `replicas` benches share: one lifecycle's
//! config, its per-phase timings and their summary, and small helpers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub mod basics;
use basics::{ms, post, stats};

/// Approvers `a0`..`a3`; client `c` approves as `a{c % APPROVERS}`.
pub const APPROVERS: usize = 4;

/// Requesters `r0`.. and approvers `a0`..`a3` on a dry-run target, with an
/// auditor (`t-auditor`) for the audit check; the store at `database`.
pub fn config(database: &str, requesters: usize) -> String {
    let mut s = format!(
        "auditors = [\"group:auditors\"]\n[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"{database}\"\nretry_max_backoff = \"1s\"\n[limits]\nmin_duration = \"1s\"\n",
    );
    let mut user = |name: String, group: &str| {
        s.push_str(&format!(
            "[[users]]\nname = \"{name}\"\ngroups = [\"{group}\"]\ntoken_hashes = [\"{}\"]\n",
            elevate::auth::token_hash(&format!("t-{name}"))
        ));
    };
    for i in 0..requesters {
        user(format!("r{i}"), "requesters");
    }
    for i in 0..APPROVERS {
        user(format!("a{i}"), "approvers");
    }
    user("auditor".into(), "auditors");
    s.push_str(
        "[[targets]]\nid = \"bench\"\nkind = \"dry-run\"\nroles = [\"writer\"]\n[[targets.resources]]\nid = \"db\"
[[eligibilities]]\nid = \"requesters-db\"\nsubjects = [\"group:requesters\"]\ntarget = \"bench\"\nresources = { ids = [\"db\"] }\nroles = [\"writer\"]\nmax_duration = \"1h\"
[[approval_policies]]\nid = \"approvers-db\"\ntarget = \"bench\"\nresources = { ids = [\"db\"] }\napprovers = [\"group:approvers\"]\nquorum = 1\n",
    );
    s
}

/// Per-phase timings of one lifecycle, in ms.
#[derive(Default, Clone, Copy)]
pub struct Lap {
    pub total: f64,
    pub create: f64,
    pub approve: f64,
    pub to_active: f64,
    pub revoke: f64,
    pub to_revoked: f64,
}

#[derive(Default)]
pub struct Laps {
    pub laps: Vec<Lap>,
    pub polls: usize,
}

pub fn summarize(laps: &Laps, wall: Duration) -> Value {
    let col = |f: fn(&Lap) -> f64| laps.laps.iter().map(f).collect::<Vec<_>>();
    let n = laps.laps.len();
    json!({
        "lifecycles": n,
        "wall_s": wall.as_secs_f64(),
        "lifecycles_per_s": n as f64 / wall.as_secs_f64(),
        "lifecycle_ms": stats(col(|l| l.total)),
        "create_ms": stats(col(|l| l.create)),
        "approve_ms": stats(col(|l| l.approve)),
        "approved_to_active_ms": stats(col(|l| l.to_active)),
        "revoke_ms": stats(col(|l| l.revoke)),
        "revoked_to_removed_ms": stats(col(|l| l.to_revoked)),
        "polls_per_lifecycle": laps.polls as f64 / n.max(1) as f64,
    })
}

pub async fn get(http: &reqwest::Client, url: &str, token: &str) -> Result<Value> {
    let resp = http.get(url).bearer_auth(token).send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        bail!("{url}: {status} {v}");
    }
    Ok(v)
}

/// Polls the request until it reaches `want`; returns the number of polls.
pub async fn wait_state(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    want: &str,
    poll_max: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(1);
    let mut polls = 0;
    loop {
        polls += 1;
        let v = get(http, url, token).await?;
        match v["state"].as_str() {
            Some(s) if s == want => return Ok(polls),
            Some("failed") => bail!("{url}: failed: {}", v["status"]),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("{url}: never became {want} (last {})", v["state"]);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(poll_max);
    }
}

pub async fn client(
    http: reqwest::Client,
    apis: Arc<Vec<String>>,
    c: usize,
    next: Arc<AtomicUsize>,
    total: usize,
    poll_max: Duration,
) -> Result<Laps> {
    let requester = format!("t-r{c}");
    let approver = format!("t-a{}", c % APPROVERS);
    let mut out = Laps::default();
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= total {
            break;
        }
        // Step s of lifecycle k goes to replica (k + s) mod N.
        let api = |step: usize| apis[(k + step) % apis.len()].as_str();
        let t0 = Instant::now();
        let created = post(
            &http,
            &format!("{}/requests", api(0)),
            &requester,
            json!({"target": "bench", "resource": "db", "role": "writer", "duration": "1h", "reason": "benchmark lifecycle"}),
        )
        .await?;
        let id = created["id"].as_str().context("no id")?.to_owned();
        let t1 = Instant::now();
        post(
            &http,
            &format!("{}/requests/{id}/approve", api(1)),
            &approver,
            json!({}),
        )
        .await?;
        let t2 = Instant::now();
        let url = format!("{}/requests/{id}", api(2));
        out.polls += wait_state(&http, &url, &requester, "active", poll_max).await?;
        let t3 = Instant::now();
        post(
            &http,
            &format!("{}/requests/{id}/revoke", api(2)),
            &requester,
            json!({}),
        )
        .await?;
        let t4 = Instant::now();
        let url = format!("{}/requests/{id}", api(3));
        out.polls += wait_state(&http, &url, &requester, "revoked", poll_max).await?;
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
