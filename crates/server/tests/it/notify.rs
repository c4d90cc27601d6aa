//! Notifications against real peers: mail through a real SMTP server
//! (aiosmtpd, started per test on a free port), signed webhooks and chat
//! posts to real HTTP receivers on loopback that the tests run
//! themselves and that check what arrives the way a consumer would.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use elevate_testkit::smtp::{ReceivedMail, SmtpServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{body, connect_store, dry_run_config, eventually, Peer, Setup, TestApp};
use crate::web_common::{csrf_of, page, post as post_form, signed_in};

const WAIT: Duration = Duration::from_secs(20);
const REASON: &str = "障害対応のため本番データベースを確認します (INC-4711)";

fn email_toml(port: u16) -> String {
    format!(
        r#"
[notifications]
retry_max_backoff = "1s"

[notifications.email]
host = "127.0.0.1"
port = {port}
security = "none"
from = "elevate <elevate@example.com>"
"#
    )
}

async fn start_with(dir: &Path, extra: &str) -> Result<TestApp> {
    let config = format!(
        "{}\n{extra}",
        dry_run_config(&dir.join("e.db"), &Setup::default())?
    );
    TestApp::start(&config).await
}

/// A real SMTP server and elevate mailing through it.
async fn with_mail(dir: &Path) -> Result<(SmtpServer, TestApp)> {
    let smtp = SmtpServer::start(&dir.join("smtp"))?;
    let app = start_with(dir, &email_toml(smtp.port())).await?;
    Ok((smtp, app))
}

/// The mails once `n` have arrived and nothing more came for `settle`:
/// a message sent twice, or one too many, is an error.
async fn exactly(smtp: &SmtpServer, n: usize, settle: Duration) -> Result<Vec<ReceivedMail>> {
    smtp.wait_for_messages(n, WAIT).await?;
    tokio::time::sleep(settle).await;
    let mails = smtp.messages()?;
    if mails.len() != n {
        bail!(
            "{} mails, {n} expected: {:?}",
            mails.len(),
            mails
                .iter()
                .map(|m| (&m.subject, to_of(m)))
                .collect::<Vec<_>>()
        );
    }
    Ok(mails)
}

fn to_of(m: &ReceivedMail) -> String {
    m.to.join(",")
}

/// Mails whose subject contains `marker`, by recipient; a recipient who
/// got two of them is an error (a message sent twice).
fn by_recipient<'a>(
    mails: &'a [ReceivedMail],
    marker: &str,
) -> Result<BTreeMap<String, &'a ReceivedMail>> {
    let mut out = BTreeMap::new();
    for m in mails.iter().filter(|m| m.subject.contains(marker)) {
        if out.insert(to_of(m), m).is_some() {
            bail!("{} got \"{marker}\" twice", to_of(m));
        }
    }
    Ok(out)
}

fn link_in(text: &str, label: &str) -> Result<String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .with_context(|| format!("no {label} line in:\n{text}"))?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .context("no URL on the line")?;
    Ok(url.to_owned())
}

