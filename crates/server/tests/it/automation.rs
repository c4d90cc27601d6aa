//! Approval automation end to end: reminders and escalation driven with an
//! injected clock through the in-process broker's `run_followups_once`;
//! on-call auto-approval from a schedule file; ticket checks against a
//! change system played by a real HTTP server on loopback; "ending soon"
//! notices of active grants.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use elevate::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{body, dry_run_config, dry_run_config_on, Peer, Setup, TestApp};

const WAIT: Duration = Duration::from_secs(20);

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn edit(text: &str, from: &str, to: &str) -> Result<String> {
    let found = text.matches(from).count();
    ensure!(found == 1, "{from:?} occurs {found} times in the config");
    Ok(text.replacen(from, to, 1))
}

/// The dry-run test config with `keys` added to the `prod-dba` approval
/// policy (which alone covers `orders`) and `tables` (e.g. its
/// `[[approval_policies.auto_approve]]` rules) right after it.
pub fn with_prod_dba(db: &Path, keys: &str, tables: &str) -> Result<String> {
    add_to_prod_dba(dry_run_config(db, &Setup::default())?, keys, tables)
}

fn add_to_prod_dba(text: String, keys: &str, tables: &str) -> Result<String> {
    let text = edit(
        &text,
        "id = \"prod-dba\"\n",
        &format!("id = \"prod-dba\"\n{keys}\n"),
    )?;
    edit(
        &text,
        "\n[[approval_policies]]\nid = \"billing-two-person\"",
        &format!("\n{tables}\n\n[[approval_policies]]\nid = \"billing-two-person\""),
    )
}

/// The audit events of `id` with `action`, in chain order.
async fn events(app: &TestApp, id: &str, action: &str) -> Result<Vec<Value>> {
    let (status, v) = app
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await?;
    ensure!(status == StatusCode::OK, "audit: {status} {v}");
    Ok(v["events"]
        .as_array()
        .context("no events")?
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect())
}

fn time_of(v: &Value) -> Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(v.as_str().context("not a time")?)?.with_timezone(&Utc))
}

/// The broker's own calls, with their error as text.
fn ok<T>(r: std::result::Result<T, elevate::error::ApiError>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{}: {}", e.code(), e.log_text()))
}

