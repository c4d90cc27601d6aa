//! A bounded load run: many concurrent clients create, approve (one or two
//! approvers, the two at once for billing), revoke and let expire requests
//! against one in-process elevate on SQLite. Every response must be 2xx,
//! every created request must be listed exactly once and reach the state
//! its story calls for with a complete audit history, and the audit chain
//! must verify. Throughput is printed, never asserted.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{dry_run_config, Setup, TestApp};

/// Concurrent clients, and lifecycles each one runs one after the other.
const CLIENTS: usize = 32;
const LIFECYCLES: usize = 25;

/// Bound on any single wait for a state (a broken feature fails the test
/// instead of hanging it; not a speed check).
const WAIT: Duration = Duration::from_secs(25);

/// How one lifecycle ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// Approved and left active (30 minutes).
    Active,
    /// Active, then revoked by an approver (bob).
    Revoked,
    /// Active, then ended early by the requester herself.
    Deactivated,
    /// A 5-second grant that ends at its deadline.
    Ended,
}

impl Fate {
    fn of(n: usize) -> Fate {
        match n % 10 {
            0 | 7 => Fate::Revoked,
            5 => Fate::Deactivated,
            3 => Fate::Ended,
            _ => Fate::Active,
        }
    }

    /// The states this story may settle in. A short grant whose window
    /// closed before the worker applied it fails instead of ending: that
    /// depends on how fast this machine is, so it is counted and printed,
    /// not asserted.
    fn final_states(self) -> &'static [&'static str] {
        match self {
            Fate::Active => &["active"],
            Fate::Revoked | Fate::Deactivated => &["revoked"],
            Fate::Ended => &["ended", "failed"],
        }
    }
}

/// What one lifecycle did, to check against what the server kept.
#[derive(Debug)]
struct Story {
    id: String,
    requester: &'static str,
    resource: &'static str,
    role: &'static str,
    justification: String,
    fate: Fate,
}

impl Story {
    /// The exact audit history this story must leave, given the state it
    /// settled in.
    fn expected_events(&self, state: &str) -> Vec<&'static str> {
        let mut e = vec!["request.created"];
        if self.resource == "billing" {
            e.push("request.approval_recorded");
        }
        e.push("request.approved");
        if state == "failed" {
            e.push("grant.failed");
            return e;
        }
        e.push("grant.activated");
        match self.fate {
            Fate::Active => {}
            Fate::Revoked => e.extend(["grant.revoked", "grant.removed"]),
            Fate::Deactivated => e.extend(["grant.deactivated", "grant.removed"]),
            Fate::Ended => e.extend(["grant.window_ended", "grant.removed"]),
        }
        e
    }
}

/// What checking one request found.
struct Checked {
    events: usize,
    /// Approval to active, as the server measured it.
    latency: Option<i64>,
    state: String,
}

/// A shared client that records every response that is not 2xx (and every
/// request that got no response at all) instead of stopping at the first.
struct Load {
    app: TestApp,
    calls: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Load {
    /// The body of a 2xx response, or `None` after recording the failure.
    async fn call(
        &self,
        method: Method,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let what = format!("{method} {path} as {user}");
        match self.app.call(method, path, Some(user), body).await {
            Ok((status, v)) if status.is_success() => Some(v),
            Ok((status, v)) => {
                self.fail(format!("{what}: {status} {v}"));
                None
            }
            Err(e) => {
                self.fail(format!("{what}: no response: {e:#}"));
                None
            }
        }
    }

    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }

    async fn show(&self, id: &str) -> Option<Value> {
        self.call(Method::GET, &format!("/api/v1/requests/{id}"), "dave", None)
            .await
    }

    /// Polls (as dave) until `id` is in `state`. Records and returns `None`
    /// if it gets there not within `WAIT`, or settles somewhere else.
    async fn wait_state(&self, id: &str, state: &str) -> Option<Value> {
        self.wait_states(id, &[state]).await
    }