#[tokio::test]
async fn creating_and_approving_mail_approvers_and_requester_through_a_real_smtp_server(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (smtp, app) = with_mail(dir.path()).await?;

    let mut req = body("demo", "orders", "orders_writer", "30m");
    req["reason"] = json!(REASON);
    let id = app.request("alice", req).await?;

    // One to each approver (bob, carol) and a copy to the requester;
    // nobody else (dave is an admin, not an approver; eve is unrelated).
    smtp.wait_for_messages(3, WAIT).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = smtp.messages()?;
    assert_eq!(
        mails.len(),
        3,
        "{:?}",
        mails.iter().map(to_of).collect::<Vec<_>>()
    );
    let created = by_recipient(&mails, "orders_writer")?;
    let to: Vec<&str> = created.keys().map(String::as_str).collect();
    assert_eq!(
        to,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    for m in created.values() {
        assert_eq!(m.from, "elevate@example.com");
        assert!(
            m.subject
                .contains("alice asks for orders_writer on demo/orders"),
            "{}",
            m.subject
        );
        // The justification arrives intact, in both parts.
        assert!(m.text.contains(REASON), "{}", m.text);
        assert!(m.html.contains(REASON), "{}", m.html);
        assert!(
            m.text.contains(&format!("{}/requests/{id}", app.url)),
            "{}",
            m.text
        );
    }
    // Approvers get approval links; the requester's copy has none.
    let bob = created["bob@example.com"];
    let approve = link_in(&bob.text, "Approve:")?;
    assert!(
        approve.starts_with(&format!("{}/links/", app.url)),
        "{approve}"
    );
    assert!(bob.html.contains("/links/"), "{}", bob.html);
    assert!(!created["alice@example.com"].text.contains("/links/"));
    assert!(created["alice@example.com"]
        .text
        .contains("Your request was submitted"));

    // bob approves: the outcome goes to the requester and the *other*
    // approver, not to bob, who acted.
    app.approve("bob", &id).await?;
    // The grant goes active at once, so the approval's two mails and the
    // requester's "now holds" are sent together, in any order: wait for
    // all three.
    app.wait_state(&id, "active", WAIT).await?;
    let mails = smtp.wait_for_messages(6, WAIT).await?;
    let approved = by_recipient(&mails, "was approved by bob")?;
    let to: Vec<&str> = approved.keys().map(String::as_str).collect();
    assert_eq!(to, ["alice@example.com", "carol@example.com"]);
    // One conversation per request in mail programs.
    let root = created["alice@example.com"].header("References");
    assert!(root.is_some_and(|r| r.contains(id.as_str())), "{root:?}");
    assert_eq!(approved["alice@example.com"].header("References"), root);
    assert_eq!(approved["alice@example.com"].header("In-Reply-To"), root);
    for m in approved.values() {
        assert!(m.text.contains(REASON));
        assert!(!m.text.contains("/links/"), "no decision is asked any more");
    }
    // And once active, the requester hears that too (default route).
    let active = by_recipient(&mails, "alice now holds orders_writer")?;
    assert_eq!(active.keys().collect::<Vec<_>>(), ["alice@example.com"]);
    // Nothing else, and nothing twice: 3 + 2 + 1.
    exactly(&smtp, 6, Duration::from_secs(1)).await?;
    Ok(())
}

#[tokio::test]
async fn break_glass_is_mailed_to_every_admin_and_approver() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (smtp, app) = with_mail(dir.path()).await?;
    let mut req = body("demo", "orders", "orders_writer", "10m");
    req["break_glass"] = json!(true);
    req["reason"] = json!("database down, pager 12345");
    app.request("alice", req).await?;
    // Four loud messages and, the grant being active at once, alice's
    // "you now hold" (in whatever order they are sent).
    let mails = exactly(&smtp, 5, Duration::from_millis(500)).await?;
    let loud = by_recipient(&mails, "BREAK-GLASS")?;
    let to: Vec<&str> = loud.keys().map(String::as_str).collect();
    assert_eq!(
        to,
        [
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ]
    );
    assert!(loud["dave@example.com"].text.contains("Review it now"));
    Ok(())
}

async fn metric(app: &TestApp, name_and_labels: &str) -> Result<f64> {
    let text = reqwest::get(format!("{}/metrics", app.url))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test]