/// The `grant.ending_soon` events of `id`, in chain order.
async fn ending_soon_notices(
    broker: &elevate::engine::Broker,
    id: &elevate_core::values::RequestId,
) -> Result<Vec<elevate_store::audit::AuditRecord>> {
    Ok(broker
        .store
        .audit_events(&elevate_store::AuditFilter {
            request: Some(id.to_string()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|e| e.action == "grant.ending_soon")
        .collect())
}

fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_then_an_escalation_fire_once_at_their_times_and_then_the_fallback_approver_may_approve(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = with_prod_dba(
        &dir.path().join("elevate.db"),
        "remind_after = \"30m\"\nescalate_after = \"2h\"\nescalate_to = [\"user:eve\"]",
        "",
    )?;
    let app = TestApp::start(&config).await?;
    let broker = app.broker().context("in-process broker")?;
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    let created = time_of(&app.show(&id).await?["created_at"])?;

    // eve (a developer) is the fallback approver: before the escalation
    // she may neither see nor approve the request.
    let (status, _) = app.get("eve", &format!("/api/v1/requests/{id}")).await?;
    ensure!(
        status == StatusCode::NOT_FOUND,
        "eve sees it early: {status}"
    );
    let refused = app.approve("eve", &id).await;
    ensure!(refused.is_err(), "eve approved before the escalation");
    let (_, waiting) = app.get("eve", "/api/v1/requests?scope=pending").await?;
    ensure!(
        waiting["requests"].as_array().is_some_and(|r| r.is_empty()),
        "eve's inbox before escalation: {waiting}"
    );

    // Not before its time.
    ensure!(ok(broker.run_followups_once(created + minutes(29)).await)? == 0);
    ensure!(events(&app, &id, "request.reminded").await?.is_empty());
    // At 30 minutes: one reminder, to the policy's approvers, even when
    // two scheduler steps race for it.
    let (first, second) = tokio::join!(
        broker.run_followups_once(created + minutes(30)),
        broker.run_followups_once(created + minutes(30)),
    );
    ensure!(ok(first)? + ok(second)? == 1);
    // Exactly once, however often the scheduler looks.
    ensure!(ok(broker.run_followups_once(created + minutes(31)).await)? == 0);
    ensure!(ok(broker.run_followups_once(created + minutes(119)).await)? == 0);
    let reminders = events(&app, &id, "request.reminded").await?;
    ensure!(reminders.len() == 1, "{reminders:?}");
    ensure!(
        reminders[0]["details"]["approvers"] == json!(["group:dba"]),
        "{reminders:?}"
    );
    ensure!(events(&app, &id, "request.escalated").await?.is_empty());
    ensure!(
        app.approve("eve", &id).await.is_err(),
        "eve approved before the escalation"
    );

    // At two hours: escalated to eve, once.
    ensure!(ok(broker.run_followups_once(created + minutes(120)).await)? == 1);
    ensure!(ok(broker.run_followups_once(created + minutes(150)).await)? == 0);
    let escalations = events(&app, &id, "request.escalated").await?;
    ensure!(escalations.len() == 1, "{escalations:?}");
    ensure!(
        escalations[0]["details"]["escalate_to"] == json!(["user:eve"]),
        "{escalations:?}"
    );
    ensure!(events(&app, &id, "request.reminded").await?.len() == 1);

    // Now eve sees it, finds it in her inbox (API and web), and may
    // approve it; the requester still may not.
    let (status, shown) = app.get("eve", &format!("/api/v1/requests/{id}")).await?;
    ensure!(status == StatusCode::OK, "{status} {shown}");
    let (_, waiting) = app.get("eve", "/api/v1/requests?scope=pending").await?;
    ensure!(
        waiting["requests"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["id"] == id.as_str())),
        "eve's inbox after escalation: {waiting}"
    );
    let browser = crate::web_common::signed_in(&app, "eve").await?;
    let (status, html) = crate::web_common::page(&app, &browser, "/approvals").await?;
    ensure!(
        status == StatusCode::OK && html.contains(&id),
        "web inbox: {status}"
    );
    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/approve"),
            json!({}),
        )
        .await?;
    ensure!(
        status == StatusCode::FORBIDDEN && v["code"] == "self_approval",
        "{status} {v}"
    );
    app.approve("eve", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    // A decided request is never reminded or escalated again.
    ensure!(ok(broker.run_followups_once(created + minutes(170)).await)? == 0);
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_call_rule_approves_only_the_user_on_call_at_that_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let now = Utc::now();
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // alice is on call now; eve is on call, but only from tomorrow.
    let schedule = dir.path().join("oncall.txt");
    std::fs::write(
        &schedule,
        format!(
            "# primary on-call\n{} {} alice\n{} {} eve\n",
            rfc(now - minutes(60)),
            rfc(now + minutes(120)),
            rfc(now + minutes(24 * 60)),
            rfc(now + minutes(48 * 60)),
        ),
    )?;
    let config = with_prod_dba(
        &dir.path().join("elevate.db"),
        "",
        &format!(
            "[[approval_policies.auto_approve]]\nname = \"primary-on-call\"\non_call_schedule = \"{}\"\nmax_duration = \"20m\"",
            schedule.display()
        ),
    )?;
    let app = TestApp::start(&config).await?;

    // The on-call user, now: approved at creation, in one event naming
    // the rule.
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "15m"))
        .await?;
    app.wait_state(&id, "active", WAIT).await?;
    let created = events(&app, &id, "request.created").await?;
    ensure!(created.len() == 1, "{created:?}");
    ensure!(
        created[0]["details"]["auto_approval"]
            == json!({"rule": "primary-on-call", "policy": "prod-dba"}),
        "{created:?}"
    );
    ensure!(events(&app, &id, "request.approved").await?.is_empty());

    // Another user, not on call now: pending for a person.
    let other = app
        .request("eve", body("demo", "orders", "orders_writer", "15m"))
        .await?;
    ensure!(app.show(&other).await?["state"] == "pending");
    let created = events(&app, &other, "request.created").await?;
    ensure!(
        created[0]["details"].get("auto_approval").is_none(),
        "{created:?}"
    );

    // The on-call user, for a start outside their shift: pending too.
    let mut later = body("demo", "orders", "orders_writer", "15m");
    later["start"] = json!(rfc(now + minutes(5 * 60)));
    let scheduled = app.request("alice", later).await?;
    ensure!(app.show(&scheduled).await?["state"] == "pending");

    // Longer than the rule allows (the eligibility allows it): pending.
    let long = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    ensure!(app.show(&long).await?["state"] == "pending");

    // Break-glass is never auto-approved: it is granted as break-glass,
    // awaiting review, without an auto_approval.
    let mut glass = body("demo", "orders", "orders_writer", "15m");
    glass["break_glass"] = json!(true);
    let glass = app.request("alice", glass).await?;
    let created = events(&app, &glass, "request.created").await?;
    ensure!(
        created[0]["details"].get("auto_approval").is_none(),
        "{created:?}"
    );
    ensure!(created[0]["details"]["break_glass"] == true);
    app.stop().await;
    Ok(())
}