    /// Polls until `id` is in one of `states`.
    async fn wait_states(&self, id: &str, states: &[&str]) -> Option<Value> {
        let deadline = Instant::now() + WAIT;
        let state = states.join(" or ");
        loop {
            let v = self.show(id).await?;
            if v["state"].as_str().is_some_and(|s| states.contains(&s)) {
                return Some(v);
            }
            let settled_elsewhere = matches!(
                v["state"].as_str(),
                Some("failed" | "rejected" | "cancelled" | "expired" | "ended" | "revoked")
            );
            if settled_elsewhere || Instant::now() > deadline {
                self.fail(format!(
                    "{id} did not reach {state} within {WAIT:?}: state {} ({})",
                    v["state"], v["status"]
                ));
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// One lifecycle, numbered `n` across all clients. `None` if it broke
    /// off (the failure is recorded); the story when the request exists.
    async fn lifecycle(&self, client: usize, round: usize, n: usize) -> Option<Story> {
        let requester = ["alice", "eve"][n % 2];
        let resource = ["billing", "orders", "orders"][n % 3];
        let role = if n % 4 < 2 {
            "orders_reader"
        } else {
            "orders_writer"
        };
        let fate = Fate::of(n);
        let duration = if fate == Fate::Ended { "5s" } else { "30m" };
        let justification = format!("load run #{n}: client {client}, round {round}");
        let created = self
            .call(
                Method::POST,
                "/api/v1/requests",
                requester,
                Some(json!({
                    "target": "demo",
                    "resource": resource,
                    "role": role,
                    "duration": duration,
                    "reason": justification,
                })),
            )
            .await?;
        let Some(id) = created["id"].as_str().map(str::to_owned) else {
            self.fail(format!("create #{n} answered without an id: {created}"));
            return None;
        };
        let story = Story {
            id: id.clone(),
            requester,
            resource,
            role,
            justification,
            fate,
        };
        if created["state"] != "pending" {
            self.fail(format!(
                "{id} was created {}, not pending",
                created["state"]
            ));
        }

        if resource == "billing" {
            // Both approvers at the same moment: the quorum must count both.
            let (a, b) = tokio::join!(self.approve(&id, "bob", n), self.approve(&id, "carol", n));
            a?;
            b?;
        } else {
            self.approve(&id, "bob", n).await?;
        }

        if matches!(fate, Fate::Active | Fate::Ended) {
            return Some(story);
        }
        self.wait_state(&id, "active").await?;
        let by = match fate {
            Fate::Revoked => Some("bob"),
            Fate::Deactivated => Some(requester),
            Fate::Active | Fate::Ended => None,
        };
        if let Some(by) = by {
            self.call(
                Method::POST,
                &format!("/api/v1/requests/{id}/revoke"),
                by,
                Some(json!({ "comment": format!("done with #{n}") })),
            )
            .await?;
        }
        Some(story)
    }

    async fn approve(&self, id: &str, who: &str, n: usize) -> Option<Value> {
        self.call(
            Method::POST,
            &format!("/api/v1/requests/{id}/approve"),
            who,
            Some(json!({ "comment": format!("ok #{n}") })),
        )
        .await
    }

    /// Checks one request as the server keeps it, once settled.
    async fn check(&self, s: &Story) -> Result<Checked> {
        let states = s.fate.final_states();
        let v = self
            .wait_states(&s.id, states)
            .await
            .with_context(|| format!("{} never reached {}", s.id, states.join(" or ")))?;
        let state = v["state"].as_str().unwrap_or_default().to_owned();
        if state == "failed" {
            ensure!(
                v["status"]
                    .as_str()
                    .is_some_and(|t| t.contains("window ended before")),
                "{} failed for another reason than a late apply: {}",
                s.id,
                v["status"]
            );
        }
        ensure!(
            v["requester"] == s.requester
                && v["resource"] == s.resource
                && v["role"] == s.role
                && v["justification"] == s.justification.as_str(),
            "{} is not the request that was created ({} {} {} {:?}): {v}",
            s.id,
            s.requester,
            s.resource,
            s.role,
            s.justification
        );
        let quorum = if s.resource == "billing" { 2 } else { 1 };
        let approvers: Vec<&str> = v["approvals"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["by"].as_str()).collect())
            .unwrap_or_default();
        ensure!(
            approvers.len() == quorum && v["quorum"] == quorum,
            "{}: approvals {approvers:?}, quorum {}; expected {quorum} approval(s)",
            s.id,
            v["quorum"]
        );
        let expected_by = match s.fate {
            Fate::Revoked => Some("bob"),
            Fate::Deactivated => Some(s.requester),
            Fate::Active | Fate::Ended => None,
        };
        if let Some(by) = expected_by {
            ensure!(
                v["decided_by"] == by,
                "{}: revoked by {}, expected {by}",
                s.id,
                v["decided_by"]
            );
        }
        let events: Vec<&str> = v["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
            .unwrap_or_default();
        ensure!(
            events == s.expected_events(&state),
            "{} ({:?}, {}, {state}): audit history {events:?}, expected {:?}",
            s.id,
            s.fate,
            s.resource,
            s.expected_events(&state)
        );
        ensure!(
            v["events"]
                .as_array()
                .is_some_and(|a| a.iter().all(|e| e["request"] == s.id.as_str())),
            "{}: an event of another request in its history: {}",
            s.id,
            v["events"]
        );
        let latency = v["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["action"] == "grant.activated")
                .and_then(|e| e["details"]["latency_ms"].as_i64())
        });
        Ok(Checked {
            events: events.len(),
            latency,
            state,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_clients_create_and_approve_without_errors_or_losses() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let load = Arc::new(Load {
        app: TestApp::start(&config).await?,
        calls: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
    });

    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let load = load.clone();
        clients.push(tokio::spawn(async move {
            let mut stories = Vec::new();
            for round in 0..LIFECYCLES {
                let n = client * LIFECYCLES + round;
                if let Some(s) = load.lifecycle(client, round, n).await {
                    stories.push(s);
                }
            }
            stories
        }));
    }
    let mut stories = Vec::new();
    for c in clients {
        stories.extend(c.await?);
    }
    let driven = started.elapsed();
    let calls = load.calls.load(Ordering::Relaxed);
    println!(
        "load: {} lifecycles by {CLIENTS} clients in {:.2}s ({:.0} lifecycles/s, {calls} HTTP calls, {:.0} calls/s)",
        stories.len(),
        driven.as_secs_f64(),
        stories.len() as f64 / driven.as_secs_f64(),
        calls as f64 / driven.as_secs_f64(),
    );

    // Every lifecycle got as far as creating its request (a refused
    // create is recorded as a failure and asserted below).
    let ids: HashSet<String> = stories.iter().map(|s| s.id.clone()).collect();
    ensure!(
        ids.len() == stories.len(),
        "the server handed out the same id twice: {} ids for {} requests",
        ids.len(),
        stories.len()
    );

    // Each request as kept, concurrently but bounded.
    let mut problems = Vec::new();
    let mut events = 0usize;
    let mut latencies: Vec<i64> = Vec::new();
    let mut by_fate: BTreeMap<String, usize> = BTreeMap::new();
    let stories = Arc::new(stories);
    let mut checkers = Vec::new();
    for k in 0..8 {
        let load = load.clone();
        let stories = stories.clone();
        checkers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for s in stories.iter().skip(k).step_by(8) {
                out.push((s.fate, load.check(s).await));
            }
            out
        }));
    }
    for c in checkers {
        for (fate, checked) in c.await? {
            match checked {
                Ok(c) => {
                    events += c.events;
                    latencies.extend(c.latency);
                    *by_fate
                        .entry(format!("{fate:?} → {}", c.state))
                        .or_default() += 1;
                }
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
    }
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "load: approval to active (ms, {} grants): p50 {} p90 {} p99 {} max {}",
        latencies.len(),
        pct(50),
        pct(90),
        pct(99),
        latencies.last().copied().unwrap_or(0)
    );
    println!(
        "load: settled {by_fate:?} in {:.2}s overall",
        started.elapsed().as_secs_f64()
    );

    let late: usize = by_fate
        .iter()
        .filter(|(k, _)| k.ends_with("failed"))
        .map(|(_, n)| n)
        .sum();
    if late > 0 {
        println!(
            "load: NOTE {late} short grant(s) failed: their 5 s window closed before the worker applied them"
        );
    }

    // Nothing lost, nothing invented: the full list is exactly what was
    // created.
    let listed = load
        .call(
            Method::GET,
            "/api/v1/requests?scope=all&limit=10000",
            "dave",
            None,
        )
        .await
        .unwrap_or(Value::Null);
    let listed: Vec<&str> = listed["requests"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    let listed_set: HashSet<String> = listed.iter().map(|s| s.to_string()).collect();
    if listed.len() != stories.len() || listed_set != ids {
        problems.push(format!(
            "GET /api/v1/requests?scope=all lists {} requests ({} distinct), {} were created; missing {:?}, unknown {:?}",
            listed.len(),
            listed_set.len(),
            stories.len(),
            ids.difference(&listed_set).take(10).collect::<Vec<_>>(),
            listed_set.difference(&ids).take(10).collect::<Vec<_>>(),
        ));
    }

    // The chain holds, and holds exactly the events of these requests.
    let verify = load
        .call(Method::GET, "/api/v1/audit/verify", "dave", None)
        .await
        .unwrap_or(Value::Null);
    if verify["ok"] != true || verify["events"] != events {
        problems.push(format!(
            "audit verify: {verify}; the requests' histories hold {events} events"
        ));
    }

    let failures = load.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let created = stories.len();
    let expected = CLIENTS * LIFECYCLES;
    ensure!(
        failures.is_empty() && problems.is_empty() && created == expected,
        "{} failed HTTP call(s), {} problem(s), {created} of {expected} lifecycles created a request.\nfailed calls (first 20):\n  {}\nproblems (first 20):\n  {}",
        failures.len(),
        problems.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n  "),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n  "),
    );
    Ok(())
}