async fn a_mail_server_outage_delays_mail_and_never_a_request() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut smtp = SmtpServer::start(&dir.path().join("smtp"))?;
    let app = start_with(dir.path(), &email_toml(smtp.port())).await?;
    smtp.stop();

    // The whole lifecycle goes on while no mail can be sent.
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    // The approvers' mails are written (asking for a decision) before
    // bob decides; they wait for the mail server.
    eventually("the request's mails are queued", WAIT, || async {
        Ok(metric(
            &app,
            "elevate_notifications{channel=\"email\",state=\"queued\"}",
        )
        .await?
            >= 3.0)
    })
    .await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    eventually("failed sends are counted as retries", WAIT, || async {
        Ok(metric(
            &app,
            "elevate_notification_outcomes_total{channel=\"email\",outcome=\"retry\"}",
        )
        .await?
            >= 3.0)
    })
    .await?;
    assert_eq!(smtp.messages()?.len(), 0);
    // Admins and auditors see what is failing and why; others do not.
    let dave = signed_in(&app, "dave").await?;
    let (status, html) = page(&app, &dave, "/admin/notifications").await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Failing or given up"), "{html}");
    assert!(html.contains("bob@example.com"), "{html}");
    assert!(
        html.contains("cannot connect") || html.contains("onnect"),
        "{html}"
    );
    let (status, html) = page(&app, &dave, &format!("/requests/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<h2>Notifications</h2>") && html.contains("carol@example.com"),
        "{html}"
    );
    let eve = signed_in(&app, "eve").await?;
    let (status, _) = page(&app, &eve, "/admin/notifications").await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let alice = signed_in(&app, "alice").await?;
    let (_, html) = page(&app, &alice, &format!("/requests/{id}")).await?;
    assert!(
        !html.contains("carol@example.com"),
        "the requester does not see addresses"
    );
    eventually(
        "created ×3, approved ×2, active ×1 wait in the queue",
        WAIT,
        || async {
            Ok(metric(
                &app,
                "elevate_notifications{channel=\"email\",state=\"queued\"}",
            )
            .await?
                >= 6.0)
        },
    )
    .await?;

    // Back up: everything arrives, once.
    smtp.restart()?;
    let mails = smtp.wait_for_messages(6, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails_after = smtp.messages()?;
    // created ×3, approved ×2, active ×1: each once, none lost.
    assert_eq!(mails.len(), 6);
    assert_eq!(mails_after.len(), 6, "no duplicates after the outage");
    let asked = by_recipient(&mails_after, "asks for")?;
    assert_eq!(asked.len(), 3);
    // Written while the request waited, delivered after the decision:
    // the approvers' mails say so instead of offering links.
    for who in ["bob@example.com", "carol@example.com"] {
        let text = &asked[who].text;
        assert!(text.contains("Your decision is needed"), "{text}");
        assert!(text.contains("no longer waits for a decision"), "{text}");
        assert!(!text.contains("/links/"), "{text}");
    }
    assert_eq!(by_recipient(&mails_after, "was approved by bob")?.len(), 2);
    eventually("the queue drains", WAIT, || async {
        Ok(metric(
            &app,
            "elevate_notifications{channel=\"email\",state=\"queued\"}",
        )
        .await?
            == 0.0)
    })
    .await?;
    assert!(
        metric(
            &app,
            "elevate_notifications{channel=\"email\",state=\"sent\"}"
        )
        .await?
            >= 6.0
    );
    // More attempts than messages: the retries are visible.
    let attempts = metric(&app, "elevate_notification_attempts{channel=\"email\"}").await?;
    assert!(attempts > 6.0, "attempts {attempts}");
    Ok(())
}