/// The change system, played by a real HTTP server on loopback:
/// `GET /api/changes/{ticket}` answers `{"id", "state"}` for the tickets
/// it knows, 404 for the others, 401 without the right bearer token. It
/// counts the calls and remembers the paths asked for.
struct ChangeSystem {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
    peer: Peer,
}

async fn change_system(token: &'static str) -> Result<ChangeSystem> {
    use axum::extract::Path as UrlPath;
    use axum::http::{HeaderMap, StatusCode as Code, Uri};
    let calls = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (c, p) = (calls.clone(), paths.clone());
    let app = axum::Router::new().route(
        "/api/changes/{ticket}",
        axum::routing::get(
            move |UrlPath(ticket): UrlPath<String>, uri: Uri, headers: HeaderMap| {
                let (c, p) = (c.clone(), p.clone());
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut paths) = p.lock() {
                        paths.push(uri.path().to_owned());
                    }
                    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(&format!("Bearer {token}"));
                    if !authorized {
                        return (Code::UNAUTHORIZED, axum::Json(json!({"error": "token"})));
                    }
                    let state = match ticket.as_str() {
                        "CHG-100" => "Implementing",
                        "CHG-200" => "Closed",
                        _ => {
                            return (
                                Code::NOT_FOUND,
                                axum::Json(json!({"error": "no such change"})),
                            )
                        }
                    };
                    (Code::OK, axum::Json(json!({"id": ticket, "state": state})))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer = Peer::serve(listener, app).await?;
    Ok(ChangeSystem {
        addr: peer.addr,
        calls,
        paths,
        peer,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_must_match_the_pattern_and_be_open_in_the_change_system() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let changes = change_system("change-token-1").await?;
    let token_file = dir.path().join("change-token");
    std::fs::write(&token_file, "change-token-1\n")?;
    let text = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let text = edit(
        &text,
        "break_glass = true\n",
        "break_glass = true\nticket_pattern = \"CHG-[0-9]+\"\nticket_system = \"changes\"\n",
    )?;
    let text = format!(
        "{text}\n[[ticket_systems]]\nname = \"changes\"\nurl = \"http://{}/api/changes/{{ticket}}\"\ntoken_file = \"{}\"\ntimeout = \"10s\"\nstatus_field = \"state\"\nopen_values = [\"new\", \"implementing\"]\n",
        changes.addr,
        token_file.display()
    );
    let app = TestApp::start(&text).await?;
    let ask = |ticket: Option<&str>| {
        let mut b = body("demo", "orders", "orders_writer", "30m");
        if let Some(t) = ticket {
            b["ticket"] = json!(t);
        }
        b
    };

    // No ticket at all.
    let (status, v) = app.post("alice", "/api/v1/requests", ask(None)).await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["code"] == "ticket_required",
        "{status} {v}"
    );
    // The wrong form is refused before the change system is asked.
    let (status, v) = app
        .post("alice", "/api/v1/requests", ask(Some("INC-100")))
        .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["code"] == "ticket_mismatch",
        "{status} {v}"
    );
    ensure!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("CHG-[0-9]+")),
        "{v}"
    );
    ensure!(changes.calls.load(Ordering::SeqCst) == 0);

    // Closed in the change system: refused, saying so.
    let (status, v) = app
        .post("alice", "/api/v1/requests", ask(Some("CHG-200")))
        .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["code"] == "ticket_not_open",
        "{status} {v}"
    );
    let message = v["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("CHG-200") && message.contains("changes") && message.contains("Closed"),
        "{message}"
    );
    // Unknown to the change system: refused.
    let (status, v) = app
        .post("alice", "/api/v1/requests", ask(Some("CHG-999")))
        .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["code"] == "ticket_unknown",
        "{status} {v}"
    );

    // Open: the request goes on, with the answer in its audit event.
    let id = app.request("alice", ask(Some("CHG-100"))).await?;
    ensure!(app.show(&id).await?["state"] == "pending");
    let created = events(&app, &id, "request.created").await?;
    ensure!(
        created[0]["details"]["ticket_check"]
            == json!({"system": "changes", "ticket": "CHG-100", "open": true, "status": "Implementing"}),
        "{created:?}"
    );
    let asked = changes.paths.lock().map(|p| p.clone()).unwrap_or_default();
    ensure!(
        asked.last().map(String::as_str) == Some("/api/changes/CHG-100"),
        "{asked:?}"
    );
    ensure!(changes.calls.load(Ordering::SeqCst) == 3);

    // An extension is checked the same way.
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/extend"),
            json!({"duration": "10m", "reason": "still fixing", "ticket": "CHG-200"}),
        )
        .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY && v["code"] == "ticket_not_open",
        "{status} {v}"
    );

    // The change system unreachable: refused (deny by default), with a 4xx
    // saying it could not confirm.
    changes.peer.stop().await;
    let (status, v) = app
        .post("alice", "/api/v1/requests", ask(Some("CHG-100")))
        .await?;
    ensure!(
        status == StatusCode::FAILED_DEPENDENCY && v["code"] == "ticket_system_unavailable",
        "{status} {v}"
    );
    ensure!(
        !v.to_string().contains("change-token-1"),
        "the token leaked: {v}"
    );
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_system_refusing_elevate_s_token_refuses_the_request() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let changes = change_system("the-real-token").await?;
    // A file, not token_env: setting a variable while other tests' threads
    // read the environment is a data race in the C library.
    let token_file = dir.path().join("change-token");
    std::fs::write(&token_file, "a-wrong-token\n")?;
    let text = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let text = edit(
        &text,
        "break_glass = true\n",
        "break_glass = true\nticket_system = \"changes\"\n",
    )?;
    let text = format!(
        "{text}\n[[ticket_systems]]\nname = \"changes\"\nurl = \"http://{}/api/changes/{{ticket}}\"\ntoken_file = \"{}\"\nstatus_field = \"state\"\nopen_values = [\"implementing\"]\n",
        changes.addr,
        token_file.display(),
    );
    let app = TestApp::start(&text).await?;
    let mut ask = body("demo", "orders", "orders_writer", "30m");
    // Any form is accepted without a pattern; the ticket is one path
    // segment however it is written.
    ask["ticket"] = json!("CHG-100/../../admin");
    let (status, v) = app.post("alice", "/api/v1/requests", ask).await?;
    ensure!(
        status == StatusCode::FAILED_DEPENDENCY && v["code"] == "ticket_system_unavailable",
        "{status} {v}"
    );
    ensure!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("HTTP 401")),
        "{v}"
    );
    let asked = changes.paths.lock().map(|p| p.clone()).unwrap_or_default();
    ensure!(
        asked == vec!["/api/changes/CHG-100%2F..%2F..%2Fadmin".to_owned()],
        "{asked:?}"
    );
    changes.peer.stop().await;
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_grant_gets_one_ending_soon_notice_at_its_lead_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let config = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let principal = |name: &str| {
        config
            .users
            .iter()
            .find(|u| u.principal.name.as_str() == name)
            .map(|u| u.principal.clone())
            .context("no such user")
    };
    // The broker alone (no server loops), so every step runs on the
    // injected clock.
    let mut broker = elevate::build_broker(&config).await?;
    broker.ending_soon = Some(minutes(10));
    let broker = Arc::new(broker);
    let request = ok(broker
        .create(
            &principal("alice")?,
            elevate::engine::CreateInput {
                target: "demo".into(),
                resource: "orders".into(),
                role: "orders_writer".into(),
                duration: "30m".into(),
                start: None,
                reason: "INC-7: 在庫の修正".into(),
                ticket: None,
                break_glass: false,
            },
        )
        .await)?;
    let id = request.request.id.clone();
    ok(broker
        .approve(&principal("bob")?, &id, Default::default())
        .await)?;
    ok(broker.run_jobs_once(Utc::now(), 10).await)?;
    let active = ok(broker.load(&id).await)?;
    let window = active.request.state.window().context("no window")?;
    ensure!(
        active.request.state.name() == "active",
        "{:?}",
        active.request.state
    );

    ensure!(
        ok(broker
            .run_followups_once(window.ends_at - minutes(11))
            .await)?
            == 0
    );
    ensure!(
        ok(broker
            .run_followups_once(window.ends_at - minutes(10))
            .await)?
            == 1
    );
    ensure!(ok(broker.run_followups_once(window.ends_at - minutes(5)).await)? == 0);
    let notices = ending_soon_notices(&broker, &id).await?;
    ensure!(notices.len() == 1, "{notices:?}");
    ensure!(
        time_of(&notices[0].details["ends_at"])? == window.ends_at,
        "{:?}",
        notices[0].details
    );
    let done = broker.store.followups_of(&id).await?;
    ensure!(
        done.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>() == vec!["ending_soon"],
        "{done:?}"
    );

    // Extended after its notice: a new notice before the new end, once.
    let ext = ok(broker
        .extend(&principal("alice")?, &id, "20m", "まだ作業中です", None)
        .await)?;
    ok(broker
        .approve(&principal("bob")?, &ext.request.id, Default::default())
        .await)?;
    let longer = ok(broker.load(&id).await)?
        .request
        .state
        .window()
        .context("no window")?;
    ensure!(longer.ends_at == window.ends_at + minutes(20));
    ensure!(
        ok(broker
            .run_followups_once(longer.ends_at - minutes(11))
            .await)?
            == 0
    );
    ensure!(
        ok(broker
            .run_followups_once(longer.ends_at - minutes(10))
            .await)?
            == 1
    );
    ensure!(ok(broker.run_followups_once(longer.ends_at - minutes(9)).await)? == 0);
    let notices = ending_soon_notices(&broker, &id).await?;
    ensure!(notices.len() == 2, "{notices:?}");
    ensure!(time_of(&notices[1].details["ends_at"])? == longer.ends_at);
    broker.store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_postgresql_record_each_reminder_and_escalation_once() -> Result<()> {
    // The store is a PostgreSQL of the test's own, whatever engine the
    // run uses: only PostgreSQL lets two brokers share one store.
    let cluster = elevate_testkit::PgCluster::start()?;
    cluster.psql("CREATE DATABASE elevate")?;
    let url = cluster.url("postgres", None, "elevate");
    let text = add_to_prod_dba(
        dry_run_config_on(&url, &Setup::default()),
        "remind_after = \"30m\"\nescalate_after = \"2h\"\nescalate_to = [\"user:eve\"]",
        "",
    )?;
    let config = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let one = elevate::build_broker(&config).await?;
    let two = elevate::build_broker(&config).await?;
    let alice = config
        .users
        .iter()
        .find(|u| u.principal.name.as_str() == "alice")
        .map(|u| u.principal.clone())
        .context("alice")?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let created = ok(one
            .create(
                &alice,
                elevate::engine::CreateInput {
                    target: "demo".into(),
                    resource: "orders".into(),
                    role: "orders_writer".into(),
                    duration: "30m".into(),
                    start: None,
                    reason: "INC-9".into(),
                    ticket: None,
                    break_glass: false,
                },
            )
            .await)?;
        ids.push(created.request);
    }
    let latest = ids.iter().map(|r| r.created_at).max().context("none")?;
    for (at, expected) in [(minutes(30), 5), (minutes(120), 5)] {
        let (a, b) = tokio::join!(
            one.run_followups_once(latest + at),
            two.run_followups_once(latest + at)
        );
        let (a, b) = (ok(a)?, ok(b)?);
        ensure!(a + b == expected, "{a} + {b} at {at}");
    }
    for r in &ids {
        let events = ok(one
            .store
            .audit_events(&elevate_store::AuditFilter {
                request: Some(r.id.to_string()),
                ..Default::default()
            })
            .await
            .map_err(elevate::error::ApiError::from))?;
        let count = |action: &str| events.iter().filter(|e| e.action == action).count();
        ensure!(
            count("request.reminded") == 1 && count("request.escalated") == 1,
            "{}: {:?}",
            r.id,
            events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>()
        );
    }
    one.store.close().await;
    two.store.close().await;
    Ok(())
}