#[tokio::test]
async fn an_approval_link_acts_only_after_sign_in_and_confirmation_and_only_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (smtp, app) = with_mail(dir.path()).await?;
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    let mails = smtp.wait_for_messages(3, WAIT).await?;
    let bob_mail = by_recipient(&mails, "asks for")?["bob@example.com"].clone();
    let approve = link_in(&bob_mail.text, "Approve:")?;
    let reject = link_in(&bob_mail.text, "Reject:")?;
    let path = approve.trim_start_matches(&app.url).to_owned();

    // A bare GET, as a mail scanner does: a sign-in redirect, nothing else.
    let scanner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = scanner.get(&approve).send().await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(location.contains("next=%2Flinks%2F"), "{location}");
    assert_eq!(app.show(&id).await?["state"], "pending");

    // Signed in as bob, the GET shows a confirmation page and changes
    // nothing either.
    let bob = signed_in(&app, "bob").await?;
    let (status, html) = page(&app, &bob, &path).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Approve this request?"), "{html}");
    assert_eq!(app.show(&id).await?["state"], "pending");

    // Someone else signed in cannot use bob's link.
    let carol = signed_in(&app, "carol").await?;
    let (status, html) = page(&app, &carol, &path).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("link_other_user"), "{html}");

    // A POST without the session's CSRF token is refused.
    let (status, _, _) = post_form(&app, &bob, &path, &[("confirm", "approve")]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.show(&id).await?["state"], "pending");

    // Confirmed: approved, by bob.
    let csrf = csrf_of(&html_of(&app, &bob, &path).await?)?;
    let (status, location, _) = post_form(
        &app,
        &bob,
        &path,
        &[
            ("csrf", &csrf),
            ("confirm", "approve"),
            ("comment", "確認しました"),
        ],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(format!("/requests/{id}?decided=1").as_str())
    );
    let shown = app.show(&id).await?;
    assert_ne!(shown["state"], "pending");
    assert_eq!(shown["approvals"][0]["by"], "bob");
    assert_eq!(shown["approvals"][0]["comment"], "確認しました");

    // Replayed: refused, whether approve or the mail's reject link.
    let (status, _, html) = post_form(
        &app,
        &bob,
        &path,
        &[("csrf", &csrf), ("confirm", "approve")],
    )
    .await?;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("link_used"), "{html}");
    let (status, html) = page(&app, &bob, reject.trim_start_matches(&app.url)).await?;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("link_used"));

    // Expired: a link signed with this elevate's own key, an hour old.
    let mut store = connect_store(&app.db_url).await?;
    let key: String =
        sqlx::query_scalar("SELECT value FROM settings WHERE name = 'approval_link_key'")
            .fetch_one(&mut store)
            .await?;
    let id2 = app
        .request("alice", body("demo", "orders", "orders_reader", "30m"))
        .await?;
    let claims = elevate::notify::link::Claims {
        r: id2.clone(),
        u: "bob".into(),
        d: elevate::notify::link::Decision::Approve,
        e: chrono::Utc::now().timestamp() - 3600,
        n: "expired-nonce".into(),
    };
    let token = elevate::notify::link::sign(&hex::decode(&key)?, &claims)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (status, html) = page(&app, &bob, &format!("/links/{token}")).await?;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("link_expired"), "{html}");
    let (status, _, _) = post_form(
        &app,
        &bob,
        &format!("/links/{token}"),
        &[("csrf", &csrf), ("confirm", "approve")],
    )
    .await?;
    assert_eq!(status, StatusCode::GONE);
    // Tampered: another request id under the old signature.
    let (_, tag) = token.split_once('.').context("token shape")?;
    let mut forged = claims.clone();
    forged.e = chrono::Utc::now().timestamp() + 3600;
    let forged_body = base64_url(&serde_json::to_vec(&forged)?);
    let (status, html) = page(&app, &bob, &format!("/links/{forged_body}.{tag}")).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("link_invalid"));
    assert_eq!(app.show(&id2).await?["state"], "pending");
    Ok(())
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn html_of(app: &TestApp, b: &elevate_testkit::oidc::Browser, path: &str) -> Result<String> {
    Ok(page(app, b, path).await?.1)
}

// ---- signed webhooks --------------------------------------------------------

const SECRET: &str = "siem-secret-0123456789abcdef";

/// What the receiver saw.
#[derive(Default)]
struct Received {
    /// (seq, verified, body) of every POST answered 200, in arrival order.
    accepted: Vec<(i64, bool, Vec<u8>)>,
    /// The `Elevate-Signature` header of each accepted POST, in order.
    signatures: Vec<String>,
    /// POSTs refused while "down".
    refused: usize,
    down: bool,
}

/// A consumer's check, written from the documented format (not with
/// elevate's code): `t=…,v1=hex(HMAC-SHA256(secret, t "." body))`, a
/// constant-time comparison, and a timestamp no more than 5 minutes off.
fn consumer_verifies(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(sig) = headers
        .get("elevate-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(ts) = t.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()) else {
        return false;
    };
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

async fn receiver(port: u16, state: Arc<Mutex<Received>>) -> Result<Peer> {
    let app = Router::new().route(
        "/events",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let Ok(mut s) = state.lock() else {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                };
                if s.down {
                    s.refused += 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let ok = consumer_verifies(&headers, &body);
                let seq = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["seq"].as_i64())
                    .unwrap_or(-1);
                s.accepted.push((seq, ok, body.to_vec()));
                let sig = headers
                    .get("elevate-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                s.signatures.push(sig);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    Peer::serve(listener, app).await
}

#[tokio::test]
async fn signed_webhooks_arrive_verified_in_audit_order_without_gaps_across_an_outage() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let port = elevate_testkit::free_port()?;
    let state = Arc::new(Mutex::new(Received::default()));
    let server = receiver(port, state.clone()).await?;
    let app = start_with(
        dir.path(),
        &format!(
            r#"
[notifications]
retry_max_backoff = "1s"

[[notifications.webhooks]]
name = "siem"
url = "http://127.0.0.1:{port}/events"
secret = "{SECRET}"
timeout = "5s"
"#
        ),
    )
    .await?;

    let mut ids = Vec::new();
    for role in ["orders_writer", "orders_reader"] {
        let id = app
            .request("alice", body("demo", "orders", role, "30m"))
            .await?;
        app.approve("bob", &id).await?;
        ids.push(id);
    }
    eventually("the first events arrive", WAIT, || async {
        Ok(state.lock().map(|s| s.accepted.len() >= 4).unwrap_or(false))
    })
    .await?;

    // Outage 1: the receiver is gone (connection refused).
    server.stop().await;
    for id in &ids {
        let (status, v) = app
            .post(
                "alice",
                &format!("/api/v1/requests/{id}/revoke"),
                json!({"comment": "done"}),
            )
            .await?;
        assert!(status.is_success(), "{v}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Outage 2: back, but answering 503 for a while.
    state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.down = true;
    let _server = receiver(port, state.clone()).await?;
    app.request("alice", body("demo", "billing", "orders_reader", "30m"))
        .await?;
    eventually("503s are retried", WAIT, || async {
        Ok(state.lock().map(|s| s.refused >= 2).unwrap_or(false))
    })
    .await?;
    state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.down = false;

    // Everything arrives: the audit chain's events after the webhook was
    // set up, each verified, in order, none missing.
    let mut store = connect_store(&app.db_url).await?;
    let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_head WHERE id = 1")
        .fetch_one(&mut store)
        .await?;
    eventually(
        "every event is delivered",
        Duration::from_secs(30),
        || async {
            Ok(state
                .lock()
                .map(|s| s.accepted.iter().any(|(seq, _, _)| *seq == head))
                .unwrap_or(false))
        },
    )
    .await?;
    let s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    assert!(
        s.accepted.iter().all(|(_, ok, _)| *ok),
        "every signature verifies"
    );
    // First arrivals, in order: 1, 2, …, head (a repeat of an event whose
    // answer was lost would be allowed, a gap or a reordering not).
    let mut seen = Vec::new();
    for (seq, _, _) in &s.accepted {
        if !seen.contains(seq) {
            seen.push(*seq);
        }
    }
    let expected: Vec<i64> = (1..=head).collect();
    assert_eq!(seen, expected);
    // prev_hash links every event to the one before.
    let mut prev: Option<String> = None;
    for (_, _, raw) in &s.accepted {
        let v: Value = serde_json::from_slice(raw)?;
        if let Some(p) = &prev {
            if v["prev_hash"].as_str() != Some(p) && v["hash"].as_str() != Some(p) {
                bail!("event {} does not follow the one before", v["seq"]);
            }
        }
        prev = v["hash"].as_str().map(str::to_owned);
    }
    // The signature elevate sent with an event no longer verifies once a
    // byte of its body is changed.
    let last = s.accepted.len() - 1;
    let (_, _, raw) = &s.accepted[last];
    let mut headers = HeaderMap::new();
    headers.insert("elevate-signature", s.signatures[last].parse()?);
    assert!(consumer_verifies(&headers, raw));
    let mut tampered = raw.clone();
    let at = tampered
        .windows(6)
        .position(|w| w == b"\"seq\":")
        .context("no seq in body")?;
    tampered[at + 6] = if tampered[at + 6] == b'9' { b'8' } else { b'9' };
    assert!(!consumer_verifies(&headers, &tampered));
    Ok(())
}

// ---- chat ---------------------------------------------------------------------

#[tokio::test]
async fn chat_channels_get_slack_and_teams_messages() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let g = got.clone();
    let app_router = Router::new().route(
        "/{which}",
        post(
            move |axum::extract::Path(which): axum::extract::Path<String>, body: Bytes| {
                let g = g.clone();
                async move {
                    // What Slack and Teams accept: JSON, and for Slack a
                    // `text` or `blocks`; for Teams a message with an
                    // Adaptive Card attachment.
                    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    if let Ok(mut g) = g.lock() {
                        g.push((which, v));
                    }
                    StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app_router).await;
    });
    let app = start_with(
        dir.path(),
        &format!(
            r#"
[[notifications.chat]]
name = "sre-slack"
format = "slack"
url = "http://{addr}/slack"

[[notifications.chat]]
name = "ops-teams"
format = "teams"
url = "http://{addr}/teams"
targets = ["demo"]
"#
        ),
    )
    .await?;
    let mut req = body("demo", "orders", "orders_writer", "30m");
    req["reason"] = json!(REASON);
    app.request("alice", req).await?;
    eventually("both channels are posted to", WAIT, || async {
        Ok(got.lock().map(|g| g.len() >= 2).unwrap_or(false))
    })
    .await?;
    let g = got.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let slack = &g
        .iter()
        .find(|(w, _)| w == "slack")
        .context("no slack post")?
        .1;
    assert!(slack["text"]
        .as_str()
        .unwrap_or_default()
        .contains("alice asks for orders_writer"));
    assert_eq!(slack["blocks"][0]["type"], "section");
    assert!(slack.to_string().contains(REASON));
    let teams = &g
        .iter()
        .find(|(w, _)| w == "teams")
        .context("no teams post")?
        .1;
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    // The reason as typed, its Markdown characters escaped so that the
    // card shows them rather than reading them as a link.
    let reason = card["content"]["body"][1]["facts"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["title"] == "Reason"))
        .context("no Reason fact")?;
    assert_eq!(
        reason["value"],
        REASON.replace('(', "\\(").replace(')', "\\)")
    );
    Ok(())
}

// ---- config -------------------------------------------------------------------

#[test]
fn bad_notification_settings_are_refused_with_a_clear_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dry_run_config(&dir.path().join("e.db"), &Setup::default())?;
    let cases = [
        (
            "[[notifications.webhooks]]\nname = \"s\"\nurl = \"http://127.0.0.1:1/x\"\nsecret = \"short\"\n",
            "at least 16 bytes",
        ),
        (
            "[[notifications.webhooks]]\nname = \"s\"\nurl = \"http://127.0.0.1:1/x\"\n",
            "every webhook is signed",
        ),
        (
            "[[notifications.webhooks]]\nname = \"s\"\nurl = \"ftp://x/\"\nsecret = \"0123456789abcdef0\"\n",
            "http:// or https://",
        ),
        (
            "[[notifications.chat]]\nname = \"c\"\nformat = \"irc\"\nurl = \"http://x/\"\n",
            "not a chat format",
        ),
        (
            "[[notifications.chat]]\nname = \"c\"\nformat = \"slack\"\nurl = \"http://x/\"\ntargets = [\"nope\"]\n",
            "unknown target",
        ),
        (
            "[notifications.routes]\n\"request.exploded\" = { chat = true }\n",
            "unknown event",
        ),
        (
            "[notifications.routes]\n\"request.created\" = { email = [\"everyone\"] }\n",
            "unknown audience",
        ),
        (
            "[notifications.routes]\n\"target.unmanaged_access\" = { email = [\"admins\", \"requester\"] }\n",
            "only admins can be told of it",
        ),
        (
            "[notifications.email]\nhost = \"smtp\"\nfrom = \"not an address\"\n",
            "is not an address",
        ),
        ("[notifications]\nlink_ttl = \"30d\"\n", "between 1m and 7d"),
        ("[notifications]\nending_soon = \"soon\"\n", "ending_soon"),
    ];
    for (extra, expected) in cases {
        let problems = elevate::config::Config::parse(&format!("{base}\n{extra}"), None)
            .err()
            .with_context(|| format!("accepted: {extra}"))?;
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains(expected)),
            "{extra}: expected {expected:?} in {text:?}"
        );
    }
    // The "ending soon" notice: 10 minutes unless set, "off" for none.
    let parsed = |extra: &str| {
        elevate::config::Config::parse(&format!("{base}\n{extra}"), None)
            .map_err(|p| anyhow::anyhow!("{p:?}"))
    };
    assert_eq!(
        parsed("")?.notifications.ending_soon.map(|s| s.secs()),
        Some(600)
    );
    for off in ["off", "0s"] {
        let c = parsed(&format!("[notifications]\nending_soon = \"{off}\"\n"))?;
        assert_eq!(c.notifications.ending_soon, None, "{off}");
    }
    assert_eq!(
        parsed("[notifications]\nending_soon = \"30m\"\n")?
            .notifications
            .ending_soon
            .map(|s| s.secs()),
        Some(1800)
    );
    Ok(())
}

#[tokio::test]
async fn a_link_whose_decision_fails_is_not_spent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (smtp, app) = with_mail(dir.path()).await?;
    // billing needs two approvals; bob gives his through the API first.
    let id = app
        .request("alice", body("demo", "billing", "orders_reader", "30m"))
        .await?;
    let mails = smtp.wait_for_messages(3, WAIT).await?;
    let approve = link_in(
        &by_recipient(&mails, "asks for")?["bob@example.com"].text,
        "Approve:",
    )?;
    let path = approve.trim_start_matches(&app.url).to_owned();
    app.approve("bob", &id).await?;
    let bob = signed_in(&app, "bob").await?;
    let (status, html) = page(&app, &bob, &path).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    let csrf = csrf_of(&html)?;
    let (status, _, html) = post_form(
        &app,
        &bob,
        &path,
        &[("csrf", &csrf), ("confirm", "approve")],
    )
    .await?;
    // Refused (bob cannot approve twice), and the link was not spent by
    // the refused decision: the spend is rolled back with it.
    assert!(
        status.is_client_error() && status != StatusCode::GONE,
        "{status} {html}"
    );
    let mut store = connect_store(&app.db_url).await?;
    let spent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spent_links")
        .fetch_one(&mut store)
        .await?;
    assert_eq!(spent, 0);
    assert_eq!(
        app.show(&id).await?["approvals"].as_array().map(Vec::len),
        Some(1)
    );
    Ok(())
}

// ---- reminders and escalation, by mail ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_go_to_the_approvers_and_escalations_to_the_fallback_with_working_links(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let smtp = SmtpServer::start(&dir.path().join("smtp"))?;
    let config = crate::automation::with_prod_dba(
        &dir.path().join("e.db"),
        "remind_after = \"30m\"\nescalate_after = \"2h\"\nescalate_to = [\"user:eve\"]",
        "",
    )?;
    let app = TestApp::start(&format!("{config}\n{}", email_toml(smtp.port()))).await?;
    let broker = app.broker().context("in-process broker")?;
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    smtp.wait_for_messages(3, WAIT).await?;
    let created = chrono::DateTime::parse_from_rfc3339(
        app.show(&id).await?["created_at"]
            .as_str()
            .context("created_at")?,
    )?
    .with_timezone(&chrono::Utc);

    // The clock is the test's: half an hour later, the approvers are
    // reminded, with fresh links; nobody else hears of it.
    let at = created + chrono::Duration::minutes(30);
    broker
        .run_followups_once(at)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.log_text()))?;
    let mails = smtp.wait_for_messages(5, WAIT).await?;
    let reminded = by_recipient(&mails, "Reminder:")?;
    assert_eq!(
        reminded.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bob@example.com", "carol@example.com"]
    );
    assert!(reminded["bob@example.com"].text.contains("Approve:"));

    // Two hours: escalated to eve, who is asked to decide, and whose link
    // works now that she is a fallback approver.
    broker
        .run_followups_once(created + chrono::Duration::hours(2))
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.log_text()))?;
    let mails = smtp.wait_for_messages(6, WAIT).await?;
    let escalated = by_recipient(&mails, "Escalated:")?;
    assert_eq!(
        escalated.keys().map(String::as_str).collect::<Vec<_>>(),
        ["eve@example.com"]
    );
    let approve = link_in(&escalated["eve@example.com"].text, "Approve:")?;
    let path = approve.trim_start_matches(&app.url).to_owned();
    let eve = signed_in(&app, "eve").await?;
    let (status, html) = page(&app, &eve, &path).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    let csrf = csrf_of(&html)?;
    let (status, _, html) = post_form(
        &app,
        &eve,
        &path,
        &[("csrf", &csrf), ("confirm", "approve")],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(app.show(&id).await?["approvals"][0]["by"], "eve");
    Ok(())
}

// ---- replicas ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_store_send_each_message_once() -> Result<()> {
    // Replicas share only a PostgreSQL store; this test runs in the
    // suite's PostgreSQL pass (ELEVATE_TEST_DATABASE) and is a no-op on
    // SQLite, whose file belongs to one process.
    if !elevate_testkit::on_postgres() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let smtp = SmtpServer::start(&dir.path().join("smtp"))?;
    let first = start_with(dir.path(), &email_toml(smtp.port())).await?;
    let config = format!(
        "{}\n{}",
        crate::common::dry_run_config_on(&first.db_url, &Setup::default()),
        email_toml(smtp.port())
    );
    let second = TestApp::start(&config).await?;
    let mut ids = Vec::new();
    for (i, role) in ["orders_writer", "orders_reader"].iter().enumerate() {
        let app = if i == 0 { &first } else { &second };
        let id = app
            .request("alice", body("demo", "orders", role, "30m"))
            .await?;
        ids.push(id);
    }
    // 2 requests × (bob, carol, alice) = 6 messages, each exactly once.
    let mails = exactly(&smtp, 6, Duration::from_secs(3)).await?;
    for id in &ids {
        let per: Vec<&ReceivedMail> = mails
            .iter()
            .filter(|m| m.text.contains(id.as_str()))
            .collect();
        assert_eq!(per.len(), 3, "{id}");
    }
    Ok(())
}

// ---- `elevate notify-test` -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_through_every_channel_and_says_which_failed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut smtp = SmtpServer::start(&dir.path().join("smtp"))?;
    let port = elevate_testkit::free_port()?;
    let state = Arc::new(Mutex::new(Received::default()));
    let _server = receiver(port, state.clone()).await?;
    let config = format!(
        "{}\n{}\n[[notifications.webhooks]]\nname = \"siem\"\nurl = \"http://127.0.0.1:{port}/events\"\nsecret = \"{SECRET}\"\n",
        dry_run_config(&dir.path().join("e.db"), &Setup::default())?,
        email_toml(smtp.port())
    );
    let file = dir.path().join("elevate.toml");
    std::fs::write(&file, config)?;
    let file = file.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::common::binary())
            .args(args)
            .output()
    };

    let out = run(&["notify-test", &file, "--to", "ops@example.com"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("e-mail to ops@example.com: sent"),
        "{stdout}"
    );
    assert!(stdout.contains("webhook siem: sent"), "{stdout}");
    let mails = smtp.wait_for_messages(1, WAIT).await?;
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert!(mails[0].subject.contains("test message"));
    {
        let s = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        assert_eq!(s.accepted.len(), 1);
        let (seq, verified, body) = &s.accepted[0];
        assert_eq!(*seq, 0, "a test event is outside the chain");
        assert!(*verified, "signed like every event");
        assert!(String::from_utf8_lossy(body).contains("elevate.test"));
    }

    // The mail server down: a non-zero exit and one line saying which.
    smtp.stop();
    let out = run(&["notify-test", &file, "--to", "ops@example.com"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: e-mail to ops@example.com:"),
        "{stderr}"
    );

    // No channel at all is an error too.
    let bare = dir.path().join("bare.toml");
    std::fs::write(
        &bare,
        dry_run_config(&dir.path().join("e2.db"), &Setup::default())?,
    )?;
    let out = run(&["notify-test", &bare.to_string_lossy()])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configures no notification channel"));
    Ok(())
}
